"""Training: what turns a stage into trained weights, and loads them back.

Layer: imports configs, data, diffusion, models and stages; never sampling (runners),
evaluation or the entry points.

  parallel.py      the device mesh, sharding rules, multi-host init and gathers
  train_state.py   optimizer, EMA, the jitted train step, parameter counts
  checkpoints.py   orbax keep-N checkpoints: mismatches refused, corruption quarantined
  metrics_log.py   TensorBoard + metrics.jsonl
  sampler.py       a stage's sampling loop jitted on the mesh (previews, trained stages)
  trainer.py       the one trainer for every stage
  trained.py       load_trained(workdir) and building a stage with what it needs
  frozen_vae.py    the frozen video VAE a latent DiT trains and samples on
  distillation.py  progressive distillation as a trainer
"""
