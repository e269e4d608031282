"""One process of tests/test_multihost.py: train the tiny keyframe stage, resume, sample.

    python tests/multihost_worker.py --workdir=W --data_dir=D --steps=N --out=OUT.npz
        [--sample] [--emulate_hosts=2]

Joins a multi-process run when the launcher env says so (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID) through `cascade.training.parallel.maybe_initialize_distributed`,
exactly as the entry points do. The device count comes from the XLA_FLAGS the parent sets.
With --emulate_hosts=H a single process feeds the global batches that H processes would
feed (each host's shard of the data, each host's batch randomness), so its result is the
reference a real H-process run must equal. Writes OUT (with "{pid}" replaced by the process
index): the final params (gathered), the step and, with --sample, samples of the EMA weights.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from cascade.training import parallel  # noqa: E402

NUM_SAMPLES = 4


def tiny_config(data_dir: str, steps: int):
    """configs/keyframes.py:tiny, smaller still, on a (data=1, fsdp=2) mesh that shards params."""
    from cascade import configs

    config = configs.load("keyframes:tiny")
    config.data.data_dir = data_dir
    # One U-Net level without attention: compilation, not arithmetic, is what this test waits on.
    config.model.update(channel_mults=(1,), attn_resolutions=())
    config.mesh.update(data=1, fsdp=2, fsdp_min_size=64)
    config.train.update(steps=steps, checkpoint_every=2, log_every=2, num_samples=0)
    return config


def emulating_trainer(hosts: int):
    """A Trainer whose global batch is what `hosts` processes would each feed (host order)."""
    import jax
    import numpy as np

    from cascade.data import pipeline
    from cascade.training.trainer import Trainer

    class EmulatedHosts(Trainer):
        def batches(self, start_step: int, split: str = "train"):
            seed, local = self.config.seed, self.config.train.batch_size // hosts
            streams = [
                pipeline.batch_iterator(
                    self.config.data,
                    split=split,
                    batch_size=local,
                    seed=seed,
                    start_step=start_step,
                    process_index=i,
                    process_count=hosts,
                )
                for i in range(hosts)
            ]
            for step, raws in enumerate(zip(*streams, strict=False), start=start_step):
                # train.host_batch_rng(seed, step) as process i computes it.
                parts = [
                    self.stage.make_batch(raw, np.random.default_rng([seed, step, i]))
                    for i, raw in enumerate(raws)
                ]
                batch = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
                yield pipeline.to_device(batch, self.batch_sharding)

    return EmulatedHosts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sample", action="store_true")
    parser.add_argument("--emulate_hosts", type=int, default=0)
    args = parser.parse_args()

    parallel.maybe_initialize_distributed()  # first: before anything touches a device

    import jax
    import numpy as np

    from cascade.training.trained import load_trained
    from cascade.training.trainer import Trainer

    config = tiny_config(args.data_dir, args.steps)
    cls = emulating_trainer(args.emulate_hosts) if args.emulate_hosts else Trainer
    state = cls(config, args.workdir).train()
    out = {
        f"param_{i}": x for i, x in enumerate(jax.tree.leaves(parallel.to_host(state["params"])))
    }
    out["step"] = np.asarray(parallel.to_host(state["step"]))
    if args.sample:
        trained = load_trained(args.workdir, config)  # the checkpoint just written, re-read
        labels = np.arange(NUM_SAMPLES, dtype=np.int32)
        out["samples"] = trained.sample({"label": labels}, jax.random.key(7))
    np.savez(args.out.replace("{pid}", str(jax.process_index())), **out)


if __name__ == "__main__":
    main()
