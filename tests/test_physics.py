"""Physics metrics: ground-truth bouncing_shapes clips score near-perfect; clips with an
injected defect score clearly worse on the sub-metric made for that defect.

Defects are injected by re-rendering the clip with the builder's own renderer from
modified ground-truth states, so only the defect changes.
"""

import numpy as np
import pytest

from cascade.data.builders import bouncing_shapes as bs
from cascade.data.builders import moving_digits as md
from cascade.evaluation import aggregate, digits, physics, physics_scoring

RES, FRAMES, CLIPS = 64, 32, 12


def _pick(states, rng):
    """(object, frame) with the object clean and far from the occluder at that frame."""
    occ = bs.occluder_box(RES)
    centre = (occ[1] + occ[3]) / 2
    for t0 in rng.permutation(np.arange(4, FRAMES - 6)):
        for k in np.flatnonzero(states["present"]):
            x = states["position"][t0 - 2 : t0 + 2, k, 1]
            if (np.abs(x - centre) > 12).all() and states["visible"][t0 - 2 : t0 + 2, k].all():
                return int(k), int(t0)
    raise AssertionError("no usable object")


def _render(states, *, position=None, shape=None, color=None):
    s = states
    return bs.render(
        s["position"] if position is None else position,
        s["shape"] if shape is None else shape,
        s["color"] if color is None else color,
        RES,
    )[0]


def _corrupt(clip, kind, rng):
    st = clip["states"]
    video = clip["video"].copy()
    k, t0 = _pick(st, rng)
    if kind == "teleport":  # jump 14 px vertically (towards the middle of the arena)
        pos = st["position"].copy()
        pos[t0:, k, 0] += 14.0 if pos[t0, k, 0] < RES / 2 else -14.0
        video = _render(st, position=pos)
    elif kind == "shuffle":
        video = video[rng.permutation(FRAMES)]
    elif kind == "vanish":
        shape = st["shape"].copy()
        shape[k] = -1
        video[t0:] = _render(st, shape=shape)[t0:]
    elif kind == "recolor":
        color = st["color"].copy()
        color[k] = next(c for c in range(len(bs.PALETTE)) if c not in st["color"])
        video[t0:] = _render(st, color=color)[t0:]
    elif kind == "reshape":
        shape = st["shape"].copy()
        shape[k] = (shape[k] + 1) % len(bs.SHAPES)
        video[t0:] = _render(st, shape=shape)[t0:]
    elif kind == "duplicate":  # a second copy of the object appears beside it
        pos = np.concatenate([st["position"], st["position"][:, k : k + 1] + [0.0, 12.0]], 1)
        pos[..., 1] = np.clip(pos[..., 1], *bs.arena(RES))
        copy = _render(
            st,
            position=pos,
            shape=np.append(st["shape"], st["shape"][k]),
            color=np.append(st["color"], st["color"][k]),
        )
        video[t0:] = copy[t0:]
    return video


@pytest.fixture(scope="module")
def clips():
    return bs.render_chunk([np.random.default_rng(100 + i) for i in range(CLIPS)], FRAMES, RES)


@pytest.fixture(scope="module")
def truth(clips):
    return physics.physics_metrics(np.stack([c["video"] for c in clips]))


def test_ground_truth_scores_near_perfect(clips, truth):
    assert np.nanmax(truth["ballistic_rmse"]) < 0.35  # px: rasterisation of the centroid
    g = bs.scaled_constants(RES)["gravity"]
    assert np.nanmean(truth["gravity_estimate"]) == pytest.approx(g, rel=0.1)
    for key in ("teleports", "permanence_violations", "color_changes", "count_changes"):
        assert truth[key].sum() == 0, key
    assert np.nanmin(truth["shape_constancy"]) == 1.0
    assert (truth["count_stability"] == 1.0).all()
    want = np.array([c["states"]["present"].sum() for c in clips])
    np.testing.assert_array_equal(truth["num_objects"], want)
    assert not truth["empty_scene"].any()


def test_an_empty_scene_violates_nothing_rather_than_scoring_perfectly():
    none = np.full(bs.MAX_OBJECTS, -1)  # no shape: background and occluder only
    video = bs.render(np.zeros((FRAMES, bs.MAX_OBJECTS, 2)), none, none, RES)[0]
    empty = physics.physics_metrics(video[None])
    assert empty["num_objects"][0] == 0 and empty["empty_scene"][0] == 1.0
    for key in physics_scoring.NEEDS_AN_OBJECT:
        assert np.isnan(empty[key][0]), key


def test_tracks_match_ground_truth_positions(clips):
    errors = []
    for clip in clips:
        obs = physics.observe(physics.segment(clip["video"].astype(np.float32)))
        st = clip["states"]
        for k in np.flatnonzero(st["present"]):
            clean = obs["clean"][:, st["color"][k]]
            got = obs["centroid"][clean, st["color"][k]]
            errors.append(np.linalg.norm(got - st["position"][clean, k], axis=-1))
            assert (obs["shape"][clean, st["color"][k]] == st["shape"][k]).all()
    assert np.concatenate(errors).mean() < 0.3


def test_float_and_noisy_inputs_score_like_uint8(clips, truth):
    videos = np.stack([c["video"] for c in clips])
    as_float = videos.astype(np.float32) / 127.5 - 1.0
    same = physics.physics_metrics(as_float)
    for key, value in truth.items():
        np.testing.assert_allclose(same[key], value, err_msg=key)
    # Generated frames are never exact: nearest-palette segmentation absorbs colour noise.
    noisy = as_float + np.random.default_rng(0).normal(0, 0.08, as_float.shape)
    got = physics.physics_metrics(noisy.astype(np.float32))
    assert np.nanmax(got["ballistic_rmse"]) < 0.35
    assert got["teleports"].sum() == 0 and got["permanence_violations"].sum() == 0


# Each defect against the sub-metric made for it: (kind, metric, worse-when).
DEFECTS = [
    ("teleport", "teleports", "higher"),
    ("shuffle", "ballistic_rmse", "higher"),
    ("shuffle", "teleports", "higher"),
    ("vanish", "permanence_violations", "higher"),
    ("recolor", "color_changes", "higher"),
    ("reshape", "shape_constancy", "lower"),
    ("duplicate", "count_stability", "lower"),
]


@pytest.fixture(scope="module")
def corrupted(clips):
    out = {}
    for kind in sorted({d[0] for d in DEFECTS}):
        rng = np.random.default_rng(7)
        videos = np.stack([_corrupt(c, kind, rng) for c in clips])
        out[kind] = physics.physics_metrics(videos)
    return out


@pytest.mark.parametrize(("kind", "metric", "worse"), DEFECTS)
def test_injected_defects_score_worse(truth, corrupted, kind, metric, worse):
    clean, bad = truth[metric], corrupted[kind][metric]
    if worse == "higher":
        # Every corrupted clip is flagged, and the mean is clearly worse.
        assert (bad > clean).mean() >= 0.9, (bad, clean)
        assert np.nanmean(bad) > np.nanmean(clean) + 0.5
    else:
        assert (bad < clean).mean() >= 0.9, (bad, clean)
        assert np.nanmean(bad) < np.nanmean(clean) - 0.03
    summary = aggregate.summarize(corrupted[kind])
    assert set(summary) == set(truth) and all(isinstance(v, float) for v in summary.values())


def _occlusions(min_clips=6):
    """Clips whose object k hides fully behind the occluder at t_in (<= 10) and comes
    back before the end: (clip, k, t_in)."""
    found = []
    for seed in range(1000, 1400):
        clip = bs.render_chunk([np.random.default_rng(seed)], FRAMES, RES)[0]
        vis = clip["states"]["visible"]
        for k in np.flatnonzero(clip["states"]["present"]):
            hide = np.flatnonzero(vis[:-1, k] & ~vis[1:, k]) + 1
            back = np.flatnonzero(~vis[:-1, k] & vis[1:, k]) + 1
            if hide.size == 1 and 3 <= hide[0] <= 10 and back.size == 1 and back[0] < FRAMES - 3:
                found.append((clip, int(k), int(hide[0])))
                break
        if len(found) == min_clips:
            return found
    raise AssertionError("not enough occlusion clips")


def test_permanence_behind_the_occluder():
    """An object that never comes back, or comes back in another colour, is flagged;
    the same clips untouched are not."""
    cases = _occlusions()
    clean, gone, swapped = [], [], []
    for clip, k, t_in in cases:
        st = clip["states"]
        clean.append(clip["video"])
        shape = st["shape"].copy()
        shape[k] = -1
        video = clip["video"].copy()
        video[t_in:] = _render(st, shape=shape)[t_in:]
        gone.append(video)
        color = st["color"].copy()
        color[k] = next(c for c in range(len(bs.PALETTE)) if c not in st["color"])
        video = clip["video"].copy()
        video[t_in:] = _render(st, color=color)[t_in:]
        swapped.append(video)
    clean, gone, swapped = (physics.physics_metrics(np.stack(v)) for v in (clean, gone, swapped))
    assert clean["permanence_violations"].sum() == 0 and clean["color_changes"].sum() == 0
    assert (gone["permanence_violations"] >= 1).all(), gone["permanence_violations"]
    assert (swapped["permanence_violations"] >= 1).all(), swapped["permanence_violations"]
    assert (swapped["color_changes"] >= 1).all(), swapped["color_changes"]


# ---------------------------------------------------------------------- moving_digits


def _digit_clip(rng, frames=24, res=64, swap_at=None):
    """One test-pool digit at constant velocity with wall reflections (the builder's
    motion model); from `swap_at` on, a digit of another class is drawn instead."""
    size = md.glyph_size(res)
    images, labels, _ = md.glyphs(size)
    pool = md.split_pool("test", len(images))
    first = rng.choice(pool)
    other = rng.choice(pool[labels[pool] != labels[first]])
    limit = float(res - size)
    start = rng.uniform(0, limit, 2)
    angle = rng.uniform(0, 2 * np.pi)
    velocity = 3.0 * np.array([np.sin(angle), np.cos(angle)])
    corners = np.rint(md.reflect(start + velocity * np.arange(frames)[:, None], limit))
    video = np.zeros((frames, res, res, 1), np.uint8)
    for t, (y, x) in enumerate(corners.astype(int)):
        glyph = images[other if swap_at is not None and t >= swap_at else first]
        video[t, y : y + size, x : x + size, 0] = glyph
    return video, labels[first]


def test_digit_reader_accuracy_on_unseen_glyphs():
    acc = digits.reader_accuracy(64, num_clips=40, frames=4)
    assert acc["accuracy"] > 0.93, acc
    assert acc["position_error_px"] < 0.5 and acc["digits_read"] > 50


def test_digit_metrics_ground_truth_and_defects():
    rng = np.random.default_rng(0)
    clean = [_digit_clip(rng) for _ in range(8)]
    videos = np.stack([v for v, _ in clean])
    labels = np.array([y for _, y in clean])
    truth = digits.digit_metrics(videos, labels)
    assert np.nanmean(truth["identity_stability"]) > 0.95
    assert np.nanmax(truth["cv_residual"]) < 0.6  # px: glyph corners are rounded to pixels
    assert truth["label_match"].mean() >= 0.85
    assert (truth["num_digits"] == 1).all()
    # Same metrics for float input in [-1, 1].
    as_float = digits.digit_metrics(videos.astype(np.float32) / 127.5 - 1.0, labels)
    np.testing.assert_allclose(as_float["cv_residual"], truth["cv_residual"], atol=1e-5)
    # A digit that changes class half-way loses identity stability.
    rng = np.random.default_rng(0)
    swapped = np.stack([_digit_clip(rng, swap_at=12)[0] for _ in range(8)])
    bad = digits.digit_metrics(swapped)
    assert np.nanmean(bad["identity_stability"]) < np.nanmean(truth["identity_stability"]) - 0.2
    # Shuffled frames break constant-velocity motion.
    shuffled = videos[:, np.random.default_rng(1).permutation(videos.shape[1])]
    jumpy = digits.digit_metrics(shuffled)
    assert np.nanmean(jumpy["cv_residual"]) > 3 * np.nanmean(truth["cv_residual"])
    assert jumpy["num_tracks"].mean() > 2 * truth["num_tracks"].mean()  # broken tracks
