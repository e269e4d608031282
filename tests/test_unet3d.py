"""3D U-Net and its layers: exactness of the fast convs, shapes, conditioning, frame coupling."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax import lax
from jax.flatten_util import ravel_pytree

from cascade.models import attention, layers
from cascade.models.unet3d import TEMPORAL_MIXING, UNet3D, UNetConfig

B, T, S, C = 2, 4, 8, 3
TINY = dict(
    in_channels=C,
    out_channels=C,
    image_size=S,
    base_channels=8,
    channel_mults=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(4,),
    norm_groups=4,
    num_heads=2,
    num_classes=3,
    use_aug_cond=True,
)


def perturb(tree, key, scale=0.05):
    """Add noise to every parameter, so zero-initialised layers stop being identities.

    One draw for the whole tree (XLA:CPU compiles every random call separately).
    """
    flat, unravel = ravel_pytree(tree)
    return unravel(flat + scale * jax.random.normal(key, flat.shape, flat.dtype))


def init(cfg, noise=True):
    """(graphdef, params) of UNet3D(cfg), params perturbed (see `perturb`) unless noise=False.

    Built inside one jit: eager init would compile every random op per parameter shape.
    """
    graphdef = nnx.split(nnx.eval_shape(lambda: UNet3D(cfg, rngs=nnx.Rngs(0))), nnx.Param)[0]

    def make():
        params = nnx.split(UNet3D(cfg, rngs=nnx.Rngs(0)), nnx.Param)[1]
        return perturb(params, jax.random.key(1)) if noise else params

    return graphdef, jax.jit(make)()


class Net:
    """A tiny perturbed model with one compiled forward (float32 and bfloat16 compute)."""

    def __init__(self, **overrides):
        self.cfg = UNetConfig(**{**TINY, **overrides})
        graphdef, self.params = init(self.cfg)
        bf16 = nnx.eval_shape(
            lambda: UNet3D(dataclasses.replace(self.cfg, dtype="bfloat16"), rngs=nnx.Rngs(0))
        )
        self.graphdefs = {"float32": graphdef, "bfloat16": nnx.split(bf16, nnx.Param)[0]}

        def apply(dtype, params, x, logsnr, label, aug, mask):
            net = nnx.merge(self.graphdefs[dtype], params)
            return net(x, logsnr, label=label, aug_logsnr=aug, image_mask=mask)

        self._apply = jax.jit(apply, static_argnums=0)

    def __call__(self, x, *, logsnr=None, label=None, aug=None, mask=None, dtype="float32"):
        logsnr = jnp.array([-2.0, 3.0]) if logsnr is None else logsnr
        label = jnp.array([0, 2]) if label is None else label
        aug = jnp.array([5.0, 5.0]) if aug is None else aug
        mask = jnp.zeros((B, T), bool) if mask is None else mask
        return np.asarray(self._apply(dtype, self.params, x, logsnr, label, aug, mask))


@pytest.fixture(scope="module", params=TEMPORAL_MIXING)
def net(request):
    return Net(temporal_mixing=request.param)


@pytest.fixture(scope="module")
def video():
    return jax.random.uniform(jax.random.key(2), (B, T, S, S, C), minval=-1.0, maxval=1.0)


def _frame_changed(video, b, t, key=3):
    return video.at[b, t].set(jax.random.uniform(jax.random.key(key), video.shape[2:]))


# ---------------------------------------------------------------- layers: fast == reference


def _conv5d(x, kernel, stride=1):
    """lax's 5D conv, 'same' padding per kernel dim (kernel [kt, kh, kw, I, O])."""
    dn = ("NDHWC", "DHWIO", "NDHWC")
    padding = [(k // 2, k // 2) for k in kernel.shape[:3]]
    return lax.conv_general_dilated(x, kernel, (1, stride, stride), padding, dimension_numbers=dn)


def test_convs_match_lax_5d_reference():
    rngs = nnx.Rngs(0)
    x = jax.random.normal(jax.random.key(0), (2, 5, 6, 6, 4))
    space = layers.SpaceConv(4, 7, rngs=rngs)
    ref = _conv5d(x, space.kernel[...][None]) + space.bias[...]
    np.testing.assert_allclose(space(x), ref, atol=1e-5, rtol=1e-5)

    down = layers.SpaceConv(4, 7, stride=2, rngs=rngs)
    ref = _conv5d(x, down.kernel[...][None], stride=2)
    assert down(x).shape == (2, 5, 3, 3, 7)
    np.testing.assert_allclose(down(x), ref + down.bias[...], atol=1e-5, rtol=1e-5)

    full = layers.Conv3D(4, 7, rngs=rngs)
    ref = _conv5d(x, full.kernel[...]) + full.bias[...]
    np.testing.assert_allclose(full(x), ref, atol=1e-5, rtol=1e-5)

    tconv = layers.TemporalConv(4, 7, rngs=rngs)
    ref = _conv5d(x, tconv.kernel[...][:, None, None])
    np.testing.assert_allclose(tconv(x), ref + tconv.bias[...], atol=1e-5, rtol=1e-5)


def test_temporal_links_cut_exactly_the_image_frames():
    x = jax.random.normal(jax.random.key(0), (1, 5, 2, 2, 3))
    mask = jnp.array([[False, False, True, False, False]])
    full = layers.Conv3D(3, 3, rngs=nnx.Rngs(0))
    tconv = layers.TemporalConv(3, 3, rngs=nnx.Rngs(1))
    links = layers.temporal_links(mask)
    y, yt = full(x, links), tconv(x, links)
    # Reference: conv each video segment [0, 1] and [3, 4] and the image frame 2 alone.
    for lo, hi in ((0, 2), (2, 3), (3, 5)):
        ref = _conv5d(x[:, lo:hi], full.kernel[...]) + full.bias[...]
        np.testing.assert_allclose(y[:, lo:hi], ref, atol=1e-5, rtol=1e-5)
        ref = _conv5d(x[:, lo:hi], tconv.kernel[...][:, None, None]) + tconv.bias[...]
        np.testing.assert_allclose(yt[:, lo:hi], ref, atol=1e-5, rtol=1e-5)


def test_group_norm_matches_reference_and_folds_film():
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (2, 3, 4, 4, 8))
    norm = layers.GroupNorm(8, 4)
    norm.scale[...] = jnp.linspace(0.5, 1.5, 8)
    norm.bias[...] = jnp.linspace(-1.0, 1.0, 8)
    xg = np.asarray(x, np.float64).reshape(2, 3, 4, 4, 4, 2)
    mean = xg.mean(axis=(2, 3, 5), keepdims=True)  # per frame and group
    var = xg.var(axis=(2, 3, 5), keepdims=True)
    ref = ((xg - mean) / np.sqrt(var + 1e-6)).reshape(x.shape) * norm.scale[...] + norm.bias[...]
    np.testing.assert_allclose(norm(x), ref, atol=1e-4)
    scale, shift = jnp.full((2, 8), 0.5), jnp.full((2, 8), -0.25)
    np.testing.assert_allclose(norm(x, scale, shift), ref * 1.5 - 0.25, atol=1e-4)


def test_relative_bias_depends_only_on_offset_and_buckets_are_signed():
    bias = attention.RelativePositionBias(3, rngs=nnx.Rngs(0))
    b = np.asarray(bias(6))[0]  # [heads, T, T]
    for d in range(-5, 6):
        diag = np.diagonal(b, offset=d, axis1=1, axis2=2)
        np.testing.assert_array_equal(diag, np.repeat(diag[:, :1], diag.shape[1], axis=1))
    buckets = attention.relative_position_bucket(jnp.arange(-4, 5))
    assert len(set(np.asarray(buckets).tolist())) == 9  # exact and signed near 0


def test_temporal_attention_mask_semantics():
    mask = np.asarray(attention.temporal_attention_mask(jnp.array([[False, False, True]])))[0, 0]
    expected = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], bool)
    np.testing.assert_array_equal(mask, expected)


# ---------------------------------------------------------------- the network


def test_shapes_dtypes_and_bfloat16_agrees(net, video):
    y32 = net(video)
    y16 = net(video, dtype="bfloat16")
    assert y32.shape == y16.shape == (B, T, S, S, C)
    assert y32.dtype == y16.dtype == np.float32
    assert np.all(np.isfinite(y32)) and np.all(np.isfinite(y16))
    assert np.std(y32) > 1e-3  # perturbed output layer: a real, non-constant prediction
    rel = np.linalg.norm(y16 - y32) / np.linalg.norm(y32)
    assert rel < 0.05, rel


def test_conditioning_changes_output(net, video):
    base = net(video)
    for kwargs in (
        dict(logsnr=jnp.array([-2.0, 4.0])),
        dict(label=jnp.array([0, 3])),  # 3 = the null label
        dict(aug=jnp.array([5.0, -1.0])),
    ):
        other = net(video, **kwargs)
        np.testing.assert_allclose(other[0], base[0], atol=1e-6)  # example 0 unchanged
        assert np.max(np.abs(other[1] - base[1])) > 1e-4, kwargs


def test_frame_independence_and_image_mask(net, video):
    """Changing one frame moves only the frames it is temporally linked to."""
    changed = _frame_changed(video, 0, 2)
    base, moved = net(video), net(changed)
    np.testing.assert_allclose(moved[1], base[1], atol=1e-6)  # other example untouched
    others = [0, 1, 3]
    coupled = np.max(np.abs(moved[0, others] - base[0, others]))
    if net.cfg.temporal_mixing == "none":
        assert coupled < 1e-6
    else:
        assert coupled > 1e-4  # without a mask, frames mix

    # Frame 2 of example 0 marked as an independent image: no link in either direction.
    mask = jnp.zeros((B, T), bool).at[0, 2].set(True)
    base, moved = net(video, mask=mask), net(changed, mask=mask)
    np.testing.assert_allclose(moved[0, others], base[0, others], atol=1e-6)
    assert np.max(np.abs(moved[0, 2] - base[0, 2])) > 1e-4
    moved_video_frame = net(_frame_changed(video, 0, 0), mask=mask)
    np.testing.assert_allclose(moved_video_frame[0, 2], base[0, 2], atol=1e-6)


def test_dropout_remat_and_gradients():
    cfg = UNetConfig(**{**TINY, "dropout": 0.2, "num_classes": 0, "use_aug_cond": False})
    graphdef, params = init(cfg)
    remat_def = nnx.split(
        nnx.eval_shape(lambda: UNet3D(dataclasses.replace(cfg, remat=True), rngs=nnx.Rngs(0))),
        nnx.Param,
    )[0]
    x = jax.random.normal(jax.random.key(2), (B, T, S, S, C))
    logsnr = jnp.array([0.0, 1.0])

    def loss(params, gdef, key):
        out = nnx.merge(gdef, params)(x, logsnr, deterministic=False, dropout_rng=key)
        return jnp.mean(out**2)

    grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    l_a, g_a = grad(params, graphdef, jax.random.key(7))
    l_b, g_b = grad(params, remat_def, jax.random.key(7))
    l_c, _ = grad(params, graphdef, jax.random.key(8))
    assert l_a != l_c  # dropout active and keyed
    np.testing.assert_allclose(l_a, l_b, rtol=1e-6)  # remat: same value, same gradient
    for a, b in zip(jax.tree.leaves(g_a), jax.tree.leaves(g_b), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_overfits_a_fixed_batch():
    """100 Adam steps on one fixed (z, logsnr) -> v problem: loss falls > 100x (seen ~2500x)."""
    cfg = UNetConfig(**{**TINY, "num_classes": 0, "use_aug_cond": False})
    graphdef, params = init(cfg, noise=False)
    keys = jax.random.split(jax.random.key(0), 2)
    x = jax.random.uniform(keys[0], (B, T, S, S, C), minval=-1, maxval=1)
    eps = jax.random.normal(keys[1], x.shape)
    logsnr = jnp.array([-1.0, 2.0])
    alpha = jnp.sqrt(jax.nn.sigmoid(logsnr))[:, None, None, None, None]
    sigma = jnp.sqrt(jax.nn.sigmoid(-logsnr))[:, None, None, None, None]
    z, v = alpha * x + sigma * eps, alpha * eps - sigma * x
    tx = optax.adam(3e-3)

    def loss_fn(params):
        return jnp.mean((nnx.merge(graphdef, params)(z, logsnr) - v) ** 2)

    @jax.jit
    def train(params, opt_state):
        def step(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        return jax.lax.scan(step, (params, opt_state), None, length=100)[1]

    losses = np.asarray(train(params, tx.init(params)))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0] / 100, (losses[0], losses[-1])


# ---------------------------------------------------------------- bad input
# (config validation: test_unet3d_config.py)


def test_bad_call_inputs():
    cfg = UNetConfig(**{**TINY, "num_classes": 0, "dropout": 0.1})
    graphdef, params = init(cfg, noise=False)
    x, logsnr = jnp.zeros((B, T, S, S, C)), jnp.zeros((B,))

    def call(x, **kwargs):  # traced only: the errors are raised before any compute
        return jax.eval_shape(lambda p: nnx.merge(graphdef, p)(x, logsnr, **kwargs), params)

    assert call(x, aug_logsnr=logsnr).shape == x.shape
    larger = jnp.zeros((B, T, 2 * S, 2 * S, C))  # other sizes the levels divide are fine
    assert call(larger, aug_logsnr=logsnr).shape == larger.shape
    with pytest.raises(ValueError, match="divisible"):
        call(jnp.zeros((B, T, S + 1, S + 1, C)), aug_logsnr=logsnr)
    with pytest.raises(ValueError, match=f"H, W, {C}]"):
        call(jnp.zeros((B, T, S, S, C + 1)), aug_logsnr=logsnr)
    with pytest.raises(ValueError, match="num_classes=0"):
        call(x, label=jnp.zeros((B,), jnp.int32), aug_logsnr=logsnr)
    with pytest.raises(ValueError, match="aug_logsnr"):
        call(x)
    with pytest.raises(ValueError, match="image_mask"):
        call(x, aug_logsnr=logsnr, image_mask=jnp.zeros((B, T + 1), bool))
    with pytest.raises(ValueError, match="dropout_rng"):
        call(x, aug_logsnr=logsnr, deterministic=False)


# ------------------------------------------------- per-frame labels (joint image-video training)


@pytest.mark.parametrize("scale_shift", [False, True])
def test_res_block_takes_a_per_frame_embedding(scale_shift):
    """emb [B, T, E] conditions frame t on row t: the same as running that frame alone with
    its row as a per-clip embedding [B, E] (both the added and the FiLM form)."""
    block = layers.ResBlock(
        8, 8, 6, groups=4, conv="space", scale_shift=scale_shift, dropout=0.0, rngs=nnx.Rngs(0)
    )
    graphdef, params, *rest = nnx.split(block, nnx.Param, ...)
    block = nnx.merge(graphdef, perturb(params, jax.random.key(1)), *rest)
    x = jax.random.normal(jax.random.key(2), (2, 3, 4, 4, 8))
    emb = jax.random.normal(jax.random.key(3), (2, 3, 6))
    full = block(x, emb)
    for t in range(3):
        np.testing.assert_allclose(full[:, t : t + 1], block(x[:, t : t + 1], emb[:, t]), atol=1e-5)


@pytest.mark.parametrize("net", ["attention", "conv3d"], indirect=True)
def test_per_frame_labels_condition_each_frame(net, video):
    """Labels [B, T]: the clip's label on every frame is the label [B]; relabelling an
    independent image frame moves that frame only."""
    per_clip = net(video)  # labels [0, 2]
    frames = jnp.array([[0] * T, [2] * T])
    np.testing.assert_allclose(net(video, label=frames), per_clip, atol=1e-5)
    mask = jnp.zeros((B, T), bool).at[0, T - 1].set(True)
    base = net(video, label=frames, mask=mask)
    relabelled = net(video, label=frames.at[0, T - 1].set(1), mask=mask)
    np.testing.assert_allclose(relabelled[0, : T - 1], base[0, : T - 1], atol=1e-6)
    np.testing.assert_allclose(relabelled[1], base[1], atol=1e-6)
    assert np.max(np.abs(relabelled[0, T - 1] - base[0, T - 1])) > 1e-4
    with pytest.raises(ValueError, match="per-frame label"):
        net(video, label=jnp.zeros((B, T + 1), jnp.int32))


def test_extra_images_carry_their_own_labels_to_the_unet(data_dir):
    """Base stage with extra images: each image is labelled with the clip it was taken from;
    label dropout is drawn once per clip for its frames and once per image."""
    from conftest import tiny_config

    from cascade.stages import build_stage

    n, extra = 6, 3
    config = tiny_config("keyframes", data_dir, **{"view.extra_images": extra})
    stage = build_stage(config)
    f = config.view.frames
    t = config.view.frames * config.view.frame_stride
    # Clip b is the constant frame value b / 10, so an image's pixels name its source clip.
    values = np.arange(n, dtype=np.float32) / 10
    clips = {
        "video": np.broadcast_to(values[:, None, None, None, None], (n, t, 16, 16, 1)).copy(),
        "label": np.array([3, 1, 4, 1, 5, 9]),
    }
    batch = stage.make_batch(clips, np.random.default_rng(0))
    stage.check_batch(batch)
    source = np.rint(batch["video"][:, f:, 0, 0, 0] * 10).astype(int)  # [n, extra]
    assert (source != np.arange(n)[:, None]).all()  # from other clips
    np.testing.assert_array_equal(batch["image_label"], clips["label"][source])
    # With an image pool (data.image_pool) the images come from the pool's batch instead.
    pooled = dict(clips, pool_video=-clips["video"] - 0.05, pool_label=np.arange(n) + 10)
    from_pool = stage.make_batch(pooled, np.random.default_rng(0))
    pool_source = np.rint((-from_pool["video"][:, f:, 0, 0, 0] - 0.05) * 10).astype(int)
    np.testing.assert_array_equal(from_pool["image_label"], pool_source + 10)
    np.testing.assert_array_equal(from_pool["video"][:, :f], batch["video"][:, :f])

    null = stage.null_label
    labels = np.asarray(stage._train_labels(batch, jax.random.key(0)))
    assert labels.shape == (n, f + extra)
    stage.config.diffusion.label_dropout = 0.0
    exact = np.asarray(stage._train_labels(batch, jax.random.key(0)))
    np.testing.assert_array_equal(exact[:, :f], np.repeat(clips["label"][:, None], f, 1))
    np.testing.assert_array_equal(exact[:, f:], batch["image_label"])
    stage.config.diffusion.label_dropout = 0.5
    drawn = np.stack([stage._train_labels(batch, jax.random.key(k)) for k in range(20)])
    video_dropped = drawn[:, :, :f] == null
    assert (video_dropped.all(-1) == video_dropped.any(-1)).all()  # a clip drops as a whole
    image_dropped = drawn[:, :, f:] == null
    assert 0.3 < image_dropped.mean() < 0.7
    assert (image_dropped != video_dropped[:, :, :1]).any()  # images drop on their own

    # The per-frame labels reach the U-Net through the loss (traced only: shapes).
    abstract = nnx.eval_shape(lambda: stage.build_model(nnx.Rngs(0)))
    loss, _ = nnx.eval_shape(
        lambda m: stage.loss(m, jax.tree.map(jnp.asarray, batch), jax.random.key(1)), abstract
    )
    assert loss.shape == ()
