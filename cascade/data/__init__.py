"""Data: the embedded TFDS data sets, loading, the tf.data pipeline, and views of clips.

Layer: imports `cascade.configs` only (and `cascade.video_io`, `cascade.cli` in the
`python -m cascade.data` entry point, `__main__.py`; `cascade.video_io` in overlays.py).

  builders/    moving_digits and bouncing_shapes (+ sound), generated locally (nothing downloads)
  loading.py   TFDS builders and real data sets by name; built once, by process 0
  pipeline.py  sharded, seeded, resumable batches; `test_clips`, the one test-split reader
  views.py     what a stage sees of a clip: windows, strides, downsampling, extra images
  overlays.py  ground-truth states (positions, velocities, visibility) drawn over frames
"""
