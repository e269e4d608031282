"""Causal video VAE: shapes, exact causality, chunked == one pass, conv exactness, loss, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cascade.models.vae import (
    CausalConv3d,
    CausalVideoVAE,
    ChunkContext,
    VAEConfig,
    check_frames,
    vae_loss,
)

TINY = dict(base_channels=8, channel_mults=(1, 2, 2, 2), latent_channels=4)


@pytest.fixture(scope="module")
def vae():
    model = VAEConfig(**TINY)
    return CausalVideoVAE(model, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def clip():
    return jax.random.uniform(jax.random.key(1), (2, 17, 16, 16, 3), minval=-1, maxval=1)


@pytest.fixture(scope="module")
def jitted(vae):
    return {
        "encode": jax.jit(lambda x: vae.encode(x)[0]),
        "decode": jax.jit(vae.decode),
    }


@pytest.mark.parametrize(
    "cfg_kw, frames, latent",
    [
        (TINY, 17, (5, 2, 2, 4)),
        (TINY, 1, (1, 2, 2, 4)),
        (dict(TINY, temporal_downsample=2), 9, (5, 2, 2, 4)),
        (
            dict(
                base_channels=8,
                channel_mults=(1, 2),
                spatial_downsample=2,
                temporal_downsample=1,
                latent_channels=16,
            ),
            3,
            (3, 8, 8, 16),
        ),
    ],
)
def test_shapes(cfg_kw, frames, latent):
    cfg = VAEConfig(**cfg_kw)
    model = CausalVideoVAE(cfg, rngs=nnx.Rngs(0))
    x = jax.ShapeDtypeStruct((2, frames, 16, 16, 3), jnp.float32)
    mean, logvar = jax.eval_shape(model.encode, x)
    assert mean.shape == logvar.shape == (2, *latent)
    assert cfg.latent_shape(frames, 16, 16) == latent
    recon = jax.eval_shape(model.decode, mean)
    assert recon.shape == x.shape
    out = jax.eval_shape(lambda a: model(a, jax.random.key(0)), x)
    assert [o.shape for o in out] == [x.shape, mean.shape, mean.shape]


def test_encoder_and_decoder_are_causal(jitted, clip):
    """Changing frames >= 9 leaves latents 0..2 (frames 0..8) bit-identical, and back."""
    z = jitted["encode"](clip)
    z_changed = jitted["encode"](clip.at[:, 9:].set(0.25))
    np.testing.assert_array_equal(z_changed[:, :3], z[:, :3])
    assert float(jnp.max(jnp.abs(z_changed[:, 3:] - z[:, 3:]))) > 1e-4
    x = jitted["decode"](z)
    x_changed = jitted["decode"](z.at[:, 3:].set(0.5))
    np.testing.assert_array_equal(x_changed[:, :9], x[:, :9])
    assert float(jnp.max(jnp.abs(x_changed[:, 9:] - x[:, 9:]))) > 1e-4


def test_image_is_a_one_frame_clip(jitted, clip):
    """Frame 0 is encoded on its own: its latent does not depend on the rest of the clip."""
    z_clip = jitted["encode"](clip)
    z_image = jitted["encode"](clip[:, :1])
    np.testing.assert_allclose(z_image[:, 0], z_clip[:, 0], atol=1e-5)


@pytest.mark.parametrize("per_chunk", [1, 3])  # 3: chunks of 12 frames plus a shorter last one
def test_chunked_equals_one_pass(vae, jitted, clip, per_chunk):
    mean, logvar = jax.jit(vae.encode)(clip)
    mean_c, logvar_c = jax.jit(lambda x: vae.encode_chunked(x, per_chunk))(clip)
    np.testing.assert_allclose(mean_c, mean, atol=1e-5)
    np.testing.assert_allclose(logvar_c, logvar, atol=1e-5)
    recon = jitted["decode"](mean)
    recon_c = jax.jit(lambda z: vae.decode_chunked(z, per_chunk))(mean)
    np.testing.assert_allclose(recon_c, recon, atol=1e-5)


def test_chunked_memory_does_not_grow_with_clip_length(vae):
    def temp_bytes(fn, shape):
        x = jax.ShapeDtypeStruct(shape, jnp.float32)
        return jax.jit(fn).lower(x).compile().memory_analysis().temp_size_in_bytes

    def growth(fn, short, long):  # extra scratch memory for a 4x longer clip
        return temp_bytes(fn, long) - temp_bytes(fn, short)

    clips = (1, 9, 16, 16, 3), (1, 33, 16, 16, 3)
    latents = (1, 3, 2, 2, 4), (1, 9, 2, 2, 4)
    enc_one, enc_chunked = (growth(f, *clips) for f in (vae.encode, vae.encode_chunked))
    dec_one, dec_chunked = (growth(f, *latents) for f in (vae.decode, vae.decode_chunked))
    assert enc_one > 1_000_000 and dec_one > 1_000_000  # one pass: activations scale with T
    assert enc_chunked < 0.1 * enc_one and dec_chunked < 0.1 * dec_one, (enc_chunked, dec_chunked)


def test_causal_conv_matches_lax_conv3d_and_streams():
    conv = CausalConv3d(5, 7, (3, 3, 3), dtype=jnp.float32, rngs=nnx.Rngs(2))
    x = jax.random.normal(jax.random.key(3), (2, 9, 6, 6, 5))
    full = jax.jit(conv.__call__)(x)
    np.testing.assert_allclose(full, jax.jit(conv.reference)(x), atol=1e-5)
    # chunk by chunk with the cached context gives the same frames
    first = ChunkContext(None)
    y0 = conv(x[:, :1], first)
    nxt = ChunkContext(first.saved)
    y1 = conv(x[:, 1:5], nxt)
    y2 = conv(x[:, 5:], ChunkContext(nxt.saved))
    np.testing.assert_allclose(jnp.concatenate([y0, y1, y2], axis=1), full, atol=1e-5)


def test_loss_and_metrics(vae, clip):
    loss, metrics = vae.loss(clip, jax.random.key(0), recon="l2", kl_weight=1e-3)
    assert set(metrics) == {"loss", "recon", "kl", "mse", "psnr"}
    assert all(np.isfinite(float(v)) for v in metrics.values())
    np.testing.assert_allclose(loss, metrics["recon"] + 1e-3 * metrics["kl"], rtol=1e-6)
    # closed forms: perfect reconstruction with the prior as posterior costs nothing
    z = jnp.zeros((2, 5, 2, 2, 4))
    loss0, m0 = vae_loss(clip, clip, z, z, recon="l1", kl_weight=1.0)
    assert float(loss0) == 0.0 and float(m0["kl"]) == 0.0
    # KL of N(1, 1) vs N(0, 1) is 1/2 per latent element, normalised per pixel element
    _, m1 = vae_loss(clip, clip, z + 1.0, z, kl_weight=1.0)
    np.testing.assert_allclose(m1["kl"], 0.5 * z[0].size / clip[0].size, rtol=1e-6)
    with pytest.raises(ValueError, match="'l1' or 'l2'"):
        vae_loss(clip, clip, z, z, recon="huber")


def test_bad_inputs_raise_clear_errors(vae):
    with pytest.raises(ValueError, match=r"1 \+ 4k frames .* got 16; nearest valid: \[13, 17\]"):
        vae.encode(jnp.zeros((1, 16, 16, 16, 3)))
    with pytest.raises(ValueError, match=r"got 0; nearest valid: \[1\]"):
        check_frames(0, 4)
    with pytest.raises(ValueError, match="not divisible by spatial_downsample=8"):
        vae.encode(jnp.zeros((1, 5, 12, 16, 3)))
    with pytest.raises(ValueError, match="temporal_downsample must be one of"):
        VAEConfig(temporal_downsample=3)
    with pytest.raises(ValueError, match="channel_mults needs"):
        VAEConfig(channel_mults=(1, 2))
    with pytest.raises(TypeError):
        VAEConfig(adversarial_weight=0.1)  # no adversarial term: no such key


def test_overfits_one_clip():
    """Reconstruction of one fixed 5-frame clip: L1 loss falls >= 3x in 150 adam steps."""
    cfg = VAEConfig(
        base_channels=8,
        channel_mults=(1, 2),
        spatial_downsample=2,
        temporal_downsample=2,
        latent_channels=8,
        mid_attention=False,
    )
    model = CausalVideoVAE(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    yy, xx = jnp.meshgrid(jnp.linspace(-1, 1, 8), jnp.linspace(-1, 1, 8), indexing="ij")
    frames = [jnp.stack([jnp.sin(3 * xx + t), jnp.cos(2 * yy - t), xx * yy], -1) for t in range(5)]
    clip = jnp.stack(frames)[None]
    tx = optax.adam(3e-3)

    @jax.jit
    def step(p, opt):
        (loss, _), g = jax.value_and_grad(
            lambda p: nnx.merge(graphdef, p).loss(clip, None, kl_weight=1e-6), has_aux=True
        )(p)
        upd, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, upd), opt, loss

    opt = tx.init(params)
    losses = []
    for _ in range(150):
        params, opt, loss = step(params, opt)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0] / 3, (losses[0], losses[-1])
