"""Checkpoints never destroy work: mismatched configs, corruption, garbage meta, full disks,
and non-finite updates each end in one clear message with every earlier checkpoint kept."""

import errno
import json
import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from orbax.checkpoint._src.handlers import base_pytree_checkpoint_handler as pytree_handler

from cascade.training.checkpoints import (
    ARRAY_SHAPES,
    Checkpointer,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointWriteError,
)
from cascade.training.trained import config_from_checkpoint, load_trained
from cascade.training.trainer import NonFiniteLossError, Trainer


@pytest.fixture(scope="module")
def trained_dir(data_dir, tmp_path_factory):
    """A tiny keyframe-stage run with checkpoints at steps 2 and 4, trained once and copied per test."""
    workdir = tmp_path_factory.mktemp("trained")
    Trainer(tiny_config("keyframes", data_dir, **{"train.num_samples": 0}), workdir).train()
    return workdir


@pytest.fixture
def workdir(trained_dir, tmp_path):
    shutil.copytree(trained_dir, tmp_path / "run")
    return tmp_path / "run"


def _listing(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*"))


def _truncate_arrays(step_dir):
    """Cut every array data file of a checkpoint in half, as a crash mid-copy would."""
    files = [f for f in (step_dir / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def test_other_model_width_is_refused_and_nothing_moves(data_dir, workdir):
    before = _listing(workdir)
    wider = tiny_config(
        "keyframes", data_dir, **{"model.base_channels": 16, "train.num_samples": 0}
    )
    shapes = r"conv_in\.kernel: stored \(3, 3, 1, 8\), requested \(3, 3, 1, 16\)"
    with pytest.raises(CheckpointMismatchError, match=rf"step 4.*{shapes}.*Nothing was moved"):
        Trainer(wider, workdir).train()
    with pytest.raises(CheckpointMismatchError, match=shapes):  # --mode=sample's path
        load_trained(workdir, wider)
    assert _listing(workdir) == before
    # A checkpoint without the shapes in its meta (written before they were recorded) is
    # checked against orbax's own tree metadata, with the same refusal.
    for meta_path in (workdir / "checkpoints").glob("*/meta/metadata"):
        meta = json.loads(meta_path.read_text())
        del meta[ARRAY_SHAPES]
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointMismatchError, match=rf"step 4.*{shapes}.*Nothing was moved"):
        Trainer(wider, workdir).train()


def test_truncated_arrays_are_quarantined_with_a_message(data_dir, workdir, capsys):
    _truncate_arrays(workdir / "checkpoints" / "4")
    trainer = Trainer(tiny_config("keyframes", data_dir), workdir)
    assert int(trainer.restore_or_init()["step"]) == 2
    err = capsys.readouterr().err
    assert "step 4" in err and "corrupt" in err and "corrupt-4" in err
    assert (workdir / "checkpoints" / "corrupt-4" / "state").is_dir()  # moved, not deleted
    assert trainer.checkpointer.steps() == [2]


def test_trainer_never_restarts_next_to_unusable_checkpoints(data_dir, workdir):
    config = tiny_config("keyframes", data_dir, **{"train.num_samples": 0})
    for step in (2, 4):
        _truncate_arrays(workdir / "checkpoints" / str(step))
    refusal = r"no usable checkpoint.*corrupt-2, corrupt-4.*Refusing to start again from step 0"
    with pytest.raises(CheckpointError, match=refusal):
        Trainer(config, workdir).train()
    # A later run sees only the quarantined folders: it refuses again, and so does sampling.
    with pytest.raises(CheckpointError, match=refusal):
        Trainer(config, workdir).train()
    with pytest.raises(CheckpointError, match=refusal):
        load_trained(workdir, config)
    names = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    assert names == ["corrupt-2", "corrupt-4"]


def test_garbage_meta_falls_back_to_the_previous_checkpoint(data_dir, workdir, capsys):
    (workdir / "checkpoints" / "4" / "meta" / "metadata").write_text("{not json")
    ckpt = Checkpointer(workdir)
    assert ckpt.restore_meta()["step"] == 2
    assert "metadata" in capsys.readouterr().err
    assert config_from_checkpoint(workdir).stage == "keyframes"
    # The arrays of step 4 are intact: they restore, and nothing is quarantined.
    assert int(Trainer(tiny_config("keyframes", data_dir), workdir).restore_or_init()["step"]) == 4
    assert ckpt.quarantined() == []
    (workdir / "checkpoints" / "2" / "meta" / "metadata").write_bytes(b"\xff\x00")
    with pytest.raises(CheckpointError, match="no stored config"):
        config_from_checkpoint(workdir)


@pytest.mark.parametrize("async_save", [True, False])
def test_full_disk_during_save_is_one_message_and_keeps_earlier_checkpoints(
    tmp_path, monkeypatch, async_save
):
    ckpt = Checkpointer(tmp_path, keep=2, async_save=async_save)
    state = {"w": jnp.arange(6.0).reshape(2, 3)}
    for step in (1, 2):
        ckpt.save(step, state, {"step": step})
    ckpt.wait()

    # The tree metadata is written last, in the background writer: failing it exercises the
    # asynchronous error path (reported at wait / the next save), not just a failing call.
    async def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(
        pytree_handler.BasePyTreeCheckpointHandler, "_write_metadata_file", disk_full
    )
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("absl").addHandler(handler)
    try:
        with pytest.raises(CheckpointWriteError, match=r"step 3 .*ENOSPC: No space left") as info:
            ckpt.save(3, state, {"step": 3})
            ckpt.wait()  # the asynchronous writer reports here
    finally:
        logging.getLogger("absl").removeHandler(handler)
    assert str(tmp_path / "checkpoints") in str(info.value)
    assert not [r for r in records if r.exc_info]  # reported once, as a message, no traceback
    # Step 3 would have pushed step 1 out (keep=2): both earlier checkpoints are still there.
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} >= {"1", "2"}
    monkeypatch.undo()
    restored = Checkpointer(tmp_path).restore_latest({"w": jnp.zeros((2, 3))})
    assert restored[0] == 2 and np.array_equal(restored[1]["w"], state["w"])


def test_overflowing_update_is_reported_as_an_update(data_dir, tmp_path, capsys):
    config = tiny_config(
        "keyframes",
        data_dir,
        **{
            "train.learning_rate": 1e38,  # the loss stays finite; Adam's update norm overflows
            "train.grad_clip": 0.0,
            "train.max_nonfinite_steps": 2,
            "train.num_samples": 0,
        },
    )
    trainer = Trainer(config, tmp_path, devices=jax.devices()[:1])  # one device: compiles faster
    with pytest.raises(NonFiniteLossError, match="2 consecutive non-finite updates.*overflowed"):
        trainer.train()
    out = capsys.readouterr().out
    assert "non-finite update (loss=" in out and "non-finite loss" not in out


def test_looking_up_a_missing_stage_creates_nothing(tmp_path, data_dir):
    """A mistyped workdir named for reading is an error and leaves no empty folders behind."""
    missing = tmp_path / "no_such_run"
    with pytest.raises(CheckpointError, match="No checkpoint found"):
        load_trained(missing, tiny_config("keyframes", data_dir))
    with pytest.raises(CheckpointError, match="No checkpoint found"):
        config_from_checkpoint(missing)
    assert not missing.exists()
    (missing / "checkpoints").mkdir(parents=True)  # an empty checkpoints folder stays empty
    with pytest.raises(CheckpointError, match="No checkpoint found"):
        load_trained(missing, tiny_config("keyframes", data_dir))
    assert list((missing / "checkpoints").iterdir()) == []


def test_sampling_reads_only_the_weights_it_samples_with(data_dir, workdir):
    """load_trained reads the EMA weights alone (not the optimizer state and raw weights, three
    times as many arrays), and they equal the full restore's."""
    import orbax.checkpoint as ocp

    config = tiny_config("keyframes", data_dir, **{"train.num_samples": 0})
    full = Trainer(config, workdir).restore_or_init()
    trained = load_trained(workdir, config)
    assert trained.step == 4
    for got, want in zip(
        jax.tree.leaves(trained.params), jax.tree.leaves(full["ema_params"]), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), full
    )
    step, state, _ = Checkpointer(workdir).restore_latest(target, only=("params",))

    def leaves(tree):
        return jax.tree.leaves(tree, is_leaf=lambda x: x is ocp.PLACEHOLDER)

    assert step == 4 and all(x is not ocp.PLACEHOLDER for x in leaves(state["params"]))
    assert leaves(state["opt_state"]) and all(
        x is ocp.PLACEHOLDER for x in leaves(state["opt_state"])
    )


def test_kept_steps_outlive_the_newest_few_and_restore_by_step(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=1, async_save=False, keep_steps=(2,))
    for step in range(1, 5):
        ckpt.save(step, {"w": jnp.full((3,), float(step))}, {"step": step})
    ckpt.wait()
    assert ckpt.steps() == [2, 4]  # the newest, and step 2 kept for quality along training
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {"w": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=sharding)}
    step, state, _ = ckpt.restore_latest(target, at_step=2)
    assert step == 2 and np.asarray(state["w"]).tolist() == [2.0] * 3
    assert ckpt.restore_latest(target)[0] == 4
    with pytest.raises(
        CheckpointError, match=r"No checkpoint of step 3 .*kept: \[2, 4\].*keep_steps"
    ):
        ckpt.restore_latest(target, at_step=3)
