"""Evaluation: metrics of generated videos and the cost of producing them.

Layer: imports training, sampling and everything below; never the entry points.

  fvd.py                FVD/KVD with the reference I3D protocol
  frames.py             PSNR/SSIM per frame
  digits.py             identity stability, label match, motion on moving_digits
  physics.py            teleports, permanence, ballistic residual on bouncing_shapes
  cost.py               XLA FLOPs, sampling cost of a chain of stages
  benchmarking.py       timing helpers (median seconds, compiled FLOPs, peak matmul)
  evaluate.py           `--mode=evaluate` for a stage or a runner
  continuation.py       `--condition=frames`: continue test clips, files and per-offset PSNR/SSIM
  fvd_sanity.py         an entry point: FVD against known distortions
  i3d_bench.py          an entry point: I3D feature speed against an earlier revision
"""
