"""Data layer: embedded builders, loading, pipeline, views, data CLI."""

from __future__ import annotations

import os
import socket

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from cascade.data import builders, loading, pipeline
from cascade.data.builders import bouncing_shapes as bs

SIZES = dict(num_train=8, num_test=4, frames=16, resolution=64)


def data_cfg(name: str, data_dir, **kw) -> ml_collections.ConfigDict:
    cfg = dict(name=name, data_dir=str(data_dir), shuffle_buffer=16, **SIZES)
    cfg.update(kw)
    return ml_collections.ConfigDict(cfg)


def clips(cfg, split="train") -> list[dict]:
    return list(loading.load_dataset(cfg, split).as_numpy_iterator())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Both embedded sets built twice, in two data_dirs, with every socket refused."""
    attempts = []

    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            attempts.append(("socket", args))
            raise OSError("network disabled in this test")

    def refuse(*args, **kwargs):
        attempts.append(("connect", args))
        raise OSError("network disabled in this test")

    dirs = [tmp_path_factory.mktemp("tfds_a"), tmp_path_factory.mktemp("tfds_b")]
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "socket", NoSocket)
        mp.setattr(socket, "create_connection", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        for name in ("moving_digits", "bouncing_shapes"):
            out[name] = [clips(data_cfg(name, d)) for d in dirs]
            out[name + "_test"] = clips(data_cfg(name, dirs[0]), "test")
    return {"data": out, "dirs": dirs, "attempts": attempts}


def test_builders_offline_deterministic_shapes(built, tmp_path):
    assert built["attempts"] == [], f"a socket was opened while building: {built['attempts']}"
    t, r = SIZES["frames"], SIZES["resolution"]
    for name, channels in (("moving_digits", 1), ("bouncing_shapes", 3)):
        a, b = built["data"][name]
        assert len(a) == SIZES["num_train"] and len(built["data"][name + "_test"]) == 4
        for x, y in zip(a, b, strict=True):  # two independent builds are identical
            jax.tree.map(np.testing.assert_array_equal, x, y)
        ex = a[0]
        assert ex["video"].shape == (t, r, r, channels) and ex["video"].dtype == np.uint8
        assert ex["label"].dtype == np.int64 and ex["label"].shape == ()
        videos = np.stack([e["video"] for e in a])
        assert len({v.tobytes() for v in videos}) == len(a)  # clips differ
        test_videos = {e["video"].tobytes() for e in built["data"][name + "_test"]}
        assert not test_videos & {v.tobytes() for v in videos}  # splits differ
    ex = built["data"]["moving_digits"][0][0]
    assert ex["digits"].shape == (2,) and ex["positions"].shape == (t, 2, 2)
    st = built["data"]["bouncing_shapes"][0][0]["states"]
    k = bs.MAX_OBJECTS
    assert st["position"].shape == (t, k, 2) and st["velocity"].shape == (t, k, 2)
    assert st["visible"].shape == (t, k) and st["visible"].dtype == bool
    assert st["present"].shape == (k,) and st["shape"].shape == (k,) and st["color"].shape == (k,)
    assert st["occluder"].shape == (4,)

    # Sizes equal to a named preset map onto it, for either builder.
    for name in builders.EMBEDDED_BUILDERS:
        builder = builders.make_builder(name, tmp_path, builders.clips_config(16, 8, 8, 32))
        assert builder.builder_config.name == "tiny"

    # A bigger build with the same seed starts with the same clips (per-clip seeding),
    # and a different seed gives different clips.
    cfg = data_cfg("moving_digits", tmp_path, num_train=3, num_test=1, frames=4, resolution=32)
    small = clips(cfg)
    big = clips(
        data_cfg("moving_digits", tmp_path, num_train=5, num_test=1, frames=4, resolution=32)
    )
    for x, y in zip(small, big[:3], strict=True):
        np.testing.assert_array_equal(x["video"], y["video"])
    other = clips(
        data_cfg(
            "moving_digits", tmp_path, num_train=3, num_test=1, frames=4, resolution=32, seed=1
        )
    )
    assert not np.array_equal(small[0]["video"], other[0]["video"])


def test_moving_digits_labels_and_positions(built):
    data = built["data"]["moving_digits"][0] + built["data"]["moving_digits_test"]
    grid = np.arange(SIZES["resolution"], dtype=np.float64)
    singles = 0
    for ex in data:
        digits, pos = ex["digits"], ex["positions"]
        assert 0 <= digits[0] <= 9 and ex["label"] == digits[0]
        assert digits[1] == -1 or 0 <= digits[1] <= 9
        if digits[1] == -1:
            assert np.all(pos[:, 1] == 0)
            singles += 1
            w = ex["video"][..., 0].astype(np.float64)  # [T, H, W]
            mass = w.sum(axis=(1, 2))
            cy = (w.sum(axis=2) * grid).sum(axis=1) / mass
            cx = (w.sum(axis=1) * grid).sum(axis=1) / mass
            np.testing.assert_allclose(np.stack([cy, cx], 1), pos[:, 0], atol=0.5)
        else:  # two digits: each stays inside the frame
            assert np.all((pos >= 0) & (pos <= SIZES["resolution"] - 1))
    assert singles >= 1, "no single-digit clip to check positions against pixels"


def test_bouncing_shapes_states_match_pixels(built):
    data = built["data"]["bouncing_shapes"][0] + built["data"]["bouncing_shapes_test"]
    r = SIZES["resolution"]
    c = bs.scaled_constants(r)
    radius, g = c["radius"], c["gravity"]
    allowed = {tuple(x) for x in bs.PALETTE} | {tuple(bs.BACKGROUND), tuple(bs.OCCLUDER_COLOR)}
    assert len(allowed) == len(bs.PALETTE) + 2
    yy, xx = np.mgrid[0:r, 0:r]
    checked = 0
    for ex in data:
        v, st = ex["video"], ex["states"]
        assert {tuple(p) for p in v.reshape(-1, 3)} <= allowed  # no anti-aliasing
        y0, x0, y1, x1 = st["occluder"].astype(int)
        assert np.all(v[:, y0:y1, x0:x1] == bs.OCCLUDER_COLOR)
        present = st["present"]
        assert present[0] and ex["label"] == st["shape"][0]
        assert np.all(st["shape"][~present] == -1) and np.all(st["color"][~present] == -1)
        colors = st["color"][present]
        assert len(set(colors.tolist())) == len(colors)  # unique colour per object
        for k in np.flatnonzero(present):
            mask = np.all(v == bs.PALETTE[st["color"][k]], axis=-1)  # [T, H, W]
            for t in range(v.shape[0]):
                p = st["position"][t, k]
                if not st["visible"][t, k]:
                    assert not mask[t].any()  # fully behind the occluder: no pixel
                    continue
                others = [j for j in np.flatnonzero(present) if j != k]
                far = all(np.abs(st["position"][t, j] - p).max() > 2 * radius + 1 for j in others)
                clear = p[1] + radius + 1 < x0 or p[1] - radius - 1 > x1 - 1
                if far and clear:
                    assert mask[t].any()
                    centroid = np.array([yy[mask[t]].mean(), xx[mask[t]].mean()])
                    np.testing.assert_allclose(centroid, p, atol=1.0)
                    checked += 1
        # Ballistic between bounces: v[t+1] = v[t] + (g, 0), p[t+1] = p[t] + v[t] + (g/2, 0).
        pos, vel = st["position"][:, present], st["velocity"][:, present]
        free = np.abs(vel[1:, :, 0] - vel[:-1, :, 0] - g) < 1e-4  # no floor bounce
        free &= np.sign(vel[1:, :, 1]) == np.sign(vel[:-1, :, 1])  # no wall bounce
        expected = pos[:-1] + vel[:-1] + np.array([g / 2, 0.0])
        np.testing.assert_allclose(pos[1:][free], expected[free], atol=1e-3)
        assert free.mean() > 0.5
    assert checked > 20


def test_gravity_bounce_closed_form():
    """Dropped from rest: free fall, then a bounce losing speed by RESTITUTION."""
    r = 64
    lo, hi = bs.arena(r)
    g, e = bs.scaled_constants(r)["gravity"], bs.RESTITUTION
    h = 30.0
    pos, vel = bs.simulate(np.array(hi - h), np.array(30.0), np.array(0.0), np.array(0.0), 24, r)
    t_hit = np.sqrt(2 * h / g)
    before = np.arange(24) < t_hit
    t = np.arange(24)[before]
    np.testing.assert_allclose(pos[before, 0], hi - h + 0.5 * g * t**2, atol=1e-9)
    t = np.arange(24)[~before]  # after the bounce, before the next one
    v_after = -e * g * t_hit
    np.testing.assert_allclose(vel[~before, 0], v_after + g * (t - t_hit), atol=1e-9)
    np.testing.assert_allclose(
        pos[~before, 0], hi + v_after * (t - t_hit) + 0.5 * g * (t - t_hit) ** 2, atol=1e-9
    )
    assert np.all(pos[:, 1] == 30.0) and np.all(pos[:, 0] <= hi)


def _clip_ids(batch_videos, reference):
    keys = {np.round(v, 4).tobytes(): i for i, v in enumerate(reference)}
    return [keys[np.round(v, 4).tobytes()] for v in batch_videos]


def test_pipeline_epochs_determinism_resume_sharding(built):
    cfg = data_cfg("moving_digits", built["dirs"][0])
    reference = [
        e["video"].astype(np.float32) / 127.5 - 1.0 for e in built["data"]["moving_digits"][0]
    ]
    it = pipeline.batch_iterator(cfg, split="train", batch_size=4, seed=3)
    run = [next(it) for _ in range(6)]  # 3 epochs of 8 clips
    b = run[0]
    assert b["video"].shape == (4, 16, 64, 64, 1) and b["video"].dtype == np.float32
    assert b["label"].dtype == np.int32 and b["label"].shape == (4,)
    assert b["positions"].shape == (4, 16, 2, 2) and b["digits"].shape == (4, 2)
    assert b["video"].min() >= -1.0 and b["video"].max() <= 1.0
    ids = [_clip_ids(x["video"], reference) for x in run]
    epochs = [ids[0] + ids[1], ids[2] + ids[3], ids[4] + ids[5]]
    for ep in epochs:
        assert sorted(ep) == list(range(8))  # each epoch sees every clip once
    assert epochs[0] != epochs[1]  # reshuffled per epoch
    again = pipeline.batch_iterator(cfg, split="train", batch_size=4, seed=3)
    for x in run:
        jax.tree.map(np.testing.assert_array_equal, x, next(again))
    resumed = pipeline.batch_iterator(cfg, split="train", batch_size=4, seed=3, start_step=3)
    for k in (3, 4, 5):
        jax.tree.map(np.testing.assert_array_equal, run[k], next(resumed))
    other = pipeline.batch_iterator(cfg, split="train", batch_size=4, seed=4)
    assert [_clip_ids(next(other)["video"], reference) for _ in range(2)] != ids[:2]
    # Two hosts with per-host batches of 2: disjoint halves; one epoch covers every clip once.
    host = [
        pipeline.batch_iterator(
            cfg, split="train", batch_size=2, seed=3, process_index=i, process_count=2
        )
        for i in range(2)
    ]
    seen = []
    for it_h in host:
        for _ in range(2):
            x = next(it_h)
            assert x["video"].shape[0] == 2
            seen += _clip_ids(x["video"], reference)
    assert sorted(seen) == list(range(8))
    # One ordered pass over the test split.
    test = list(
        pipeline.batch_iterator(
            cfg, split="test", batch_size=2, seed=0, repeat=False, shuffle=False
        )
    )
    assert len(test) == 2
    np.testing.assert_array_equal(
        test[1]["video"][1],
        built["data"]["moving_digits_test"][3]["video"].astype(np.float32) / 127.5 - 1.0,
    )
    with pytest.raises(ValueError, match="too few"):
        next(
            pipeline.batch_iterator(
                cfg,
                split="test",
                batch_size=3,
                seed=0,
                repeat=False,
                process_index=1,
                process_count=2,
            )
        )


def test_image_pool_batches_come_from_the_larger_set_and_resume(built):
    # 4 training videos, images from a set of 8 (the built one): few videos, many images.
    cfg = data_cfg("moving_digits", built["dirs"][0], num_train=4, image_pool=8)
    pool_reference = [
        e["video"].astype(np.float32) / 127.5 - 1.0 for e in built["data"]["moving_digits"][0]
    ]
    it = pipeline.batch_iterator(cfg, split="train", batch_size=4, seed=3)
    run = [next(it) for _ in range(4)]
    assert run[0]["video"].shape == run[0]["pool_video"].shape == (4, 16, 64, 64, 1)
    assert run[0]["pool_label"].dtype == np.int32
    pool_ids = [i for x in run for i in _clip_ids(x["pool_video"], pool_reference)]
    assert sorted(pool_ids) == sorted(list(range(8)) * 2)  # two epochs of the 8-clip pool
    resumed = pipeline.batch_iterator(cfg, split="train", batch_size=4, seed=3, start_step=2)
    for k in (2, 3):
        jax.tree.map(np.testing.assert_array_equal, run[k], next(resumed))
    test = next(pipeline.batch_iterator(cfg, split="test", batch_size=2, seed=0))
    assert "pool_video" not in test  # evaluation reads videos only


def test_to_device_shards_batch(built):
    cfg = data_cfg("bouncing_shapes", built["dirs"][0])
    batch = next(pipeline.batch_iterator(cfg, split="train", batch_size=8, seed=0))
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    on_device = pipeline.to_device(batch, sharding)
    assert on_device["video"].shape == (8, 16, 64, 64, 3)
    assert on_device["video"].sharding == sharding
    assert len(on_device["states"]["position"].addressable_shards) == 8
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), on_device, batch)


# ffmpeg runs as a subprocess (fork + exec), which JAX warns about harmlessly.
@pytest.mark.filterwarnings("ignore:os.fork")
def test_data_cli_writes_previews(built, tmp_path, capsys):
    from cascade.data.__main__ import build_and_preview, main

    sizes = {k: v for k, v in SIZES.items()}
    args = [f"--{k}={v}" for k, v in sizes.items()]
    gif = tmp_path / "out" / "preview.gif"
    rc = main(
        ["prog", "--dataset=bouncing_shapes", f"--data_dir={built['dirs'][0]}", "--num_examples=3"]
        + args
        + [f"--preview={gif}", "--scale=1"]
    )
    assert rc == 0
    assert "8 train clips" in capsys.readouterr().out
    with Image.open(gif) as im:
        assert im.n_frames == SIZES["frames"]
        assert im.size == (2 * 64 + 3, 2 * 64 + 3)  # 3 clips tiled 2x2, 1 px borders
    with Image.open(gif.with_suffix(".png")) as im:
        assert im.size == (16 * 65 + 1, 3 * 65 + 1)
    assert gif.with_suffix(".mp4").stat().st_size > 0
    # As the quickstart calls it: a data config (its name replaced) and a preview path.
    paths = build_and_preview(
        "moving_digits", data_cfg("bouncing_shapes", built["dirs"][0]), tmp_path / "md.gif"
    )
    assert sorted(paths) == ["gif", "mp4", "png"] and os.path.exists(paths["png"])
    assert main(["prog", "--dataset=nope", f"--data_dir={tmp_path}"]) == 2
    assert "Known data sets" in capsys.readouterr().err
    assert main(["prog", "--help"]) == 0
    assert "--num_examples" in capsys.readouterr().out
