"""Evaluation: metrics of generated videos and the cost of producing them.

Layer: imports training, sampling and everything below; never the entry points.

  fvd.py                FVD/KVD with the reference I3D protocol
  feature_distances.py  Fréchet distance and kernel MMD between feature sets (FID/FVD, KID/KVD)
  frames.py             PSNR/SSIM per frame
  digits.py             identity stability, label match, motion on moving_digits
  physics.py            teleports, permanence, ballistic residual on bouncing_shapes
  av_sync.py            audio onsets vs video impacts, audio statistics (bouncing_shapes + sound)
  cost.py               XLA FLOPs, sampling cost of a chain of stages
  benchmarking.py       timing helpers (median seconds, compiled FLOPs, peak matmul)
  evaluate.py           `--mode=evaluate` for a stage or a runner
  av_evaluate.py        `--mode=evaluate` for the audio-video stage: MP4s with sound, sync, audio stats
  continuation.py       `--condition=frames`: continue test clips, files and per-offset PSNR/SSIM
  continuation_cascade.py  the same for configs/cascade.py (keyframes extended, SR by window)
  continuation_latent.py   the same for a latent DiT / configs/single_stage.py (video frames 1 + 4k)
  continuation_quality.py  content metrics over an extended clip and FVD of its windows
  physics_scoring.py    per-clip scoring of tracked objects (step 3 of physics.physics_metrics)
  fvd_sanity.py         an entry point: FVD against known distortions
  i3d_bench.py          an entry point: I3D feature speed against an earlier revision
  av_sync_validation.py an entry point: the sync metric on real, shifted and shuffled sound
  audio_repr.py         an entry point: log-mel + Griffin-Lim round-trip quality
"""
