"""Ground-truth states drawn over frames (cascade.data.overlays): where the markers land."""

import numpy as np
import pytest

from cascade.data.overlays import MARKER_COLORS, draw_states


def test_markers_show_position_visibility_and_velocity():
    video = np.full((2, 8, 8, 1), -1.0, np.float32)  # black frames
    position = np.array([[[2.0, 2.0], [5.0, 5.0]]] * 2, np.float32)  # [T=2, K=2, 2]
    velocity = np.zeros_like(position)
    velocity[:, 0] = (0.0, 2.0)  # object 0 moves 2 px/frame to the right
    visible = np.array([[True, False], [True, True]])
    out = draw_states(video, position, velocity, visible, present=[True, True], scale=4)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    red, blue = MARKER_COLORS[0], MARKER_COLORS[1]
    centre = lambda p: tuple(int((c + 0.5) * 4) for c in p)  # noqa: E731
    assert (out[0][centre((2, 2))] == red).all()  # visible: a filled dot
    assert (out[0][centre((2, 4))] == red).all()  # the velocity line reaches x + vx
    assert (out[0][centre((5, 5))] == 0).all()  # hidden: a hollow box, centre untouched
    assert (out[0][centre((5, 5))[0] - 2, centre((5, 5))[1]] == blue).all()
    assert (out[1][centre((5, 5))] == blue).all()  # visible again in frame 1
    absent = draw_states(video, position, present=[True, False], scale=4)
    assert not (absent == blue).all(axis=-1).any()
    with pytest.raises(ValueError, match="position has shape"):
        draw_states(video, position[:1])
