"""LatentDiT: shapes, adaLN-zero init, conditioning, 3D rotary relativity, errors, overfit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cascade.models.dit import (
    DiTBlock,
    DiTConfig,
    LatentDiT,
    grid_positions,
    rope_tables,
)
from cascade.models.ops import sinusoidal_embedding
from cascade.training.train_state import count_params

SHAPE = (2, 3, 4, 4, 4)  # [B, T, h, w, C] -> 3*2*2 = 12 tokens with patch (1, 2, 2)


def tiny_cfg(**kw) -> DiTConfig:
    base = dict(
        in_channels=4, hidden_size=48, depth=2, num_heads=2, num_classes=3, time_embed_dim=32
    )
    return DiTConfig(**{**base, **kw})


def perturb_zero_params(model: nnx.Module, key: jax.Array, scale: float = 0.3) -> None:
    """Give every all-zero (adaLN-zero / output) parameter random values, in place."""
    graphdef, params = nnx.split(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    new = [
        leaf + scale * jax.random.normal(k, leaf.shape) if not np.any(leaf) else leaf
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    nnx.update(model, jax.tree.unflatten(treedef, new))


@pytest.fixture(scope="module")
def data():
    kx, kt = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, SHAPE)
    t = jax.random.uniform(kt, (SHAPE[0],))
    return x, t


@pytest.fixture(scope="module")
def model_and_fn():
    model = LatentDiT(tiny_cfg(), rngs=nnx.Rngs(0))
    graphdef, _ = nnx.split(model, nnx.Param)

    @jax.jit
    def apply(params, x, t, label):
        return nnx.merge(graphdef, params)(x, t, label=label)

    return model, apply


def test_zero_init_output_and_shapes(model_and_fn, data):
    model, apply = model_and_fn
    x, t = data
    params = nnx.state(model, nnx.Param)
    out = apply(params, x, t, jnp.array([0, 2]))
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(out), 0.0)  # adaLN-zero + zero output layer
    assert count_params(model) > 0


def test_conditioning_changes_output(model_and_fn, data):
    model, apply = model_and_fn
    x, t = data
    pert = nnx.clone(model)
    perturb_zero_params(pert, jax.random.key(1))
    params = nnx.state(pert, nnx.Param)
    base = apply(params, x, t, jnp.array([0, 1]))
    assert float(jnp.std(base)) > 1e-3
    other_t = apply(params, x, 1.0 - t, jnp.array([0, 1]))
    other_label = apply(params, x, t, jnp.array([2, 1]))
    # sample 0's label changed, sample 1 is untouched (no cross-sample leakage)
    assert float(jnp.max(jnp.abs(other_t - base))) > 1e-3
    assert float(jnp.max(jnp.abs(other_label[0] - base[0]))) > 1e-3
    np.testing.assert_allclose(other_label[1], base[1], atol=1e-6)
    # label=None means the null label (index num_classes) for classifier-free guidance
    null = apply(params, x, t, jnp.array([3, 3]))
    np.testing.assert_allclose(pert(x, t, label=None), null, atol=1e-5)


def test_time_features_are_cos_then_sin_of_1000t():
    """The DiT keeps the DiT/ADM order (cos, sin) of the shared sinusoidal embedding; the
    U-Net's VDM order (sin, cos) is the same features with the halves swapped."""
    t, dim = np.array([0.0, 0.25, 1.0], np.float32), 8
    freqs = np.exp(-np.log(10000.0) * np.arange(dim // 2) / (dim // 2))
    args = 1000.0 * t[:, None] * freqs[None]
    dit_feats = sinusoidal_embedding(t, dim, cos_first=True)
    np.testing.assert_allclose(
        dit_feats, np.concatenate([np.cos(args), np.sin(args)], -1), atol=2e-4
    )
    vdm_feats = sinusoidal_embedding(t, dim)
    np.testing.assert_array_equal(vdm_feats, jnp.roll(dit_feats, dim // 2, axis=-1))


def test_rotary_depends_on_relative_positions_only():
    cfg = tiny_cfg(hidden_size=96, num_heads=2)  # head dim 48 -> (t, h, w) = (16, 16, 16)
    assert cfg.axes_dim == (16, 16, 16)
    block = DiTBlock(cfg, rngs=nnx.Rngs(3))
    grid = grid_positions(3, 4, 4)
    x = jax.random.normal(jax.random.key(4), (2 * len(grid), cfg.hidden_size))
    attn = jax.jit(lambda x, cos, sin: block.attention(x, 2, cos, sin))
    out = attn(x, *rope_tables(grid, cfg.axes_dim))
    shifted = attn(x, *rope_tables(grid + np.array([5.0, -3.0, 11.0]), cfg.axes_dim))
    np.testing.assert_allclose(shifted, out, atol=2e-5)
    # ...while the positions do matter: stretching the grid changes relative offsets.
    stretched = attn(x, *rope_tables(grid * np.array([1.0, 2.0, 1.0]), cfg.axes_dim))
    assert float(jnp.max(jnp.abs(stretched - out))) > 1e-3


def test_attention_implementations_agree(data):
    x, t = data
    outs = []
    for impl in ("einsum", "xla"):
        model = LatentDiT(tiny_cfg(attention_impl=impl), rngs=nnx.Rngs(0))
        perturb_zero_params(model, jax.random.key(1))
        outs.append(model(x, t, label=jnp.array([0, 1])))
    np.testing.assert_allclose(outs[0], outs[1], atol=2e-5)


def test_bad_inputs_raise_clear_errors(model_and_fn):
    model, _ = model_and_fn
    t = jnp.zeros((2,))
    with pytest.raises(ValueError, match=r"h=5 not divisible by 2"):
        model(jnp.zeros((2, 3, 5, 4, 4)), t)
    with pytest.raises(ValueError, match=r"\[B, T, h, w, 4\]"):
        model(jnp.zeros((2, 3, 4, 4, 3)), t)
    uncond = LatentDiT(tiny_cfg(num_classes=0, depth=1), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_classes == 0"):
        uncond(jnp.zeros(SHAPE), t, label=jnp.zeros((2,), jnp.int32))
    with pytest.raises(ValueError, match="attention_impl"):
        tiny_cfg(attention_impl="flash")
    with pytest.raises(ValueError, match="needs dtype 'bfloat16'"):  # cuDNN takes no float32
        tiny_cfg(attention_impl="cudnn", dtype="float32")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        tiny_cfg(hidden_size=50, num_heads=3)
    with pytest.raises(TypeError):
        DiTConfig(hidden=3)  # unknown config keys are rejected
    dropout = LatentDiT(tiny_cfg(dropout=0.1, depth=1), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="needs rng"):
        dropout(jnp.zeros(SHAPE), t, deterministic=False)


def test_remat_and_dropout(data):
    x, t = data

    def loss_and_grads(cfg, **call_kw):
        model = LatentDiT(cfg, rngs=nnx.Rngs(0))
        perturb_zero_params(model, jax.random.key(1))
        graphdef, params = nnx.split(model, nnx.Param)

        def loss(p):
            return jnp.mean(nnx.merge(graphdef, p)(x, t, **call_kw) ** 2)

        return jax.jit(jax.value_and_grad(loss))(params)

    l0, g0 = loss_and_grads(tiny_cfg(depth=1))
    l1, g1 = loss_and_grads(tiny_cfg(depth=1, remat=True))
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), g1, g0)
    # dropout is active only with deterministic=False and a key
    l2, _ = loss_and_grads(tiny_cfg(depth=1, dropout=0.5))
    l3, _ = loss_and_grads(
        tiny_cfg(depth=1, dropout=0.5), deterministic=False, rng=jax.random.key(2)
    )
    np.testing.assert_allclose(l2, l0, rtol=1e-5)
    assert abs(float(l3) - float(l0)) > 1e-4


def test_overfits_velocity_regression(data):
    """Flow-matching velocity regression on one fixed batch: loss falls >= 10x in 150 steps."""
    x0, _ = data
    cfg = tiny_cfg(hidden_size=64, num_heads=2, depth=2)
    model = LatentDiT(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    eps = jax.random.normal(jax.random.key(5), x0.shape)
    t = jnp.array([0.3, 0.7])
    xt = (1 - t)[:, None, None, None, None] * x0 + t[:, None, None, None, None] * eps
    label = jnp.array([0, 1])
    tx = optax.adam(3e-3)

    def loss_fn(p):
        v = nnx.merge(graphdef, p)(xt, t, label=label)
        return jnp.mean((v - (eps - x0)) ** 2)

    @jax.jit
    def step(p, opt):
        loss, g = jax.value_and_grad(loss_fn)(p)
        upd, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, upd), opt, loss

    opt = tx.init(params)
    losses = []
    for _ in range(150):
        params, opt, loss = step(params, opt)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
