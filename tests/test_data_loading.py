"""Data layer without the embedded builders' data: loading errors, the real TFDS sets on mock
data (moving_mnist, bair_robot_pushing_small, ucf101), and the views of a batch."""

from __future__ import annotations

import copy
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from test_data import clips, data_cfg  # tests/ is on sys.path

from cascade.data import loading, pipeline, views


def test_loading_errors(tmp_path):
    with pytest.raises(ValueError, match="Known data sets: moving_digits, bouncing_shapes"):
        loading.open_source(data_cfg("kinetics600", tmp_path), "train")
    with pytest.raises(FileNotFoundError) as err:
        loading.open_source(data_cfg("ucf101", tmp_path), "train")
    msg = str(err.value)
    assert str(tmp_path) in msg and f"tfds build ucf101 --data_dir={tmp_path}" in msg
    with pytest.raises(FileNotFoundError, match="bair_robot_pushing_small"):
        loading.open_source(data_cfg("bair_robot_pushing_small", tmp_path), "test")
    with pytest.raises(ValueError, match="Unknown split"):
        loading.open_source(data_cfg("moving_digits", tmp_path), "validation")
    with pytest.raises(KeyError, match="num_train"):
        loading.open_source(ml_collections.ConfigDict(dict(name="moving_digits")), "train")
    assert loading.num_classes("moving_digits") == 10
    assert loading.num_classes("ucf101/ucf101_1") == 101


def _fake_prepared(data_dir, name: str, splits: dict[str, int]) -> None:
    """Writes the metadata a prepared TFDS set has (the mock then serves the records)."""
    builder = tfds.builder(name, data_dir=str(data_dir))
    builder.info.set_splits(
        tfds.core.SplitDict(
            [tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0) for s, n in splits.items()]
        )
    )
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)


def test_real_tfds_sets_on_mock_data(tmp_path):
    _fake_prepared(tmp_path, "moving_mnist", {"test": 10})
    _fake_prepared(tmp_path, "bair_robot_pushing_small", {"train": 6, "test": 6})
    for name, channels in (("moving_mnist", 1), ("bair_robot_pushing_small", 3)):
        cfg = data_cfg(name, tmp_path, frames=8, resolution=32)
        with tfds.testing.mock_data(num_examples=6, data_dir=str(tmp_path)):
            ex = clips(cfg)[0]
            assert ex["video"].shape == (8, 32, 32, channels) and ex["video"].dtype == np.uint8
            assert ex["label"] == 0
            run = pipeline.batch_iterator(cfg, split="train", batch_size=2, seed=1)
            first = [next(run) for _ in range(5)]
            resumed = next(
                pipeline.batch_iterator(cfg, split="train", batch_size=2, seed=1, start_step=4)
            )
            np.testing.assert_array_equal(first[4]["video"], resumed["video"])
            assert first[0]["video"].shape == (2, 8, 32, 32, channels)
        with pytest.raises(ValueError, match="frames"):
            with tfds.testing.mock_data(num_examples=2, data_dir=str(tmp_path)):
                loading.open_source(data_cfg(name, tmp_path, frames=40), "train")

    # ucf101: variable length, 64x96 frames -> first 8 frames, centre crop, area resize.
    _fake_prepared(tmp_path, "ucf101", {"train": 2, "test": 2})
    lengths = [12, 5]  # the second clip is too short: its last frame repeats

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        def gen():
            for i, n in enumerate(lengths):
                t = np.arange(n, dtype=np.uint8)[:, None, None, None]
                x = np.arange(96)[None, None, :, None] // 32
                video = np.broadcast_to(t * 20 + x, (n, 64, 96, 3)).astype(np.uint8)
                yield {"video": video, "label": np.int64(7 + i)}

        sig = {
            "video": tf.TensorSpec((None, 64, 96, 3), tf.uint8),
            "label": tf.TensorSpec((), tf.int64),
        }
        return tf.data.Dataset.from_generator(gen, output_signature=sig)

    cfg = data_cfg("ucf101", tmp_path, frames=8, resolution=32)
    with tfds.testing.mock_data(as_dataset_fn=as_dataset, data_dir=str(tmp_path)):
        out = clips(cfg)
    assert [int(e["label"]) for e in out] == [7, 8]
    cols = (16 + 2 * np.arange(32)) // 32  # crop keeps columns 16..79, then 2x2 means
    for ex, n in zip(out, lengths, strict=True):
        t = np.minimum(np.arange(8), n - 1)
        expected = t[:, None, None, None] * 20 + cols[None, None, :, None]
        np.testing.assert_array_equal(ex["video"], np.broadcast_to(expected, (8, 32, 32, 3)))


def test_views_shapes_and_values():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(3, 8, 8, 12, 2)).astype(np.uint8)
    sub = views.temporal_subsample(x, 3, offset=1)
    assert sub.shape == (3, 3, 8, 12, 2)
    np.testing.assert_array_equal(sub[:, 2], x[:, 7])
    down = views.spatial_downsample(x, 2)
    assert down.shape == (3, 8, 4, 6, 2) and down.dtype == np.float32
    f = x.astype(np.float64)
    box = (
        f[:, :, 0::2, 0::2] + f[:, :, 1::2, 0::2] + f[:, :, 0::2, 1::2] + f[:, :, 1::2, 1::2]
    ) / 4
    np.testing.assert_allclose(down, box, rtol=1e-6)
    xf = x.astype(np.float32) / 127.5 - 1
    down_jax = jax.jit(lambda v: views.spatial_downsample(v, 4))(jnp.asarray(xf))
    assert isinstance(down_jax, jax.Array) and down_jax.shape == (3, 8, 2, 3, 2)
    np.testing.assert_allclose(down_jax, views.spatial_downsample(xf, 4), atol=1e-6)
    with pytest.raises(ValueError, match="divide"):
        views.spatial_downsample(x, 5)

    for r in (np.random.default_rng(1), jax.random.key(1)):
        win = views.random_window(xf, 5, r)
        assert win.shape == (3, 5, 8, 12, 2)
        for b in range(3):  # a contiguous piece of the same clip
            starts = [s for s in range(4) if np.array_equal(np.asarray(win[b]), xf[b, s : s + 5])]
            assert len(starts) == 1
        r_again = copy.deepcopy(r)  # the same draws again (a Generator advances)
        extra = views.extra_images(xf, 4, r)
        assert extra.shape == (3, 4, 8, 12, 2)
        same, image_labels = views.extra_images(xf, 4, r_again, labels=np.array([10, 11, 12]))
        np.testing.assert_array_equal(same, extra)  # labels change nothing else
        for b in range(3):
            for j in range(4):
                src = [
                    c
                    for c in range(3)
                    for t in range(8)
                    if np.array_equal(np.asarray(extra[b, j]), xf[c, t])
                ]
                assert len(src) == 1 and src[0] != b  # from another clip
                assert image_labels[b, j] == 10 + src[0]  # labelled as its own clip
        video, mask = views.append_extra_images(xf, 2, r)
        assert video.shape == (3, 10, 8, 12, 2) and mask.shape == (3, 10)
        assert np.asarray(mask)[:, 8:].all() and not np.asarray(mask)[:, :8].any()
    jit_win = jax.jit(lambda v, k: views.random_window(v, 4, k))(jnp.asarray(xf), jax.random.key(2))
    assert jit_win.shape == (3, 4, 8, 12, 2)
