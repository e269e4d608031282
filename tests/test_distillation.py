"""Progressive distillation of a tiny trained keyframe stage: the few-step student beats the teacher
run at the same few steps (distance to the teacher's many-step samples, same noise)."""

import json

import numpy as np
import pytest
from conftest import tiny_config

from cascade.configs import ConfigError, load
from cascade.diffusion.distill import rounds
from cascade.training.checkpoints import Checkpointer
from cascade.training.distillation import DistillationTrainer
from cascade.training.trained import load_trained
from cascade.training.trainer import Trainer


def distill_config(teacher_workdir, **distill):
    config = load("distill:tiny")
    config.distill.teacher_workdir = str(teacher_workdir)
    config.distill.update(distill)
    return config


@pytest.mark.slow
def test_four_step_student_is_closer_to_teacher_than_teacher_at_four_steps(data_dir, tmp_path):
    teacher = tmp_path / "teacher"
    Trainer(
        tiny_config(
            "keyframes",
            data_dir,
            **{
                "train.steps": 60,
                "train.learning_rate": 3e-3,
                "train.num_samples": 0,
                "train.checkpoint_every": 60,
            },
        ),
        teacher,
    ).train()
    config = distill_config(
        teacher, start_steps=16, end_steps=4, steps_per_round=60, compare_videos=8
    )
    config.train.learning_rate = 2e-3
    trainer = DistillationTrainer(config, tmp_path / "student")
    trainer.train(stop_after=70)  # "killed" in round 2; its teacher was saved at step 60
    assert Checkpointer(tmp_path / "student").steps() == [60]
    trainer = DistillationTrainer(config, tmp_path / "student")
    trainer.train()
    report = trainer.compare()
    print("distillation report:", json.dumps(report))
    assert report["student_closer"], report
    # The result is an ordinary keyframe-stage checkpoint that samples in 4 DDIM steps.
    student = load_trained(tmp_path / "student")
    assert student.config.sample.steps == 4 and student.config.sample.sampler == "ddim"
    videos = student.sample({"label": np.zeros(2, np.int32)}, __import__("jax").random.key(0))
    assert videos.shape == (2, 4, 8, 8, 1) and np.all(np.isfinite(videos))


def test_round_arithmetic_and_bad_configs(tmp_path):
    assert rounds(64, 4) == 4 and rounds(8, 4) == 1
    with pytest.raises(ConfigError, match="power of two"):
        rounds(12, 4)
    with pytest.raises(ConfigError, match="teacher_workdir is empty"):
        DistillationTrainer(distill_config(""), tmp_path)
    with pytest.raises(Exception, match="No checkpoint found"):
        DistillationTrainer(distill_config(tmp_path / "nothing"), tmp_path / "out")
