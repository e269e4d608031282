#!/usr/bin/env bash
# The accelerator checks of the README's "On a GPU" section, as one script for one lease of a
# GPU machine (about 8 minutes on an H200, most of it XLA compilation):
#   1. correctness of the accelerator path: bf16 compute (float32 parameters) and the DiT's
#      attention kernels (einsum, XLA, cuDNN fused) against float32 (`cascade.accelerator_check`);
#   2. training-step and sampling-loop speed of the bench presets in float32 and bf16, and the
#      DiT with each attention kernel; MFU against the matmul peak measured in the same process
#      in the same dtype (`cascade.bench`);
#   3. the bench presets at a batch that fills the chip (bf16);
#   4. whole pipelines' sampling at the quickstart's presets (`cascade.sampling_bench`).
# Every record is one JSON line appended to $OUT/accelerator.jsonl as soon as it is measured,
# so a run stopped at its time limit still returns what it finished.
#
#   OUT=/tmp/accel PRESET=tiny bash experiments/accelerator_bench.sh   # the same, on CPU, small
set -uo pipefail
OUT=${OUT:-/tmp/accelerator_bench}
PRESET=${PRESET:-bench}
BIG_BATCH=${BIG_BATCH:-32}
PY=${PY:-python3}
mkdir -p "$OUT"
LOG=$OUT/accelerator.jsonl
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2

run() {  # run a module, keep its JSON lines, show a one-line summary per record
  local started=$SECONDS
  "$PY" -m "$@" 2>>"$OUT/stderr.log" | grep '^{' | tee -a "$LOG" |
    "$PY" -c 'import json,sys
for l in sys.stdin:
    r = json.loads(l)
    keys = ("compute_dtype", "attention_impl", "loss_rel_diff", "grad_rel_diff", "step_time_s",
            "achieved_gflops", "peak_matmul_gflops", "mfu", "seconds_per_video", "batch_size")
    print(r["name"], {k: (round(r[k], 5) if isinstance(r[k], float) else r[k]) for k in keys if k in r})'
  echo "  ($1 ${*:2}: $((SECONDS - started)) s)"
}

{ nvidia-smi -L 2>/dev/null; "$PY" -c 'import jax, flax; print("jax", jax.__version__, "flax", flax.__version__, jax.devices())'; } | tee "$OUT/machine.txt"

run cascade.accelerator_check --config=configs/latent_dit.py:$PRESET
run cascade.bench --config=configs/latent_dit.py:$PRESET --iters=10 --sample_steps=8
for impl in xla cudnn; do
  run cascade.bench --config=configs/latent_dit.py:$PRESET --iters=10 --sample_steps=8 \
    --config.model.dtype=bfloat16 --config.model.attention_impl=$impl
done
for stage in keyframes video_vae; do
  run cascade.bench --config=configs/$stage.py:$PRESET --iters=10 --sample_steps=8
  run cascade.bench --config=configs/$stage.py:$PRESET --iters=10 --sample_steps=8 \
    --config.model.dtype=bfloat16
done
run cascade.bench --config=configs/latent_dit.py:$PRESET --iters=10 --sample_steps=-1 \
  --config.model.dtype=bfloat16 --config.model.attention_impl=cudnn --config.train.batch_size=$BIG_BATCH
run cascade.bench --config=configs/keyframes.py:$PRESET --iters=10 --sample_steps=-1 \
  --config.model.dtype=bfloat16 --config.train.batch_size=$BIG_BATCH
run cascade.accelerator_check --config=configs/keyframes.py:$PRESET
run cascade.accelerator_check --config=configs/video_vae.py:$PRESET
"$PY" -m cascade.sampling_bench --preset=quick --student_steps=8,4 --markdown 2>>"$OUT/stderr.log" |
  tee "$OUT/sampling_bench.txt" | grep -v '^{'
echo "done in $SECONDS s"
