"""UNetConfig refuses what it cannot build, naming the field (no model is built here)."""

import pytest
from test_unet3d import TINY  # tests/ is on sys.path

from cascade.models.unet3d import UNetConfig


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(channel_mults=()), "channel_mults"),
        (dict(temporal_mixing="lstm"), "'attention', 'conv3d', 'temporal_conv', 'none'"),
        (dict(attn_resolutions=(3,)), "attn_resolutions"),
        (dict(temporal_attn_resolutions=(16,)), "temporal_attn_resolutions"),
        (dict(image_size=7), "image_size"),
        (dict(norm_groups=3), "norm_groups"),
        (dict(num_heads=3), "num_heads"),
        (dict(dtype="float64"), "dtype"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        UNetConfig(**{**TINY, **overrides})


def test_unknown_key_and_list_values():
    with pytest.raises(TypeError):
        UNetConfig(**{**TINY, "channels": 4})
    cfg = UNetConfig(**{**TINY, "channel_mults": [1, 2], "attn_resolutions": [4]})
    assert cfg.channel_mults == (1, 2) and hash(cfg)
