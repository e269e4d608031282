"""The VDM / Imagen Video / progressive-distillation ablations, each trained with several seeds
and judged against the paper with a bootstrap interval.

    python -m experiments.vdm_ablations --config=configs/experiments/vdm_ablations.py:cpu
    python -m experiments.vdm_ablations --config=configs/experiments/vdm_ablations.py:cpu \
        --config.ablations=cfg --config.seeds=5

Ablations (`config.ablations`, each runnable on its own):
  joint_training   0 / 4 / 8 extra independent images per clip (`view.extra_images`)
  cfg              classifier-free guidance w at sampling (`sample.guidance_scale`)
  temporal_mixing  attention / full 3D conv / temporal conv / none (`model.temporal_mixing`)
  parametrization  eps vs v prediction for the keyframe and the spatial-SR stage
  noise_aug        noise conditioning augmentation on / off for SR fed with keyframe samples
  distillation     progressive-distillation students at 8 / 4 / 2 steps vs the teacher with
                   DDIM at the same steps; the distilled chain's sampling time vs undistilled
(Reconstruction guidance vs replacement for extension: experiments/continuation_methods.py.)

Every measurement (one setting at one seed) is kept under OUT/runs/ with a marker; a rerun
reads finished ones back and trains nothing already trained (stages have markers too). Writes
OUT/results.md, settings.csv, verdicts.csv, results.json and ablations.png
(`vdm_ablations_report`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from experiments import expconfig, lab, summary, tables  # noqa: E402
from experiments import vdm_ablations_report as report  # noqa: E402

NAME = "vdm_ablations"
DEFAULT_CONFIG = "experiments/vdm_ablations:cpu"  # resolved in configs/, from any folder
ABLATIONS = (
    "joint_training",
    "cfg",
    "temporal_mixing",
    "parametrization",
    "noise_aug",
    "distillation",
)
PAPER = {
    "joint_training": "VDM: FVD 202 / 68 / 58 with 0 / 4 / 8 images per clip (lower with images)",
    "cfg": "VDM: IS 10.8 / 13.2 / 14.8 up and FVD 42 / 50 / 164 worse as w grows",
    "temporal_mixing": "VDM: factorized space-time attention; without temporal mixing worse",
    "parametrization": "Imagen Video: v converges faster, avoids colour shift (eps worse)",
    "noise_aug": "CDM / Imagen Video: essential for SR fed with base samples (off: worse)",
    "distillation": "PD: student beats DDIM at equal steps (FID 3.00 at 4 vs DDIM 13.36 at "
    "10); Imagen Video: distilled cascade 18x faster for a small loss",
}
MIXING = {
    "attention": "factorized space-time attention",
    "conv3d": "full 3D convolutions",
    "temporal_conv": "(2+1)D: temporal convolutions",
    "none": "none (per-frame image model)",
}
Setting = dict[str, Any]  # ablation, setting, view, runs (one (arrays, info) per seed)
Measure = Callable[[int], tuple[dict[str, np.ndarray], dict[str, Any]]]


class Ablations:
    """The ablations of one experiment config, sharing a `lab.Lab` (trained stages, labels,
    real features, finished runs)."""

    def __init__(self, exp: ml_collections.ConfigDict):
        self.exp = exp
        self.lab = lab.Lab(exp)
        self.seeds = list(range(exp.seeds))
        self.settings: list[Setting] = []
        self.comparisons: list[dict[str, Any]] = []

    # -- bookkeeping --------------------------------------------------------------------------
    def add(self, ablation: str, setting: str, view: str, run_key: str, measure: Measure) -> str:
        """Measure `setting` at every seed (finished runs read back from OUT/runs/run_key)."""
        runs = [
            self.lab.store.get(f"{run_key}/seed{s}", lambda s=s: measure(s)) for s in self.seeds
        ]
        self.settings.append({"ablation": ablation, "setting": setting, "view": view, "runs": runs})
        return setting

    def compare(self, ablation: str, reference: str, setting: str, metric: str, expected: int):
        """Judge `setting` against `reference` on `metric`; `expected` is the sign of
        setting - reference the paper reports (+1 up, -1 down)."""
        self.comparisons.append(
            {
                "ablation": ablation,
                "reference": reference,
                "setting": setting,
                "metric": metric,
                "expected": expected,
                "paper": PAPER[ablation],
            }
        )

    # -- sampling helpers -----------------------------------------------------------------------
    def keyframes(self, workdir_of: Callable[[int], Path], **sample: Any) -> Measure:
        """Measure a keyframe model (per seed) sampled with `sample` options."""

        def measure(seed: int):
            trained = self.lab.load(workdir_of(seed), **sample)
            labels = self.lab.labels(seed)
            videos = trained.sample({"label": labels}, lab.key(seed))
            return self.lab.measure(videos, labels), {"workdir": trained.workdir}

        return measure

    def base(self, seed: int, **overrides: Any) -> Path:
        return self.lab.trained("keyframes", seed, overrides)

    def chained(self, sr_of: Callable[[int], Path], low_of: Callable[[int], Any]) -> Measure:
        """Measure an SR model (per seed) fed with keyframe samples `low_of(seed)` [n, ...];
        seconds_per_video covers the SR stage and the keyframe stage (low_of's own timing)."""

        def measure(seed: int):
            low, low_seconds = low_of(seed)
            trained = self.lab.load(sr_of(seed))
            labels = self.lab.labels(seed)
            cond = {"label": labels, "cond": low}
            videos, seconds = self.lab.sample_timed(trained, cond, lab.key(seed))
            arrays = self.lab.measure(videos, labels)
            arrays["seconds_per_video"] = np.array([seconds + low_seconds])
            return arrays, {"workdir": trained.workdir}

        return measure

    def keyframe_samples(self, workdir_of: Callable[[int], Path], **sample: Any):
        def low_of(seed: int):
            trained = self.lab.load(workdir_of(seed), **sample)
            return self.lab.sample_timed(trained, {"label": self.lab.labels(seed)}, lab.key(seed))

        return low_of

    # -- the ablations --------------------------------------------------------------------------
    def joint_training(self) -> None:
        a, few = "joint_training", self.exp.joint_training.num_train
        names = []
        pools = [int(p) for p in self.exp.joint_training.image_pools]
        for images, pool in ((i, p) for i in self.exp.joint_training.images for p in pools):
            if not images and pool != pools[0]:
                continue  # without images there is no pool: one reference run
            overrides = {"view.extra_images": int(images), "data.num_train": few}
            name, key = f"{images} images / clip ({few} videos)", f"images{images}-videos{few}"
            if images and pool:  # images from many more clips than the videos (VDM's setting)
                overrides["data.image_pool"] = pool
                name = f"{images} images / clip from {pool} clips ({few} videos)"
                key += f"-pool{pool}"
            names.append(
                self.add(
                    a,
                    name,
                    "keyframes",
                    f"keyframes/{key}",
                    self.keyframes(lambda s, o=overrides: self.base(s, **o)),
                )
            )
        for name in names[1:]:
            self.compare(a, names[0], name, "fvd", -1)

    def cfg(self) -> None:
        a, names = "cfg", []
        for w in self.exp.cfg.scales:
            names.append(
                self.add(
                    a,
                    f"w = {w:g}",
                    "keyframes",
                    f"keyframes/base/w{w:g}",
                    self.keyframes(self.base, guidance_scale=float(w)),
                )
            )
        for name in names[1:]:
            self.compare(a, names[0], name, "inception_score", +1)
            self.compare(a, names[0], name, "label_match", +1)
            self.compare(a, names[0], name, "fvd", +1)

    def temporal_mixing(self) -> None:
        a, names = "temporal_mixing", []
        kinds = expconfig.names(self.exp.temporal_mixing.kinds, MIXING, "temporal_mixing.kinds")
        for kind in kinds:
            key = "keyframes/base/w0" if kind == "attention" else f"keyframes/mixing-{kind}/w0"
            names.append(
                self.add(
                    a,
                    MIXING[kind],
                    "keyframes",
                    key,
                    self.keyframes(lambda s, k=kind: self.base(s, **{"model.temporal_mixing": k})),
                )
            )
        for name in names[1:]:
            self.compare(a, names[0], name, "fvd", +1)
            self.compare(a, names[0], name, "identity_stability", -1)

    def parametrization(self) -> None:
        a = "parametrization"
        eps = {"diffusion.parametrization": "eps", "diffusion.loss": "eps_mse"}
        v = self.add(a, "keyframes, v", "keyframes", "keyframes/base/w0", self.keyframes(self.base))
        e = self.add(
            a, "keyframes, eps", "keyframes", "keyframes/eps/w0",
            self.keyframes(lambda s: self.base(s, **eps)),
        )  # fmt: skip
        self.compare(a, v, e, "fvd", +1)
        sr_names = []
        for label, overrides in (("v", {}), ("eps", eps)):
            sr_names.append(
                self.add(
                    a,
                    f"spatial SR, {label} (ground-truth input)",
                    "spatial_sr",
                    f"spatial_sr/{label}/ground_truth_input",
                    self.sr_on_ground_truth(
                        lambda s, o=overrides: self.lab.trained("spatial_sr", s, o)
                    ),
                )
            )
        self.compare(a, sr_names[0], sr_names[1], "psnr", -1)
        self.compare(a, sr_names[0], sr_names[1], "intensity_shift", +1)

    def sr_on_ground_truth(self, sr_of: Callable[[int], Path]) -> Measure:
        """An SR model given real low-res clips: per-clip PSNR and intensity shift against the
        real high-res clip, plus the usual metrics of its output."""

        def measure(seed: int):
            trained = self.lab.load(sr_of(seed))
            target = self.lab.real("spatial_sr", self.exp.seeds * self.lab.n)
            target = target[self.lab.seed_slice(seed)]
            cond, _, _ = trained.stage.trivial_baselines(target)
            labels = self.lab.labels(seed)
            videos = trained.sample({"label": labels, "cond": cond}, lab.key(seed))
            arrays = self.lab.measure(videos, labels)
            arrays["psnr"] = lab.psnr_per_clip(videos, target)
            arrays["intensity_shift"] = lab.intensity_shift(videos, target)
            return arrays, {"workdir": trained.workdir}

        return measure

    def noise_aug(self) -> None:
        a, names = "noise_aug", []
        low = self.keyframe_samples(self.base)
        off = {"sr.noise_aug": False, "model.use_aug_cond": False}
        for label, overrides in (("on", {}), ("off", off)):
            names.append(
                self.add(
                    a,
                    f"{label} (keyframe samples -> SR)",
                    "spatial_sr",
                    f"chain/base/sr-aug-{label}",
                    self.chained(lambda s, o=overrides: self.lab.trained("spatial_sr", s, o), low),
                )
            )
        self.compare(a, names[0], names[1], "fvd", +1)
        self.compare(a, names[0], names[1], "identity_stability", -1)

    def distillation(self) -> None:
        a, d = "distillation", self.exp.distillation
        for steps in d.student_steps:
            ddim = {"sampler": "ddim", "eta": 0.0, "steps": int(steps)}
            teacher = self.add(
                a, f"teacher, DDIM {steps} steps", "keyframes", f"keyframes/base/ddim{steps}",
                self.keyframes(self.base, **ddim),
            )  # fmt: skip
            student = self.add(
                a, f"student, {steps} steps", "keyframes", f"keyframes/student{steps}",
                self.keyframes(lambda s, k=int(steps): self.lab.distilled(self.base(s), s, k)),
            )  # fmt: skip
            self.compare(a, teacher, student, "fvd", -1)
        # The chain keyframes -> spatial SR: undistilled at the samplers' own steps, and with
        # both stages distilled to the fewest student steps.
        fewest = int(min(d.student_steps))
        sr = lambda s: self.lab.trained("spatial_sr", s)  # noqa: E731
        slow = self.add(
            a, "chain, undistilled", "spatial_sr", "chain/base/sr-aug-on",
            self.chained(sr, self.keyframe_samples(self.base)),
        )  # fmt: skip
        fast = self.add(
            a, f"chain, both stages distilled to {fewest} steps", "spatial_sr",
            f"chain/student{fewest}/sr-student{fewest}",
            self.chained(
                lambda s: self.lab.distilled(sr(s), s, fewest),
                self.keyframe_samples(lambda s: self.lab.distilled(self.base(s), s, fewest)),
            ),
        )  # fmt: skip
        self.compare(a, slow, fast, "seconds_per_video", -1)
        self.compare(a, slow, fast, "fvd", +1)


def check(exp: ml_collections.ConfigDict) -> None:
    """Refuse an experiment config that cannot run, naming the key, before anything trains."""
    from cascade.configs import ConfigError

    expconfig.names(exp.ablations, ABLATIONS, "ablations")
    expconfig.names(exp.temporal_mixing.kinds, MIXING, "temporal_mixing.kinds")
    for key in ("seeds", "videos_per_seed", "batch_size", "bootstrap.samples"):
        expconfig.at_least(exp, key, 1)
    expconfig.at_least(exp, "real_videos", 2)
    for key in ("keyframes", "spatial_sr"):
        expconfig.at_least(exp.train_steps, key, 1)
        expconfig.at_least(exp.sample_steps, key, 1)
    if exp.seeds * exp.videos_per_seed > exp.data.num_test or exp.real_videos > exp.data.num_test:
        raise ConfigError(
            f"config.data.num_test={exp.data.num_test} holds too few test clips: seeds x "
            f"videos_per_seed = {exp.seeds * exp.videos_per_seed} and real_videos = "
            f"{exp.real_videos} must both fit."
        )
    steps = exp.distillation.teacher_steps
    for s in exp.distillation.student_steps:
        if s < 1 or s >= steps or steps % s or (steps // s) & (steps // s - 1):
            raise ConfigError(
                f"config.distillation.student_steps: {s} is not teacher_steps={steps} halved "
                "a whole number of times."
            )
    if not 0 < exp.bootstrap.confidence < 1:
        raise ConfigError(
            f"config.bootstrap.confidence must be in (0, 1), got {exp.bootstrap.confidence}."
        )


def run(exp: ml_collections.ConfigDict) -> dict[str, Any]:
    """Every selected ablation (trained, sampled, measured, or read back), summarised and
    written to exp.out; returns what results.json holds."""
    check(exp)
    start = time.perf_counter()
    out = Path(exp.out)
    out.mkdir(parents=True, exist_ok=True)
    ablations = Ablations(exp)
    for name in expconfig.names(exp.ablations, ABLATIONS, "ablations"):
        getattr(ablations, name)()
    views = {s["view"] for s in ablations.settings}  # real features only where needed
    real = {view: ablations.lab.real_features(view) for view in sorted(views)}
    gifs = report.write_gifs(out, ablations.settings)
    result = {
        "experiment": NAME,
        "config": exp.to_dict(),
        **summary.summarize(ablations.settings, ablations.comparisons, real, exp),
        "paper": {k: PAPER[k] for k in expconfig.names(exp.ablations, ABLATIONS, "ablations")},
        "runs": {"reused": ablations.lab.store.reused, "computed": ablations.lab.store.computed},
        "train_seconds_this_call": ablations.lab.train_seconds,
        "seconds": time.perf_counter() - start,
        "fvd_protocol": ablations.lab.protocol.to_dict() if exp.fvd else None,
        "gifs": gifs,
    }
    result["environment"] = tables.environment(result["seconds"])
    report.write_outputs(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""

    def body(exp: ml_collections.ConfigDict) -> None:
        run(exp)
        print((Path(exp.out) / "results.md").read_text())

    return expconfig.main(body, check, DEFAULT_CONFIG, __doc__, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
