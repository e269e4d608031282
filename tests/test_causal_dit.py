"""Causal latent DiT (issue 13): block-causal attention, per-frame flow times, KV-cache rollout
at constant memory, the Diffusion Forcing loss, and --mode=sample of long videos."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config
from flax import nnx
from test_dit import perturb_zero_params

from cascade.configs import ConfigError, load
from cascade.diffusion import flow
from cascade.diffusion.rollout import RolloutSpec, chunk_step, rollout
from cascade.models.dit import DiTConfig, LatentDiT
from cascade.models.kv_cache import rollout_cache

CHUNK_SHAPE = (1, 4, 4, 4)  # one latent frame of 4x4x4 per chunk: 4 tokens with patch (1,2,2)


def causal_model(**kw) -> LatentDiT:
    base = dict(
        in_channels=4,
        hidden_size=48,
        depth=2,
        num_heads=2,
        num_classes=3,
        time_embed_dim=32,
        causal_chunk=1,
    )
    model = LatentDiT(DiTConfig(**{**base, **kw}), rngs=nnx.Rngs(0))
    perturb_zero_params(model, jax.random.key(1))  # adaLN-zero would output exactly 0
    return model


def split_fn(model):
    graphdef, params = nnx.split(model, nnx.Param)
    return params, jax.jit(lambda p, x, t, y: nnx.merge(graphdef, p)(x, t, label=y))


def max_diff(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)))


def test_block_causal_attention_and_per_frame_times():
    """A future latent frame (or its flow time) changes nothing in the past outputs; each
    frame's output depends on its own t; chunks of 2 frames see each other; a scalar t is the
    same as equal per-frame times; the einsum and XLA attentions agree under the mask."""
    x = jax.random.normal(jax.random.key(2), (2, 4, 4, 4, 4))
    t = jax.random.uniform(jax.random.key(3), (2, 4), minval=0.1, maxval=0.9)
    label = jnp.array([0, 1])
    params, apply = split_fn(causal_model())
    base = apply(params, x, t, label)
    for j in range(1, 4):  # frame j changed: frames < j untouched, frame j moves
        moved = apply(params, x.at[:, j].add(1.0), t, label)
        assert max_diff(moved[:, :j], base[:, :j]) == 0.0
        assert max_diff(moved[:, j], base[:, j]) > 1e-2
        later_t = apply(params, x, t.at[:, j].set(1.0 - t[:, j]), label)
        assert max_diff(later_t[:, :j], base[:, :j]) == 0.0  # t_j reaches only frames >= j
        assert max_diff(later_t[:, j], base[:, j]) > 1e-3  # ...and frame j itself
    # the per-frame modulation is per token row of that frame: t_0 changes frame 0 only
    # through adaLN (frame 0 attends to itself only), and a scalar t = equal per-frame t.
    np.testing.assert_array_equal(
        apply(params, x, jnp.array([0.3, 0.6]), label),
        apply(params, x, jnp.array([[0.3] * 4, [0.6] * 4]), label),
    )
    # chunks of two frames: frame 0 sees frame 1 (same chunk), not frame 2
    params2, apply2 = split_fn(causal_model(causal_chunk=2))
    b2 = apply2(params2, x, t, label)
    assert max_diff(apply2(params2, x.at[:, 1].add(1.0), t, label)[:, 0], b2[:, 0]) > 1e-2
    assert max_diff(apply2(params2, x.at[:, 2].add(1.0), t, label)[:, :2], b2[:, :2]) == 0.0
    params3, apply3 = split_fn(causal_model(attention_impl="einsum"))
    np.testing.assert_allclose(apply3(params3, x, t, label), base, atol=2e-5)
    with pytest.raises(ValueError, match="causal_chunk"):
        DiTConfig(patch_size=(2, 2, 2), causal_chunk=1)
    with pytest.raises(ValueError, match=r"per-frame flow times must be \[B, T\]"):
        causal_model()(x, t[:, :3])


def reference_rollout(model, key, *, batch, chunks, spec, label):
    """The rollout recomputed without a cache: every velocity is the last chunk's rows of the
    full causal network on [last `window` contexts at t_ctx, the chunk at t]."""
    contexts, out = [], []
    for i in range(chunks):
        k_noise, k_ctx = jax.random.split(jax.random.fold_in(key, i))
        past = contexts[-spec.window :]

        def velocity(z, t, past=past):
            seq = jnp.concatenate([*past, z], axis=1)
            levels = jnp.concatenate(
                [jnp.full((batch, len(past)), spec.context_t), t[:, None]], axis=1
            )
            return model(seq, levels, label=label)[:, -spec.chunk_shape[0] :]

        x0 = flow.euler_sample(velocity, (batch, *spec.chunk_shape), k_noise, spec.steps)
        eps = jax.random.normal(k_ctx, x0.shape)
        contexts.append(flow.flow_interpolate(x0, eps=eps, t=spec.context_t))
        out.append(x0)
    return jnp.concatenate(out, axis=1)


def test_kv_cache_rollout_equals_full_recompute_at_constant_memory():
    """Rollout with a KV cache == recomputing the causal sequence at every sampler step (3
    chunks, window 2: nothing evicted). A 1-chunk sliding window agrees until it evicts; its
    per-chunk step compiles once for any length and its compiled memory is one chunk's, while
    the full causal pass grows with the number of frames. CFG doubles the cache rows."""
    model = causal_model()
    full_spec = RolloutSpec(chunk_shape=CHUNK_SHAPE, window=2, context_t=0.1, steps=2, null_label=3)
    spec = dataclasses.replace(full_spec, window=1)
    key, label = jax.random.key(7), jnp.array([0, 2])
    graphdef, params = nnx.split(model, nnx.Param)

    def scanned(spec, chunks=3):
        return jax.jit(
            lambda p, k, y: rollout(
                nnx.merge(graphdef, p),
                k,
                rollout_cache(model.cfg, 2, spec.chunk_shape, spec.window),
                batch=2,
                chunks=chunks,
                spec=spec,
                label=y,
            )
        )(params, key, label)

    got = scanned(full_spec)
    want = jax.jit(
        lambda p, k, y: reference_rollout(
            nnx.merge(graphdef, p), k, batch=2, chunks=3, spec=full_spec, label=y
        )
    )(params, key, label)
    assert got.shape == (2, 3, 4, 4, 4) and float(jnp.std(got)) > 0.1
    np.testing.assert_allclose(got, want, atol=5e-5)
    # Evicting: chunk 2 no longer sees chunk 0's keys (deeper layers of the cached chunk 1
    # still carry what they saw of it: a rolling cache, as in CausVid / Self Forcing).
    sliding = scanned(spec)
    np.testing.assert_allclose(sliding[:, :2], got[:, :2], atol=5e-5)
    assert max_diff(sliding[:, 2:], got[:, 2:]) > 1e-3

    # One jitted chunk step, called from a host loop for any number of chunks.
    def step(params, cache, key, index, label, spec=spec):
        return chunk_step(
            nnx.merge(graphdef, params), cache, jax.random.fold_in(key, index), index,
            batch=2, spec=spec, label=label,
        )  # fmt: skip

    jitted = jax.jit(step)
    for chunks in (2, 5):
        cache, out = rollout_cache(model.cfg, 2, spec.chunk_shape, spec.window), []
        for i in range(chunks):
            x0, cache = jitted(params, cache, key, jnp.int32(i), label)
            out.append(x0)
        if chunks == 5:  # the host loop draws what the scanned rollout draws
            np.testing.assert_allclose(jnp.concatenate(out[:3], 1), sliding, atol=5e-5)
    assert jitted._cache_size() == 1  # one compilation served 2 and 5 chunks
    args = (
        params,
        rollout_cache(model.cfg, 2, spec.chunk_shape, spec.window),
        key,
        jnp.int32(0),
        label,
    )
    step_bytes = jitted.lower(*args).compile().memory_analysis().temp_size_in_bytes

    def full_pass_bytes(frames):
        x = jnp.zeros((2, frames, 4, 4, 4))
        levels = jnp.zeros((2, frames))
        f = jax.jit(lambda p, x, t: nnx.merge(graphdef, p)(x, t, label=label))
        return f.lower(params, x, levels).compile().memory_analysis().temp_size_in_bytes

    short, long = full_pass_bytes(4), full_pass_bytes(16)
    print(f"chunk step temp bytes {step_bytes}; full causal pass 4 / 16 frames: {short} / {long}")
    assert long > 2 * short  # the whole-sequence pass grows with length...
    assert step_bytes < long  # ...the chunk step is one chunk's, whatever the length

    # Classifier-free guidance: the cache holds the conditional and null-label halves.
    g_spec = dataclasses.replace(spec, guidance_scale=2.0)
    assert (
        rollout_cache(model.cfg, 2, g_spec.chunk_shape, g_spec.window, guided=True).k.shape[1] == 4
    )
    g = jax.jit(
        lambda p, k, y: rollout(
            nnx.merge(graphdef, p),
            k,
            rollout_cache(model.cfg, 2, g_spec.chunk_shape, 1, guided=True),
            batch=2,
            chunks=2,
            spec=g_spec,
            label=y,
        )
    )(params, key, label)
    assert g.shape == (2, 2, 4, 4, 4) and np.isfinite(g).all()
    assert max_diff(g, sliding[:, :2]) > 1e-3


def test_frame_time_schedules():
    key = jax.random.key(0)
    kw = dict(chunks=4, frames_per_chunk=2, frames_per_level=1, m=0.0, s=1.0)
    t, w = flow.frame_times(key, 64, schedule="independent", **kw)
    assert t.shape == w.shape == (64, 8) and float(jnp.min(w)) == 1.0
    assert float(jnp.mean(jnp.abs(jnp.diff(t, axis=1)))) > 0.05  # frames differ
    t, _ = flow.frame_times(key, 64, schedule="pyramid", **kw)
    assert bool(jnp.all(jnp.diff(t, axis=1) >= 0))  # earlier frames never noisier
    t, w = flow.frame_times(key, 64, schedule="teacher_forcing", **kw)
    target = jnp.argmax(w, axis=1) // 2  # the trained chunk
    chunk_of = jnp.arange(8)[None] // 2
    assert bool(jnp.all(jnp.where(chunk_of < target[:, None], t == 0.0, True)))
    assert bool(jnp.all(jnp.where(chunk_of > target[:, None], (t == 1.0) & (w == 0), True)))
    assert bool(jnp.all(jnp.sum(w, axis=1) == 2))  # both frames of one chunk
    t, _ = flow.frame_times(key, 8, schedule="independent", **{**kw, "frames_per_level": 2})
    np.testing.assert_array_equal(t[:, ::2], t[:, 1::2])  # a temporal patch shares its level


def test_causal_stage_trains_and_samples(data_dir):
    """The stage (a latent_dit config with a `causal` section) on random latents: the three
    noise schedules give finite, different losses; the loss falls over 20 steps on a fixed
    batch; `sample` is the scanned rollout; bad configs are refused."""
    from cascade.stages.causal_dit import CausalDiTStage

    latent_shape = (4, 4, 4, 4)
    x0 = jax.random.normal(jax.random.key(0), (4, *latent_shape))
    batch = {"video": x0, "label": jnp.array([0, 1, 2, 3])}
    stages = {
        noise: CausalDiTStage(
            tiny_config("causal_dit", data_dir, **{"causal.noise": noise}),
            latent_shape=latent_shape,
        )
        for noise in ("independent", "pyramid", "teacher_forcing")
    }
    stage = stages["independent"]
    assert stage.name == "causal_dit" and stage.chunks == 4 and stage.long_shape[0] == 12
    model = stage.build_model(nnx.Rngs(0))
    perturb_zero_params(model, jax.random.key(2))  # at init the velocity is 0 whatever t is
    graphdef, params = nnx.split(model, nnx.Param)
    key = jax.random.key(1)
    losses = jax.jit(
        lambda p: {n: s.loss(nnx.merge(graphdef, p), batch, key)[0] for n, s in stages.items()}
    )(params)
    assert all(np.isfinite(float(v)) and float(v) > 0.1 for v in losses.values()), losses
    assert len({round(float(v), 5) for v in losses.values()}) == 3  # three different objectives
    tx = optax.adam(3e-3)

    @jax.jit
    def train(params, opt):
        loss, g = jax.value_and_grad(lambda p: stage.loss(nnx.merge(graphdef, p), batch, key)[0])(
            params
        )
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    opt, history = tx.init(params), []
    for _ in range(20):  # the same key: a fixed batch, times and noise
        params, opt, loss = train(params, opt)
        history.append(float(loss))
    assert history[-1] < 0.7 * history[0], history
    cond = {"label": np.array([0, 1])}
    sample = jax.jit(lambda p, k: stage.sample(nnx.merge(graphdef, p), k, cond, steps=2))
    out = sample(params, jax.random.key(3))
    assert out.shape == (2, *latent_shape) and np.isfinite(out).all()
    for key_, value, match in (
        ("model.causal_chunk", 3, "tile"),
        ("causal.noise", "sideways", "causal.noise"),
    ):
        bad = tiny_config("causal_dit", data_dir, **{key_: value})
        with pytest.raises(ConfigError, match=match):
            CausalDiTStage(bad, latent_shape=latent_shape)
    from cascade import config_checks

    for key_, value in (("causal.window", 0), ("causal.context_t", 1.0), ("causal.length", 0)):
        with pytest.raises(ConfigError, match=key_):
            config_checks.validate(tiny_config("causal_dit", data_dir, **{key_: value}))
    assert load("causal_dit:tiny").model.causal_chunk == 1


def test_rollout_distillation_fits_two_teacher_steps_per_chunk(data_dir):
    """Progressive distillation of the rollout's chunk step (`CausalDiTStage.distill_loss`): a
    student starting as the teacher pays the gap between one and two teacher steps on the
    denoised chunk; fitting it on a fixed batch closes most of that gap."""
    from cascade.stages.causal_dit import CausalDiTStage

    latent_shape = (4, 4, 4, 4)
    stage = CausalDiTStage(tiny_config("causal_dit", data_dir), latent_shape=latent_shape)
    assert stage.supports_distillation
    model = stage.build_model(nnx.Rngs(0))
    perturb_zero_params(model, jax.random.key(2))
    graphdef, teacher = nnx.split(model, nnx.Param)
    x0 = jax.random.normal(jax.random.key(0), (8, *latent_shape))
    batch = {"video": x0, "label": jnp.arange(8) % 3}
    key = jax.random.key(1)

    def loss(student, video=x0):
        merged = nnx.merge(graphdef, student), nnx.merge(graphdef, teacher)
        return stage.distill_loss(
            *merged, {**batch, "video": video}, key, student_steps=2, weighting="auto"
        )[0]

    tx = optax.adam(3e-3)

    @jax.jit
    def fit(params, opt):
        value, g = jax.value_and_grad(loss)(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, value

    params, opt, history = teacher, tx.init(teacher), []
    for _ in range(30):
        params, opt, value = fit(params, opt)
        history.append(float(value))
    assert history[0] > 1e-4 and history[-1] < 0.3 * history[0], history
    # With classifier-free guidance the student learns the guided velocity the rollout runs.
    guided = CausalDiTStage(
        tiny_config("causal_dit", data_dir, **{"sample.guidance_scale": 2.0}),
        latent_shape=latent_shape,
    )
    models = nnx.merge(graphdef, params), nnx.merge(graphdef, teacher)
    with_cfg, without = (
        float(s.distill_loss(*models, batch, key, student_steps=2, weighting="auto")[0])
        for s in (guided, stage)
    )
    assert np.isfinite(with_cfg) and abs(with_cfg - without) > 1e-6
