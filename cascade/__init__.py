"""cascade: a JAX research framework for video diffusion.

Historical cascades (keyframe 3D U-Net -> temporal SR -> spatial SR) and the modern
single-stage latent DiT (causal video VAE + flow-matching DiT + distillation),
trained from config files on the same data and measured with the same metrics.

The package follows the data flow, one layer per row of `LAYERS` (lowest first).
A module may import its own layer and the ones below it, never one above
(tests/test_layers.py checks every import, including those inside functions):

  configs, json_io,      config schema and sections (pure data); strict JSON files;
  video_io               writing videos
  data, diffusion,       datasets and the views stages train on; diffusion and flow
  models                 math; networks
  stages                 network + objective + views, one class per kind of model
  training               mesh and sharding, train state, checkpoints, the trainer,
                         trained stages and the frozen VAE they may need, distillation
  sampling               runners that chain trained stages into videos
  evaluation             FVD, content and physics metrics, cost, benchmarks
  entry points           main (train/sample/evaluate a config), bench, sampling_bench,
                         accelerator_check, quickstart, distillation, python -m cascade.data;
                         cli and config checks

`experiments/` (outside the package) sits above all of them.
"""

__version__ = "0.1.0"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("cascade.configs", "cascade.json_io", "cascade.video_io"),
    ("cascade.data", "cascade.diffusion", "cascade.models"),
    ("cascade.stages",),
    ("cascade.training",),
    ("cascade.sampling",),
    ("cascade.evaluation",),
    (
        "cascade.cli",
        "cascade.console",
        "cascade.config_checks",
        "cascade.config_overrides",
        "cascade.main",
        "cascade.bench",
        "cascade.sampling_bench",
        "cascade.accelerator_check",
        "cascade.quickstart",
        "cascade.distillation",
        "cascade.data.__main__",
        "cascade.evaluation.fvd_sanity",
        "cascade.evaluation.i3d_bench",
        "cascade.evaluation.av_sync_validation",
        "cascade.evaluation.audio_repr",
        "cascade.evaluation.label_sensitivity",
    ),
)
