"""Progressive distillation of a trained stage (any cascade stage, the latent DiT, or the
causal DiT, whose student learns the rollout's chunk step).

    python -m cascade.distillation --config=configs/distill.py --workdir=OUT \
        --config.distill.teacher_workdir=WORKDIR_OF_A_TRAINED_STAGE

The data, model and schedule come from the teacher's checkpoint; this file sets
the rounds (start_steps -> end_steps, halving) and the optimizer.
"""

import ml_collections

from cascade import configs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return configs.apply_preset(_config(), arg, PRESETS, file="configs/distill.py")


def _config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.stage = "distill"
    config.seed = 0
    config.distill = configs.distill_section()
    config.train = configs.train_section()
    # A lower learning rate than training; no warm-up: the student starts from the teacher.
    # No EMA: it would average students of different rounds (different step counts).
    config.train.update(learning_rate=1e-4, warmup_steps=0, ema_decay=0.0, num_samples=4)
    # Set by the rounds (rounds x distill.steps_per_round, a checkpoint per round): not keys
    # here, so a value given for them cannot be silently ignored.
    del config.train["steps"]
    del config.train["checkpoint_every"]
    config.mesh = configs.mesh_section()
    return config


def _default(config):
    pass


def _tiny(config):
    config.distill.update(start_steps=8, end_steps=2, steps_per_round=3, compare_videos=2)
    config.train.update(batch_size=8, log_every=1, num_samples=0, learning_rate=1e-3)


def _quick(config):
    config.distill.update(start_steps=64, end_steps=4, steps_per_round=200)
    config.train.update(batch_size=8, learning_rate=3e-4)


PRESETS = {"default": _default, "tiny": _tiny, "quick": _quick}
