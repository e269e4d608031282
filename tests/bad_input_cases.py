"""The bad inputs a new user might try: one `Case` per mistake, for every entry point
(`tests/bad_inputs.py` runs them; `tests/test_bad_inputs.py` asserts on each)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Case:
    entry: str  # module whose main(argv) runs
    what: str  # the mistake, in words
    argv: tuple[str, ...]  # {root}: the case's folder (also the cwd); {configs}: configs/
    expect: str  # a piece of the message the user must see


M, B, D = "cascade.main", "cascade.bench", "cascade.distillation"
BASE = "--config={configs}/keyframes.py:tiny"
WD = "--workdir={root}/run"


def _main(*args: str) -> tuple[str, ...]:
    return (BASE, WD, *args)


CASES = (
    Case(M, "unknown key (README's example)", _main("--config.train.stpes=5"), "'train.steps'"),
    Case(M, "unknown section", _main("--config.trian.steps=5"), "no key 'trian'"),
    Case(
        M, "unknown preset", ("--config={configs}/keyframes.py:huge", WD), "unknown preset 'huge'"
    ),
    Case(M, "missing config file", ("--config={configs}/nope.py", WD), "does not exist"),
    Case(M, "config file with a syntax error", ("--config={root}/bad.py", WD), "syntax error"),
    Case(M, "config file without get_config", ("--config={root}/noget.py", WD), "get_config"),
    Case(M, "no --config", (WD,), "--config is required"),
    Case(M, "no --workdir", (BASE,), "--workdir is required"),
    Case(M, "empty --workdir", (BASE, "--workdir="), "--workdir is required"),
    Case(M, "unknown flag", _main("--bogus"), "Unknown command line flag 'bogus'"),
    Case(M, "unknown mode", _main("--mode=fly"), "train|sample|evaluate"),
    Case(M, "integer key given text", _main("--config.train.steps=abc"), "is an integer"),
    Case(M, "boolean key given text", _main("--config.train.async_checkpointing=maybe"), "boolean"),
    Case(M, "a section set to a value", _main("--config.train=5"), "is a section"),
    Case(M, "negative train.steps", _main("--config.train.steps=-5"), "train.steps must be >= 1"),
    Case(M, "zero batch size", _main("--config.train.batch_size=0"), "batch_size must be >= 1"),
    Case(M, "negative learning rate", _main("--config.train.learning_rate=-1e-3"), "> 0"),
    Case(M, "ema_decay = 1", _main("--config.train.ema_decay=1.0"), "ema_decay must be in"),
    Case(M, "checkpoint_every = 0", _main("--config.train.checkpoint_every=0"), ">= 1"),
    Case(M, "sample.steps = 0", _main("--config.sample.steps=0"), "sample.steps must be >= 1"),
    Case(M, "zero frame stride", _main("--config.view.frame_stride=0"), "view.frame_stride"),
    Case(M, "view longer than the clips", _main("--config.view.frames=64"), "data.frames=8"),
    Case(M, "resolution that does not divide", _main("--config.view.resolution=5"), "divide"),
    Case(
        M,
        "image pool without extra images (ignored)",
        _main("--config.data.image_pool=16"),
        "nothing would read it",
    ),
    Case(
        M,
        "extra_images on an SR stage (ignored)",
        ("--config={configs}/temporal_sr.py:tiny", WD, "--config.view.extra_images=2"),
        "keyframe stage feature",
    ),
    Case(
        M,
        "guidance on an unconditional stage (ignored)",
        ("--config={configs}/spatial_sr.py:tiny", WD, "--config.sample.guidance_scale=2"),
        "unconditional",
    ),
    Case(
        M,
        "label dropout on an unconditional stage (ignored)",
        ("--config={configs}/temporal_sr.py:tiny", WD, "--config.diffusion.label_dropout=0.1"),
        "unconditional",
    ),
    Case(
        M,
        "SR training window longer than the clip",
        ("--config={configs}/spatial_sr.py:tiny", WD, "--config.sr.crop_frames=64"),
        "cannot be longer than the clip",
    ),
    Case(M, "unknown data set", _main("--config.data.name=imagenet"), "not a known data set"),
    Case(M, "mesh axis of 0", _main("--config.mesh.data=0"), "config.mesh.data"),
    Case(M, "mesh that does not divide the devices", _main("--config.mesh.data=3"), "devices"),
    Case(
        M,
        "batch that does not split over devices",
        _main("--config.train.batch_size=3"),
        "divisible",
    ),
    Case(M, "bad regex in mesh rules", _main("--config.mesh.rules=[('(', (None,))]"), "bad regex"),
    Case(M, "data_dir is a file", _main("--config.data.data_dir={root}/a_file"), "is a file"),
    Case(M, "workdir is a file", (BASE, "--workdir={root}/a_file"), "is a file"),
    Case(M, "workdir inside a file", (BASE, "--workdir={root}/a_file/run"), "is a file"),
    Case(M, "workdir not writable", (BASE, "--workdir=/sys/cascade-run"), "cannot write"),
    Case(M, "remote workdir (gs://)", (BASE, "--workdir=gs://bucket/run"), "remote paths"),
    Case(M, "sample before training", _main("--mode=sample"), "No checkpoint found"),
    Case(
        M,
        "sample from an empty workdir",
        (BASE, "--workdir={root}/empty", "--mode=sample"),
        "No checkpoint",
    ),
    Case(
        M, "--num_samples=0", _main("--mode=sample", "--num_samples=0"), "num_samples must be >= 1"
    ),
    Case(
        M,
        "train a cascade config",
        ("--config={configs}/cascade.py", WD),
        "not trained itself",
    ),
    Case(
        M,
        "cascade whose stages are not trained",
        (
            "--config={configs}/cascade.py",
            WD,
            "--mode=sample",
            "--config.stages.keyframes.workdir={root}/empty",
        ),
        "config.stages.keyframes.workdir",
    ),
    Case(
        M,
        "aug_t on the cascade's keyframe stage (ignored)",
        (
            "--config={configs}/cascade.py",
            WD,
            "--mode=sample",
            "--config.stages.keyframes.aug_t=0.2",
        ),
        "no key 'aug_t'",
    ),
    Case(B, "bench a cascade config", ("--config={configs}/cascade.py",), "none"),
    Case(
        B, "bench with --iters=0", ("--config={configs}/keyframes.py:tiny", "--iters=0"), "--iters"
    ),
    Case(
        B,
        "cuDNN attention in float32",
        ("--config={configs}/latent_dit.py:tiny", "--config.model.attention_impl=cudnn"),
        "needs dtype 'bfloat16'",
    ),
    Case(
        "cascade.accelerator_check",
        "accelerator check of a cascade config",
        ("--config={configs}/cascade.py",),
        "has none",
    ),
    Case(
        "cascade.sampling_bench",
        "sampling bench with 0 student steps",
        ("--student_steps=8,0",),
        "--student_steps must be positive integers",
    ),
    Case(
        D, "distil without a teacher", ("--config={configs}/distill.py:tiny", WD), "teacher_workdir"
    ),
    Case(
        D,
        "distil from an untrained teacher",
        ("--config={configs}/distill.py:tiny", WD, "--config.distill.teacher_workdir={root}/empty"),
        "No checkpoint found",
    ),
    Case(
        D,
        "distillation rounds that do not halve",
        (
            "--config={configs}/distill.py:tiny",
            WD,
            "--config.distill.teacher_workdir={root}/empty",
            "--config.distill.start_steps=6",
        ),
        "power of two",
    ),
    Case(
        D,
        "unknown distillation weighting",
        (
            "--config={configs}/distill.py:tiny",
            WD,
            "--config.distill.teacher_workdir={root}/empty",
            "--config.distill.weighting=l1",
        ),
        "weighting",
    ),
    Case(D, "distil with a stage config", (BASE, WD), "distillation config"),
    Case(
        "cascade.data",
        "unknown data set",
        ("--dataset=imagenet", "--data_dir={root}/data"),
        "Unknown data set",
    ),
    Case(
        "cascade.data", "zero preview clips", ("--num_examples=0", "--data_dir={root}/data"), ">= 1"
    ),
    Case("cascade.data", "data_dir is a file", ("--data_dir={root}/a_file",), "is a file"),
    Case(
        "cascade.data",
        "sound on a data set without sound",
        ("--dataset=moving_digits", "--sound", "--data_dir={root}/data"),
        "has no sound",
    ),
    Case(
        "cascade.data",
        "sound previews at another frame rate",
        ("--dataset=bouncing_shapes", "--sound", "--fps=12", "--data_dir={root}/data"),
        "timed for 8 frames per second",
    ),
    Case("cascade.quickstart", "--out is a file", ("--out={root}/a_file",), "is a file"),
    Case("cascade.quickstart", "zero training steps", ("--out={root}/qs", "--steps=0"), "--steps"),
    Case(
        "cascade.evaluation.fvd_sanity",
        "FVD of 1 clip",
        ("--num_videos=1", "--data_dir={root}/data"),
        ">= 2",
    ),
    Case(
        "cascade.evaluation.fvd_sanity",
        "clip too short for I3D",
        ("--clip_length=4", "--data_dir={root}/data"),
        ">= 9",
    ),
    Case(
        "experiments.vdm_ablations",
        "unknown preset",
        ("--config={configs}/experiments/vdm_ablations.py:huge", "--config.out={root}/x"),
        "unknown preset 'huge'",
    ),
    Case(
        "experiments.vdm_ablations",
        "unknown ablation",
        ("--config.ablations=cfg,gan", "--config.out={root}/x"),
        "'gan'",
    ),
    Case(
        "experiments.vdm_ablations",
        "zero seeds",
        ("--config.seeds=0", "--config.out={root}/x"),
        "config.seeds must be >= 1",
    ),
    Case(
        "experiments.cascade_vs_single_stage",
        "negative guidance",
        ("--config.guidance_scale=-1", "--config.out={root}/x"),
        "guidance_scale",
    ),
    Case(
        "experiments.long_video",
        "zero sampling seeds",
        ("--seeds=0", "--out={root}/x"),
        "--seeds=0: 0 is not a positive integer",
    ),
    # --condition=frames (conditional generation, cascade/evaluation/continuation.py): refused
    # before the workdir is looked at, so an untrained {root}/run is enough.
    Case(
        M,
        "more given frames than the window",
        _main("--mode=sample", "--condition=frames", "--given_frames=4"),
        "1 <= given_frames < 4",
    ),
    Case(
        M,
        "unreachable target length",
        _main("--mode=sample", "--condition=frames", "--given_frames=2", "--target_frames=5"),
        "--target_frames=5 cannot be reached",
    ),
    Case(
        M,
        "negative reconstruction weight",
        _main("--mode=sample", "--condition=frames", "--w_r=-1"),
        "--w_r=-1.0 must be >= 0",
    ),
    Case(
        M,
        "w_r with replacement (ignored)",
        _main("--mode=sample", "--condition=frames", "--method=replacement", "--w_r=3"),
        "would be ignored",
    ),
    Case(
        M,
        "condition frames while training",
        _main("--condition=frames"),
        "--mode=sample or --mode=evaluate",
    ),
    Case(
        M,
        "latent DiT given its whole window",
        (
            "--config={configs}/latent_dit.py:tiny",
            WD,
            "--mode=sample",
            "--condition=frames",
            "--given_frames=5",
        ),
        "given_frames < 5",
    ),
    Case(
        M,
        "causal DiT with no cached context",
        ("--config={configs}/causal_dit.py:tiny", WD, "--config.causal.window=0"),
        "config.causal.window must be >= 1",
    ),
    Case(
        M,
        "causal DiT config with bidirectional attention",
        ("--config={configs}/causal_dit.py:tiny", WD, "--config.model.causal_chunk=0"),
        "config.model.causal_chunk must be >= 1",
    ),
    Case(
        M,
        "joint audio-video stage on clips without sound",
        ("--config={configs}/av_dit.py:tiny", WD, "--config.data.sound=False"),
        "config.data.sound=False",
    ),
    Case(
        M,
        "unknown joint / two-stage audio-video mode",
        ("--config={configs}/av_dit.py:tiny", WD, "--config.av.mode=audio_first"),
        "config.av.mode = 'audio_first' is not allowed",
    ),
    Case(
        M,
        "condition frames on a VAE",
        ("--config={configs}/video_vae.py:tiny", WD, "--mode=sample", "--condition=frames"),
        "needs a keyframe stage",
    ),
    Case(
        M,
        "reconstruction guidance with the single-stage runner",
        (
            "--config={configs}/single_stage.py",
            WD,
            "--mode=sample",
            "--condition=frames",
            "--method=reconstruction",
        ),
        "--method=replacement (the default here) is the method",
    ),
    Case(
        M,
        "conditioning video of the wrong resolution",
        _main("--mode=sample", "--condition=frames", "--condition_video={root}/clip16.npy"),
        "expected [F, 8, 8, 1]",
    ),
    Case(
        M,
        "continue zero clips",
        _main("--mode=evaluate", "--condition=frames", "--config.train.num_samples=0"),
        "how many test clips",
    ),
    Case(
        M,
        "conditioning method with a runner config",
        ("--config={configs}/cascade.py", WD, "--mode=sample", "--method=replacement"),
        "only with --condition=frames",
    ),
)
