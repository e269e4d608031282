"""Progressive distillation (Salimans & Ho 2022) of a trained stage into a few-step sampler.

    python -m cascade.distillation --config=configs/distill.py --workdir=OUT \
        --config.distill.teacher_workdir=WORKDIR_OF_A_TRAINED_STAGE

Works for every Gaussian stage of the cascade (base, TSR, SSR: as Imagen Video
distilled each of its models) and for the flow-matching latent DiT. Round r
halves the step count: a student that starts from its teacher's weights learns
to take one step where the teacher (the previous round's student) takes two,
from `start_steps` down to `end_steps`. Each round lasts `steps_per_round`
optimizer steps through the one trainer (mesh, EMA, checkpoints, resume).

The result in OUT is an ordinary checkpoint of the same stage whose config
samples deterministically (DDIM / Euler) in `end_steps` steps, so
`--mode=sample`, the cascade runner and the single-stage runner use it as is.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402

from cascade import parallel  # noqa: E402
from cascade.configs import ConfigError  # noqa: E402
from cascade.diffusion import distill, flow, gaussian  # noqa: E402
from cascade.stages.gaussian import GaussianStage  # noqa: E402
from cascade.stages.latent_dit import LatentDiTStage  # noqa: E402
from cascade.train import Trainer  # noqa: E402
from cascade.train_state import TrainState, make_train_step, merge_model  # noqa: E402
from cascade.trained import config_from_checkpoint, load_trained  # noqa: E402


def distill_section(teacher_workdir: str = "") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "teacher_workdir": teacher_workdir,
            "start_steps": 64,  # the teacher's deterministic sampler
            "end_steps": 4,  # the student's
            "steps_per_round": 500,
            "compare_videos": 8,  # samples for the student-vs-teacher report
            # Loss weighting of a Gaussian student: "auto" = the teacher's diffusion.loss, or
            # any of gaussian.WEIGHTINGS (Salimans & Ho: "snr_trunc", max(SNR, 1) on the x
            # error). A flow-matching student has one loss (velocity MSE): "auto" only.
            "weighting": "auto",
        }
    )


def rounds(start_steps: int, end_steps: int) -> int:
    ratio = start_steps // end_steps
    if end_steps < 1 or start_steps % end_steps or ratio & (ratio - 1) or ratio < 2:
        raise ConfigError(
            f"config.distill: start_steps={start_steps} must be end_steps={end_steps} times a "
            "power of two >= 2 (each round halves the step count)."
        )
    return int(math.log2(ratio))


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
    if student.stage == "latent_dit":
        student.sample.update(sampler="euler", steps=d.end_steps)
    else:
        student.sample.update(sampler="ddim", eta=0.0, steps=d.end_steps)
    return student


class DistillationTrainer(Trainer):
    """The trainer with a distillation objective whose teacher changes every round."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path, devices=None):
        super().__init__(student_config(config), workdir, devices)
        if not isinstance(self.stage, (GaussianStage, LatentDiTStage)):
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
        stage = self.stage
        teacher = merge_model(self.graphdef, teacher_params)
        x = batch["video"]
        k_u, k_eps, k_cond = jax.random.split(key, 3)
        u = distill.sample_student_u(k_u, x.shape[0], student_steps)
        eps = jax.random.normal(k_eps, x.shape, x.dtype)
        cond = stage.cond_from_batch(batch)
        if isinstance(stage, LatentDiTStage):
            shift = self.config.sample.shift
            z = flow.flow_interpolate(x, eps=eps, t=flow.shift_time(u, shift))
            target = distill.flow_distill_target(
                stage.velocity_fn(teacher, cond), z, u, student_steps=student_steps, shift=shift
            )
            v = stage.velocity_fn(model, cond)(z, target["t"])
            loss = jnp.mean(distill.flow_distill_loss(v, target))
        else:
            p = self.config.diffusion.parametrization
            z = gaussian.q_sample(x, eps=eps, logsnr=stage.schedule(u))
            target = distill.gaussian_distill_target(
                stage.denoiser(teacher, cond, k_cond),
                z,
                u,
                student_steps=student_steps,
                schedule=stage.schedule,
                parametrization=p,
            )
            out = stage.denoiser(model, cond, k_cond)(z, target["logsnr"])
            weighting = self.config.distill.weighting
            if weighting == "auto":
                weighting = self.config.diffusion.loss
            loss = jnp.mean(distill.gaussian_distill_loss(out, target, p, weighting))
        return loss, {"loss": loss}

    def build_train_step(self):
        step_fn = make_train_step(
            self.stage,
            self.graphdef,
            self.tx,
            seed=self.config.seed,
            ema_decay=self.config.train.ema_decay,
            param_shardings=self.state_shardings["params"],
            objective=self.distill_loss,
        )
        jitted = jax.jit(
            step_fn,
            in_shardings=(
                self.state_shardings,
                self.batch_sharding,
                self.state_shardings["params"],
                parallel.replicated(self.mesh),
            ),
            out_shardings=(self.state_shardings, parallel.replicated(self.mesh)),
            donate_argnums=0,
        )
        # The trainer calls step(state, batch); the round's teacher and step count ride along
        # as real arguments (not constants), so one compilation serves every round.
        return lambda state, batch: jitted(
            state, batch, self._teacher_params, jnp.asarray(self.student_steps(self._round))
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
        (self.workdir / "distill_report.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
        return report


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Distil (resuming if workdir has checkpoints) and report student vs teacher."""
    trainer = DistillationTrainer(config, workdir)
    trainer.train()
    return trainer.compare()


FLAGS = None  # the command line's flags, defined only when run as a program


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    from absl import flags

    from cascade import cli

    global FLAGS
    if FLAGS is None:
        FLAGS = cli.new_flags()
        cli.define_config(
            FLAGS, "Distillation config, e.g. configs/distill.py (set distill.teacher_workdir)."
        )
        flags.DEFINE_string(
            "workdir",
            None,
            "Local directory the distilled stage is written to (resumes if it holds a checkpoint).",
            flag_values=FLAGS,
        )

    def body(args: cli.Args) -> None:
        if args.config.stage != "distill":
            raise ConfigError(
                f"cascade.distillation needs a distillation config (configs/distill.py); got a "
                f"{args.config.stage} config. Train stages with python -m cascade.main."
            )
        cli.check_config_paths(args.config, workdir=args.workdir, mode="train")
        run(args.config, args.workdir)

    return cli.entry(body, FLAGS, __doc__, argv, required=("workdir",), config=True)


if __name__ == "__main__":
    import sys

    sys.exit(main())
