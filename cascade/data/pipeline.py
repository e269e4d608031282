"""Input pipeline: deterministic, host-sharded, resumable batches of clips.

Order of the examples a host sees. Let n be the number of clips per host (the
split's clips divided evenly over hosts, remainder dropped) and b the per-host
batch size (`batch_size`: what this host yields; the global batch is b times
process_count). The host reads an endless
stream of positions p = 0, 1, 2, ...; position p is clip
`perm_e(p mod n)` of epoch e = p div n, where perm_e is a pseudo-random
permutation derived only from (seed, e, process index); batch k is positions
[k b, (k + 1) b). Batches may straddle an epoch boundary; every epoch still
visits each clip exactly once. Hence batch k of a run started at `start_step=k`
equals batch k of a fresh run, and starting at step k costs nothing: the
permutation is computed per index (`tf.random.experimental.index_shuffle`), and
clips are read by index from ArrayRecord files.

Data sets stored without random access (e.g. a real TFDS set prepared as
TFRecord) fall back to streaming: each epoch is the host's shard shuffled with a
buffer of `data_cfg.shuffle_buffer` seeded by (seed, epoch); resuming still
gives the same batches but reads (and drops) the clips of the current epoch
before the start position.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import tensorflow as tf

from cascade.data import loading

_ENDLESS = 2**62
_POOL_SEED_OFFSET = 1_000_003  # the image pool's order: its own stream, same resumability


def _epoch_seed(seed: int, epoch: tf.Tensor, process_index: int) -> tf.Tensor:
    """A stateless [2] seed for (seed, epoch, process index)."""
    s = tf.constant([seed, 0], tf.int64)
    s = tf.random.experimental.stateless_fold_in(s, tf.cast(epoch, tf.int64))
    return tf.random.experimental.stateless_fold_in(s, tf.constant(process_index, tf.int64))


def _to_model_format(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """uint8 video -> float32 in [-1, 1]; label -> int32; int16 audio (data.sound) -> float32
    in [-1, 1); other features unchanged."""
    video = tf.cast(batch["video"], tf.float32) / 127.5 - 1.0
    out = {**batch, "video": video, "label": tf.cast(batch["label"], tf.int32)}
    if "audio" in batch:
        out["audio"] = tf.cast(batch["audio"], tf.float32) / 32768.0
    return out


def image_pool_config(data_cfg: Any) -> dict[str, Any]:
    """The data config of the image pool: the same set built with `image_pool` training clips.

    `data.image_pool` > 0 (joint image-video training with few videos and many images, as
    VDM trains): every training batch also carries "pool_video" [B, T, H, W, C] and
    "pool_label" [B], a batch of clips from this larger set, which the keyframe stage takes
    its extra images from (`view.extra_images`) instead of the batch's own clips.
    """
    items = data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else dict(data_cfg)
    return {**items, "num_train": int(items["image_pool"]), "image_pool": 0}


def make_dataset(
    data_cfg: Any,
    *,
    split: str,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
    repeat: bool = True,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> tf.data.Dataset:
    """The tf.data.Dataset behind `batch_iterator` (same arguments)."""
    pi = jax.process_index() if process_index is None else int(process_index)
    pc = jax.process_count() if process_count is None else int(process_count)
    if not 0 <= pi < pc:
        raise ValueError(f"process_index={pi} must be in [0, process_count={pc}).")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    clips = dict(
        split=split,
        batch_size=int(batch_size),
        start_step=int(start_step),
        pi=pi,
        pc=pc,
        repeat=repeat,
        shuffle=shuffle,
        drop_remainder=drop_remainder,
    )
    ds = _clips_dataset(data_cfg, seed=seed, **clips)
    if int(loading.cfg_get(data_cfg, "image_pool", 0) or 0) and split == "train":
        pool_ds = _clips_dataset(
            image_pool_config(data_cfg), seed=seed + _POOL_SEED_OFFSET, **clips
        )
        ds = tf.data.Dataset.zip((ds, pool_ds)).map(
            lambda own, other: {
                **own,
                "pool_video": other["video"],
                "pool_label": other["label"],
            }
        )
    options = tf.data.Options()
    options.deterministic = True
    # No autotuning thread: deleting an iterator waits for it, and at the end of a stage's
    # training that wait was ~45 s of nothing (py-spy: the main thread in ~RootDataset's
    # thread wrapper; gone with autotuning off). AUTOTUNE parallelism then means one call
    # per core, plenty for these clips.
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _clips_dataset(
    data_cfg: Any, *, split, batch_size, seed, start_step, pi, pc, repeat, shuffle, drop_remainder
) -> tf.data.Dataset:
    """Host pi's batches of one data set in model format (`make_dataset` adds the image pool,
    the options and the prefetch once)."""
    source = loading.open_source(data_cfg, split)
    n = source.num_examples // pc
    if n < 1 or (drop_remainder and not repeat and n < batch_size):
        raise ValueError(
            f"{source.name!r} split {split!r} has {source.num_examples} clips: too few for "
            f"{pc} process(es) with a per-process batch of {batch_size}."
        )
    start = start_step * batch_size
    if not repeat and start >= n:
        raise ValueError(f"start_step={start_step} is past the single epoch of {n} clips.")

    if source.random_access:
        positions = tf.data.Dataset.range(start, _ENDLESS if repeat else n)

        def clip_index(p):
            epoch, i = p // n, p % n
            if shuffle:
                i = tf.random.experimental.index_shuffle(i, _epoch_seed(seed, epoch, pi), n - 1)
            return i * pc + pi  # host pi owns clips pi, pi + pc, pi + 2 pc, ...

        ds = source.gather(positions.map(clip_index))
    else:
        ds = _streaming(source, data_cfg, seed, start, n, pi, pc, repeat, shuffle)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.map(_to_model_format, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _streaming(source, data_cfg, seed, start, n, pi, pc, repeat, shuffle) -> tf.data.Dataset:
    """Epochs of the host's shard, each shuffled with a (seed, epoch) buffer."""
    base = source.dataset(shard_index=pi, num_shards=pc)
    card = int(base.cardinality())
    n = card if card > 0 else n
    buffer = int(loading.cfg_get(data_cfg, "shuffle_buffer", 1024))

    def epoch_ds(epoch):
        if not shuffle:
            return base
        return base.shuffle(buffer, seed=_epoch_seed(seed, epoch, pi)[0])

    first = start // n
    epochs = tf.data.Dataset.range(first, _ENDLESS if repeat else first + 1)
    return epochs.flat_map(epoch_ds).skip(start - first * n)


def batch_iterator(
    data_cfg: Any,
    *,
    split: str,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
    repeat: bool = True,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> Iterator[dict[str, Any]]:
    """Batches of clips as numpy arrays, for this host.

    Args:
      data_cfg: data config (name, data_dir, frames, resolution, num_train, num_test,
        shuffle_buffer; see `cascade.data.loading`).
      split: 'train' or 'test'.
      batch_size: clips per batch on this host (the per-process batch; the global
        batch is batch_size * process_count, e.g. train.batch_size // process_count).
      seed: shuffling seed; the stream is a pure function of it.
      start_step: index of the first batch (to resume a run).
      process_index, process_count: host sharding (default: jax's).
      repeat: endless epochs (True) or one pass over the split (False).
      shuffle: per-epoch permutation (True) or stored order (False).
      drop_remainder: drop a final partial batch (only matters with repeat=False).
    Yields:
      {"video": float32 [B, T, H, W, C] in [-1, 1], "label": int32 [B], ...extra
      features of the data set (e.g. "states", "positions"; "audio" float32 [B, S] in
      [-1, 1) with data.sound) with a leading B; with data.image_pool, "pool_video" and
      "pool_label": a batch of the image pool's clips, `image_pool_config`}.
    """
    ds = make_dataset(
        data_cfg,
        split=split,
        batch_size=batch_size,
        seed=seed,
        start_step=start_step,
        process_index=process_index,
        process_count=process_count,
        repeat=repeat,
        shuffle=shuffle,
        drop_remainder=drop_remainder,
    )
    yield from ds.as_numpy_iterator()


def test_clips(data_cfg: Any, num: int, split: str = "test") -> dict[str, np.ndarray]:
    """The first `num` clips of the test split, in stored order: the one reader of real test clips.

    Sampling conditioning, the runners' labels and the real reference of every evaluation
    read their clips here, so clip i, its label and the sample conditioned on that label
    always line up. The same on every host (no host sharding: each host evaluates the same
    reference) and independent of any seed or batch size.

    Returns:
      {"video": float32 [num, T, H, W, C] in [-1, 1], "label": int32 [num], ...extra
      features of the data set with a leading num}.
    """
    num = int(num)
    if num < 1:
        raise ValueError(f"Asked for {num} test clips; ask for at least 1.")
    source = loading.open_source(data_cfg, split)
    if num > source.num_examples:
        raise ValueError(
            f"{source.name!r} split {split!r} has {source.num_examples} clips but {num} were "
            f"asked for; ask for at most {source.num_examples} (or build a larger split, e.g. "
            "config.data.num_test for the embedded sets)."
        )
    ds = source.dataset().take(num).batch(num).map(_to_model_format)
    return next(ds.as_numpy_iterator())


def to_device(batch: Any, sharding: Any) -> Any:
    """Places a host-local batch on devices as global jax Arrays.

    Args:
      batch: pytree of numpy arrays, leading axis = this host's part of the batch.
      sharding: one `jax.sharding.Sharding` for every leaf (e.g.
        NamedSharding(mesh, P(("data", "fsdp")))), or a pytree of them matching
        `batch`. The global batch is the concatenation of all hosts' batches.
    Returns:
      The same pytree of jax.Array with leading axis = global batch size.
    """
    if isinstance(sharding, jax.sharding.Sharding):
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
    return jax.tree.map(
        lambda s, x: jax.make_array_from_process_local_data(s, x),
        sharding,
        batch,
        is_leaf=lambda s: isinstance(s, jax.sharding.Sharding),
    )
