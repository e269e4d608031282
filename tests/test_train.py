"""The one trainer on the keyframe stage: overfitting, 1-vs-8-device equality, kill/resume, bad input."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from cascade.configs import ConfigError, load
from cascade.stages.stage import ShapeMismatchError
from cascade.training.checkpoints import Checkpointer
from cascade.training.flat_update import FlatParams
from cascade.training.trainer import NonFiniteLossError, Trainer


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def test_overfit_fixed_batch(data_dir, tmp_path):
    """On one fixed batch the loss falls clearly: mean of the last 10 steps < 0.6 x first 10."""
    config = tiny_config(
        "keyframes", data_dir, **{"train.learning_rate": 3e-3, "train.grad_clip": 0.0}
    )
    trainer = Trainer(config, tmp_path)
    batch = next(trainer.batches(0))
    state = trainer.fresh_state()
    losses = []
    for _ in range(80):
        state, metrics = trainer.train_step(state, batch)
        losses.append(float(metrics["loss"]))
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert np.all(np.isfinite(losses))
    assert last < 0.6 * first, (first, last)
    videos = trainer.sampler.sample(
        state["ema_params"], {"label": np.arange(2, dtype=np.int32)}, jax.random.key(0)
    )
    assert videos.shape == (2, 4, 8, 8, 1) and np.all(np.isfinite(videos))
    assert videos.min() >= -1.0 and videos.max() <= 1.0


def test_sharded_step_matches_single_device(data_dir, tmp_path):
    """One step on a 4x2 (data, fsdp) mesh of 8 devices equals the 1-device step (rtol 1e-5);
    the one device updates its parameters as one flat vector, the fsdp mesh per tensor."""
    results = []
    for mesh, devices in (
        ({"data": 1, "fsdp": 1}, jax.devices()[:1]),
        ({"data": 4, "fsdp": 2}, jax.devices()),
    ):
        config = tiny_config(
            "keyframes",
            data_dir,
            **{"mesh.data": mesh["data"], "mesh.fsdp": mesh["fsdp"], "mesh.fsdp_min_size": 64},
        )
        trainer = Trainer(config, tmp_path / str(mesh["data"]), devices=devices)
        state, metrics = trainer.train_step(trainer.fresh_state(), next(trainer.batches(0)))
        results.append((float(metrics["loss"]), _leaves(state["params"]), trainer))
    (loss1, params1, trainer1), (loss8, params8, trainer8) = results
    for trainer, flat in ((trainer1, True), (trainer8, False)):
        shardings = trainer.state_shardings["params"]
        assert FlatParams.applies(trainer.abstract_state["params"], shardings) == flat
    sharded = [
        s for s in jax.tree.leaves(trainer8.state_shardings["params"]) if "fsdp" in str(s.spec)
    ]
    assert sharded, "the fsdp rule should shard some parameters"
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    for a, b in zip(params1, params8, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_kill_resume_matches_uninterrupted(data_dir, tmp_path):
    config = tiny_config("keyframes", data_dir, **{"train.steps": 4, "train.checkpoint_every": 2})
    uninterrupted = Trainer(config, tmp_path / "full").train()
    # "Killed" after 3 steps: the checkpoint of step 2 survives, step 3 is lost and redone.
    Trainer(config, tmp_path / "killed").train(stop_after=3)
    assert Checkpointer(tmp_path / "killed").steps() == [2]
    resumed = Trainer(config, tmp_path / "killed").train()
    assert int(resumed["step"]) == 4
    for a, b in zip(_leaves(uninterrupted["params"]), _leaves(resumed["params"]), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    # Logs, samples and checkpoint metadata were written.
    workdir = tmp_path / "full"
    assert list((workdir / "logs").glob("events.out.tfevents*"))
    assert (workdir / "samples" / "step_0000004.gif").exists()
    assert (workdir / "samples" / "step_0000004.mp4").exists()
    meta = Checkpointer(workdir).restore_meta()
    assert meta["stage"] == "keyframes" and meta["config"]["train"]["steps"] == 4
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 4 and np.isfinite(lines[-1]["loss"])

    # A corrupt newest checkpoint: restore falls back to the previous one and keeps the bad one.
    ckpt_dir = workdir / "checkpoints"
    for f in (ckpt_dir / "4" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"garbage")
    trainer = Trainer(config, workdir)
    state = trainer.restore_or_init()
    assert int(state["step"]) == 2
    assert (ckpt_dir / "corrupt-4").is_dir()


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(data_dir, tmp_path):
    config = tiny_config(
        "keyframes",
        data_dir,
        **{"train.steps": 8, "train.checkpoint_every": 2, "train.max_nonfinite_steps": 2},
    )
    trainer = Trainer(config, tmp_path)
    trainer.train(stop_after=2)
    before = _leaves(trainer.restore_or_init()["params"])
    make_batch = trainer.stage.make_batch

    def poisoned(clips, rng):
        batch = make_batch(clips, rng)
        batch["video"] = np.full_like(batch["video"], np.nan)
        return batch

    trainer.stage.make_batch = poisoned
    with pytest.raises(NonFiniteLossError, match="consecutive non-finite.*step 2"):
        trainer.train()
    assert Checkpointer(tmp_path).steps() == [2]
    after = _leaves(Trainer(config, tmp_path).restore_or_init()["params"])
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_inputs_give_clear_errors(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*tiny"):
        load("keyframes:huge")
    config = load("keyframes:tiny")
    with pytest.raises(AttributeError):
        config.train.stpes = 3  # locked config: no new keys
    bad = tiny_config("keyframes", data_dir, **{"model.temporal_mixing": "magic"})
    with pytest.raises(ConfigError, match="temporal_mixing"):
        Trainer(bad, tmp_path)
    bad = tiny_config("keyframes", data_dir, **{"view.frames": 64})
    with pytest.raises(ConfigError, match="frames=64"):
        trainer = Trainer(bad, tmp_path / "frames")
        next(trainer.batches(0))
    config = tiny_config("keyframes", data_dir)
    stage = Trainer(config, tmp_path / "shape").stage
    with pytest.raises(ShapeMismatchError, match=r"\(2, 4, 16, 16, 1\).*\(2, 4, 8, 8, 1\)"):
        stage.check_batch(
            {"video": jnp.zeros((2, 4, 16, 16, 1)), "label": jnp.zeros((2,), jnp.int32)}
        )
