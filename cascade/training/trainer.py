"""One trainer for every stage: mesh, shardings, EMA, orbax, logs, resume.

    trainer = Trainer(config, workdir)
    state = trainer.train()

Resuming is automatic: a workdir that holds checkpoints continues from the
newest readable one, and because both the data order and the step's random
key are functions of (seed, step), the resumed run is the uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from cascade import video_io
from cascade.configs import ConfigError
from cascade.data import pipeline
from cascade.stages.stage import model_graphdef
from cascade.training import parallel
from cascade.training.checkpoints import Checkpointer
from cascade.training.metrics_log import MetricsLog
from cascade.training.sampler import Sampler
from cascade.training.train_state import (
    TrainState,
    init_state,
    learning_rate_schedule,
    make_optimizer,
    make_train_step,
)
from cascade.training.trained import build_stage_from_config


class NonFiniteLossError(RuntimeError):
    """Training stopped after repeated non-finite losses, gradients or optimizer updates."""


def nonfinite_cause(metrics: dict[str, Any]) -> str:
    """What was not finite in a refused step: the loss, else the gradient, else the update."""
    if not bool(metrics["loss_finite"]):
        return "loss"
    if not bool(metrics["grad_finite"]):
        return "gradient"
    return "update"


_FLAGS = ("finite", "loss_finite", "grad_finite", "update_finite")  # not logged as scalars
# Trainer.time_spent's keys: the first step (compilation + first batch), waiting for input
# batches, the other steps, checkpoint writes, sample videos.
TIME_SPENT = ("first_step_with_compile", "input_pipeline", "train_steps", "checkpoints", "samples")

_PLURAL = {"loss": "losses", "gradient": "gradients", "update": "updates"}
_ADVICE = {
    "loss": "Check the data for NaNs/infs, or lower config.train.learning_rate",
    "gradient": "Enable config.train.grad_clip or lower config.train.learning_rate",
    "update": "The loss and gradients were finite but the optimizer's update overflowed: "
    "lower config.train.learning_rate",
}


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(config.to_json_best_effort())


def host_batch_rng(seed: int, step: int) -> np.random.Generator:
    """The host-side randomness of a step (views, windows): a function of (seed, step, host)."""
    return np.random.default_rng([seed, step, jax.process_index()])


class Trainer:
    """Builds everything a stage needs to train on a mesh and runs the loop."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path, devices=None):
        self.config = config
        self.workdir = Path(workdir).expanduser()
        self.time_spent = dict.fromkeys(TIME_SPENT, 0.0)  # filled by train()
        self.stage = build_stage_from_config(config)
        self.mesh = parallel.make_mesh(config.mesh, devices)
        t = config.train
        dp = parallel.data_parallel_size(self.mesh)
        if t.batch_size % dp or t.batch_size % jax.process_count():
            raise ConfigError(
                f"config.train.batch_size={t.batch_size} must be divisible by the {dp} "
                f"data-parallel devices and the {jax.process_count()} hosts."
            )
        self.tx = make_optimizer(t)
        self.graphdef = model_graphdef(self.stage)
        self._init = functools.partial(init_state, self.stage, self.tx)
        abstract = jax.eval_shape(self._init, jax.random.key(config.seed))
        specs = parallel.param_specs(
            abstract, self.mesh, [tuple(r) for r in config.mesh.rules], config.mesh.fsdp_min_size
        )
        self.state_shardings = parallel.shardings_for(specs, self.mesh)
        self.abstract_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract,
            self.state_shardings,
        )
        self.batch_sharding = parallel.batch_sharding(self.mesh)
        self.train_step = self.build_train_step()
        self.checkpointer = Checkpointer(
            self.workdir,
            keep=t.keep_checkpoints,
            async_save=t.async_checkpointing,
            keep_steps=t.get("keep_steps", ()),
        )
        self.sampler = Sampler(self.stage, self.graphdef, self.mesh)

    def build_train_step(self):
        """The jitted step(state, batch) -> (state, metrics), state donated."""
        step_fn = make_train_step(
            self.stage,
            self.graphdef,
            self.tx,
            ema_decay=self.config.train.ema_decay,
            param_shardings=self.state_shardings["params"],
        )
        replicated = parallel.replicated(self.mesh)
        jitted = jax.jit(
            step_fn,
            in_shardings=(self.state_shardings, self.batch_sharding, replicated),
            out_shardings=(self.state_shardings, replicated),
            donate_argnums=0,
        )
        seed = np.int32(self.config.seed)  # an argument: one compilation serves every seed
        return lambda state, batch: jitted(state, batch, seed)

    def before_step(self, step: int, state: TrainState) -> None:
        """Hook for objectives that change during a run (distillation rounds); no-op here."""

    # -- state ----------------------------------------------------------------------------------
    def fresh_state(self) -> TrainState:
        init = jax.jit(self._init, out_shardings=self.state_shardings)
        return init(jax.random.key(self.config.seed))

    def restore_or_init(self) -> TrainState:
        """The newest usable checkpoint, or a fresh state when the workdir holds none.

        Raises CheckpointError (nothing moved) when the checkpoints there were written by
        another config, and when every one is unreadable: never silently restarts at step 0.
        """
        restored = self.checkpointer.restore_latest(self.abstract_state)
        if restored is None:
            return self.fresh_state()
        step, state, _ = restored
        print(f"Resuming {self.stage.name} from step {step} in {self.checkpointer.directory}")
        return state

    def save(self, state: TrainState, step: int) -> None:
        meta = {"stage": self.stage.name, "step": step, "config": config_to_dict(self.config)}
        meta["measured"] = self.stage.measured_config()  # e.g. the latent DiT's latent scale
        self.checkpointer.save(step, state, meta, force=True)

    # -- data -----------------------------------------------------------------------------------
    def batches(self, start_step: int, split: str = "train"):
        """Device batches for steps start_step, start_step + 1, ... (same as a fresh run's)."""
        local = self.config.train.batch_size // jax.process_count()
        clips = pipeline.batch_iterator(
            self.config.data,
            split=split,
            batch_size=local,
            seed=self.config.seed,
            start_step=start_step,
        )
        for step, raw in enumerate(clips, start=start_step):
            batch = self.stage.make_batch(raw, host_batch_rng(self.config.seed, step))
            if step == start_step:
                self.stage.check_batch(batch)
            yield pipeline.to_device(batch, self.batch_sharding)

    # -- loop -----------------------------------------------------------------------------------
    def train(self, *, stop_after: int | None = None) -> TrainState:
        """Train to config.train.steps (or stop early after `stop_after` steps, as a kill would)."""
        t = self.config.train
        state = self.restore_or_init()
        start = int(jax.device_get(state["step"]))
        if start >= t.steps:
            print(f"{self.stage.name}: already trained to step {start} (train.steps={t.steps}).")
            return state
        writer = MetricsLog(self.workdir, enabled=jax.process_index() == 0)
        writer.text("config", self.config.to_json_best_effort(indent=2), start)
        bad_in_a_row, causes = 0, []  # causes: what was non-finite in this run of bad steps
        last_saved = start
        end = t.steps if stop_after is None else min(t.steps, start + stop_after)
        bar = tqdm(
            total=t.steps,
            initial=start,
            desc=f"train {self.stage.name}",
            disable=jax.process_index() != 0,
            dynamic_ncols=True,
        )
        tick = time.perf_counter()
        # Where this run's wall time went (seconds); `time_spent` keeps it for callers such as
        # the quickstart's closing summary. The first step holds the compilation.
        spent = self.time_spent = dict.fromkeys(TIME_SPENT, 0.0)
        try:
            batches = self.batches(start)
            for step in range(start, end):
                clock = time.perf_counter()
                self.before_step(step, state)
                batch = next(batches)
                waited = time.perf_counter() - clock
                state, metrics = self.train_step(state, batch)
                metrics = jax.device_get(metrics)
                ran = time.perf_counter() - clock - waited
                if step == start:
                    spent["first_step_with_compile"] += waited + ran
                else:
                    spent["input_pipeline"] += waited
                    spent["train_steps"] += ran
                done = step + 1
                if not bool(metrics["finite"]):
                    bad_in_a_row += 1
                    cause = nonfinite_cause(metrics)
                    causes.append(cause)
                    print(
                        f"WARNING: step {done}: non-finite {cause} (loss={metrics['loss']}, "
                        f"grad_norm={metrics['grad_norm']}); update skipped."
                    )
                    if bad_in_a_row >= t.max_nonfinite_steps:
                        raise NonFiniteLossError(
                            f"{self.stage.name}: {bad_in_a_row} consecutive non-finite "
                            f"{' / '.join(_PLURAL[c] for c in dict.fromkeys(causes))} up to step "
                            f"{done}. No bad update was applied and the last checkpoint (step "
                            f"{last_saved}) in {self.checkpointer.directory} is intact. "
                            f"{_ADVICE[cause]}, then rerun to resume."
                        )
                else:
                    bad_in_a_row, causes = 0, []
                bar.update(1)
                if done % t.log_every == 0 or done == end:
                    now = time.perf_counter()
                    scalars = {k: float(v) for k, v in metrics.items() if k not in _FLAGS}
                    scalars["steps_per_s"] = t.log_every / max(now - tick, 1e-9)
                    # The rate this step's update used (the schedule counts from step 0).
                    scalars["learning_rate"] = float(learning_rate_schedule(t)(step))
                    tick = now
                    writer.scalars(scalars, done)
                    bar.set_postfix(loss=f"{scalars['loss']:.4f}")
                clock = time.perf_counter()
                if (
                    done % t.checkpoint_every == 0
                    or done == t.steps
                    or done in t.get("keep_steps", ())
                ):
                    self.save(state, done)
                    last_saved = done
                spent["checkpoints"] += time.perf_counter() - clock
                clock = time.perf_counter()
                if t.sample_every and done % t.sample_every == 0 and done < t.steps:
                    self.write_samples(state, done, writer)
                spent["samples"] += time.perf_counter() - clock
            clock = time.perf_counter()
            if end == t.steps and t.num_samples > 0:
                self.write_samples(state, end, writer)
            spent["samples"] += time.perf_counter() - clock
        finally:
            bar.close()
            try:
                self.checkpointer.wait()  # a failed background write surfaces here
            finally:
                writer.close()
        return state

    def write_samples(self, state: TrainState, step: int, writer: MetricsLog) -> Path:
        """Sample with the EMA weights, conditioned on test clips; write GIF/MP4/grid + TB image."""
        cond = self.sampler.test_conditioning(self.config, self.config.train.num_samples)
        key = jax.random.key(self.config.seed + step)
        videos = self.stage.to_video(self.sampler.sample(state["ema_params"], cond, key))
        out = self.workdir / "samples"
        path = video_io.write_videos(videos, out, f"step_{step:07d}")
        writer.video_grid("samples", videos, step)
        writer.video("samples_video", videos, step)
        return path
