"""Progressive distillation (Salimans & Ho 2022) as a trainer: `DistillationTrainer`.

Round r halves the sampling step count: a student that starts from its teacher's
weights learns to take one step where the teacher (the previous round's student)
takes two. The loss itself is the stage's (`Stage.distill_loss`); this module owns
the rounds, the teachers saved for resumes, and the student-vs-teacher report.
The command line is `python -m cascade.distillation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from cascade import json_io
from cascade.configs import ConfigError
from cascade.diffusion.distill import rounds
from cascade.stages.stage import merge_model
from cascade.training import parallel
from cascade.training.train_state import TrainState, make_train_step
from cascade.training.trained import config_from_checkpoint, load_trained
from cascade.training.trainer import Trainer


def student_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The teacher's stage config, with the distillation's train/mesh/distill sections and a
    deterministic `end_steps` sampler (what the distilled checkpoint will sample with)."""
    d = config.distill
    if not d.teacher_workdir:
        raise ConfigError(
            "config.distill.teacher_workdir is empty: name a trained stage's workdir."
        )
    student = config_from_checkpoint(d.teacher_workdir)
    if student.stage == "latent_dit" and d.weighting != "auto":
        raise ConfigError(
            f"config.distill.weighting={d.weighting!r}: the teacher in {d.teacher_workdir} is a "
            "flow-matching latent_dit, whose student has one loss (velocity MSE); leave it 'auto'."
        )
    n = rounds(d.start_steps, d.end_steps)
    student.train = ml_collections.ConfigDict(config.train.to_dict())
    student.train.steps = n * d.steps_per_round
    student.train.checkpoint_every = d.steps_per_round
    student.mesh = ml_collections.ConfigDict(config.mesh.to_dict())
    student.seed = config.seed
    student.distill = ml_collections.ConfigDict(d.to_dict())
    return with_student_sampler(student, d.end_steps)


def with_student_sampler(
    config: ml_collections.ConfigDict, steps: int
) -> ml_collections.ConfigDict:
    """`config` (changed in place) sampling as a distilled student does: deterministically
    (Euler for flow matching, DDIM with eta 0 otherwise) at `steps`."""
    if config.stage == "latent_dit":
        config.sample.update(sampler="euler", steps=steps)
    else:
        config.sample.update(sampler="ddim", eta=0.0, steps=steps)
    return config


class DistillationTrainer(Trainer):
    """The trainer with a distillation objective whose teacher changes every round."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path, devices=None):
        super().__init__(student_config(config), workdir, devices)
        if not self.stage.supports_distillation:
            raise ConfigError(f"cannot distil a {self.stage.name} stage (no sampler to distil).")
        d = self.config.distill
        self.num_rounds = rounds(d.start_steps, d.end_steps)
        self.teacher_dir = self.workdir / "teachers"
        self._round = -1
        self._teacher_params: Any = None

    # -- objective ------------------------------------------------------------------------------
    def student_steps(self, round_index: int) -> int:
        return self.config.distill.start_steps // 2 ** (round_index + 1)

    def distill_loss(self, model, batch, key, teacher_params, student_steps):
        teacher = merge_model(self.graphdef, teacher_params)
        return self.stage.distill_loss(
            model,
            teacher,
            batch,
            key,
            student_steps=student_steps,
            weighting=self.config.distill.weighting,
        )

    def build_train_step(self):
        step_fn = make_train_step(
            self.stage,
            self.graphdef,
            self.tx,
            ema_decay=self.config.train.ema_decay,
            param_shardings=self.state_shardings["params"],
            objective=self.distill_loss,
        )
        replicated = parallel.replicated(self.mesh)
        jitted = jax.jit(
            step_fn,
            in_shardings=(
                self.state_shardings,
                self.batch_sharding,
                replicated,
                self.state_shardings["params"],
                replicated,
            ),
            out_shardings=(self.state_shardings, parallel.replicated(self.mesh)),
            donate_argnums=0,
        )
        # The trainer calls step(state, batch); the seed, the round's teacher and its step
        # count ride along as real arguments (not constants): one compilation serves every
        # round and every seed.
        seed = np.int32(self.config.seed)
        return lambda state, batch: jitted(
            state,
            batch,
            seed,
            self._teacher_params,
            jnp.asarray(self.student_steps(self._round)),
        )

    # -- rounds ---------------------------------------------------------------------------------
    def before_step(self, step: int, state: TrainState) -> None:
        round_index = step // self.config.distill.steps_per_round
        if round_index != self._round:
            self._round = round_index
            self._teacher_params = self._round_teacher(round_index, state)
            print(
                f"distillation round {round_index + 1}/{self.num_rounds}: "
                f"{2 * self.student_steps(round_index)} -> {self.student_steps(round_index)} steps"
            )

    def fresh_state(self) -> TrainState:
        """The student starts as a copy of the teacher (its EMA weights), fresh optimizer."""
        state = super().fresh_state()
        teacher = load_trained(self.config.distill.teacher_workdir, mesh=self.mesh)
        params = jax.device_put(teacher.params, self.state_shardings["params"])
        # Separate buffers: the step donates its state, and one buffer cannot be donated twice.
        copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))
        return dict(state, params=copy(params), ema_params=copy(params))

    def _round_teacher(self, round_index: int, state: TrainState):
        """Round r's teacher: the student as it was when round r began (saved, for resumes)."""
        path = (self.teacher_dir / f"round_{round_index}").resolve()
        checkpointer = ocp.StandardCheckpointer()
        if path.exists():
            target = jax.tree.map(
                lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                self.abstract_state["params"],
                self.state_shardings["params"],
            )
            return checkpointer.restore(path, target)
        teacher = jax.tree.map(jnp.copy, state["params"])
        checkpointer.save(path, teacher)
        checkpointer.wait_until_finished()
        return teacher

    # -- report ---------------------------------------------------------------------------------
    def compare(self) -> dict[str, Any]:
        """Student (end_steps) and teacher (end_steps) against the teacher at start_steps, same
        noise and conditioning: RMSE in [-1, 1] units (lower = closer to the teacher)."""
        d = self.config.distill
        student = load_trained(self.workdir, mesh=self.mesh)
        teacher_config = config_from_checkpoint(d.teacher_workdir)
        teacher_config.sample.update(student.config.sample.to_dict())
        teacher = load_trained(d.teacher_workdir, teacher_config, mesh=self.mesh)
        cond = student.sampler.test_conditioning(student.config, d.compare_videos)
        key = jax.random.key(self.config.seed)
        reference = teacher.sample(cond, key, steps=d.start_steps)
        rmse = lambda a: float(np.sqrt(np.mean((a - reference) ** 2)))  # noqa: E731
        report = {
            "start_steps": d.start_steps,
            "end_steps": d.end_steps,
            "student_rmse_to_teacher_many_steps": rmse(student.sample(cond, key)),
            "teacher_few_steps_rmse_to_teacher_many_steps": rmse(
                teacher.sample(cond, key, steps=d.end_steps)
            ),
        }
        report["student_closer"] = (
            report["student_rmse_to_teacher_many_steps"]
            < report["teacher_few_steps_rmse_to_teacher_many_steps"]
        )
        json_io.write_json(self.workdir / "distill_report.json", report)
        print(json_io.dumps(report))
        return report
