"""Where `cascade_vs_single_stage` samples its pipelines: at the preset's sampling steps and
whole training, with fewer sampling steps (quality against sampling cost), and from
checkpoints kept along training (quality against training FLOPs). Each point is a row of the
report, named by `pipeline_name`.
"""

from __future__ import annotations

import ml_collections

from experiments.budget import CASCADE

# Sampling steps: the presets' (cascade.py:quick for the cascade at `quick`; its temporal
# SR stage's guidance is the quickstart's alone: the experiments' stage is unconditional).
SAMPLE_STEPS = {
    "tiny": {"keyframes": 8, "temporal_sr": 8, "spatial_sr": 8, "latent_dit": 8},
    "quick": {"keyframes": 64, "temporal_sr": 32, "spatial_sr": 32, "latent_dit": 32},
}


def sample_steps(preset: str, fraction: float = 1.0) -> dict[str, int]:
    """Every sampled stage's steps at `preset` times `fraction` (rounded, at least 1)."""
    return {name: max(1, round(s * fraction)) for name, s in SAMPLE_STEPS[preset].items()}


def pipeline_name(kind: str, fraction: float, budget: float = 1.0) -> str:
    """'cascade' / 'single_stage' at the preset's sampling steps and whole training, else e.g.
    'cascade at 0.5x steps' (sampled with fewer steps) or 'cascade at 0.5x training' (from the
    checkpoints at half its training)."""
    if budget != 1.0:
        return f"{kind} at {budget:g}x training"
    return kind if fraction == 1.0 else f"{kind} at {fraction:g}x steps"


# The stages read along training at a budget fraction f: every cascade stage at f of its
# steps; of the single stage the DiT (trained on the finished VAE, which it needs whole).
ALONG_TRAINING = (*CASCADE, "latent_dit")


def budget_steps(steps: int, fraction: float) -> int:
    """The step at `fraction` of a run of `steps` (rounded, at least 1)."""
    return max(1, round(fraction * steps))


def sampled_points(exp: ml_collections.ConfigDict) -> list[tuple[float, float]]:
    """(sampling-steps fraction, training fraction) of every pipeline row: the preset's
    point, fewer sampling steps (quality against sampling cost), earlier checkpoints
    (quality against training FLOPs)."""
    points = [(1.0, 1.0)] + [(f, 1.0) for f in exp.step_fractions]
    return points + [(1.0, b) for b in exp.budget_fractions]
