"""Video writers: GIF / MP4 / PNG grids, value conversion, clear errors."""

from __future__ import annotations

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from cascade import video_io

COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], np.uint8)


def quadrant_video(t: int, h: int, w: int) -> np.ndarray:
    """uint8 [t, h, w, 3]: four flat colour quadrants, rotating by one per frame."""
    q = (np.arange(h)[:, None] >= h // 2) * 2 + (np.arange(w)[None, :] >= w // 2)
    return np.stack([COLORS[(q + i) % 4] for i in range(t)])


def test_to_uint8_conversions():
    x = np.array([-1.0, -0.5, 0.0, 1.0, 1.5], np.float32).reshape(1, 1, 5, 1)
    out = video_io.to_uint8(x)
    assert out.shape == (1, 1, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0, :, 0], [0, 64, 128, 255, 255])
    assert np.all(out[..., 0] == out[..., 2])  # grayscale -> RGB
    assert video_io.to_uint8(np.zeros((2, 4, 4), np.uint8)).shape == (2, 4, 4, 3)
    with pytest.raises(TypeError, match="uint8 or float"):
        video_io.to_uint8(np.zeros((2, 4, 4, 3), np.int32))


def test_write_gif_round_trip(tmp_path):
    video = quadrant_video(5, 8, 10)
    path = video_io.write_gif(tmp_path / "sub" / "a.gif", video, fps=10, scale=2)
    with Image.open(path) as im:
        assert im.n_frames == 5 and im.size == (20, 16)
        for i in range(5):
            im.seek(i)
            frame = np.asarray(im.convert("RGB"))
            np.testing.assert_array_equal(frame[::2, ::2], video[i])
    # float input in [-1, 1] gives the same file content as the equivalent uint8
    f = video.astype(np.float32) / 127.5 - 1.0
    video_io.write_gif(tmp_path / "b.gif", f, fps=10, scale=2)
    assert (tmp_path / "b.gif").read_bytes() == (tmp_path / "sub" / "a.gif").read_bytes()


@pytest.mark.filterwarnings("ignore:os.fork")
def test_write_mp4_round_trip_and_missing_ffmpeg(tmp_path, monkeypatch):
    yy, xx = np.mgrid[0:31, 0:33]
    smooth = np.stack([xx * 7, yy * 8, (xx + yy) * 4], -1).clip(0, 255).astype(np.uint8)
    video = np.stack([np.roll(smooth, i, axis=1) for i in range(6)])  # odd size 31 x 33
    path = video_io.write_mp4(tmp_path / "a.mp4", video, fps=6)
    reader = imageio_ffmpeg.read_frames(path)
    meta = reader.__next__()
    assert tuple(meta["size"]) == (34, 32)  # padded to even (yuv420p)
    frames = [np.frombuffer(f, np.uint8).reshape(32, 34, 3) for f in reader]
    assert len(frames) == 6
    err = np.abs(frames[0][:31, :33].astype(float) - video[0]).mean()
    assert err < 12, err

    def no_binary():
        raise RuntimeError("No ffmpeg exe could be found.")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_binary)
    with pytest.raises(RuntimeError, match="IMAGEIO_FFMPEG_EXE"):
        video_io.write_mp4(tmp_path / "b.mp4", video)


def test_grids(tmp_path):
    videos = np.stack([quadrant_video(3, 4, 6), quadrant_video(3, 4, 6)[::-1]])  # [2,3,4,6,3]
    sheet = video_io.grid_image(videos)
    assert sheet.shape == (2 * 5 + 1, 3 * 7 + 1, 3)
    for n in range(2):
        for t in range(3):  # row n = video n, column t = frame t
            tile = sheet[1 + n * 5 : 1 + n * 5 + 4, 1 + t * 7 : 1 + t * 7 + 6]
            np.testing.assert_array_equal(tile, videos[n, t])
    path = video_io.write_grid_png(tmp_path / "g.png", videos, scale=3)
    with Image.open(path) as im:
        assert im.size == (3 * 22, 3 * 11)

    five = np.concatenate([videos, videos, videos[:1]])  # 5 videos on 3 columns -> 2 rows
    tiled = video_io.tile_videos(five, ncols=3)
    assert tiled.shape == (3, 2 * 5 + 1, 3 * 7 + 1, 3)
    np.testing.assert_array_equal(tiled[2, 6:10, 8:14], five[4, 2])  # row 1, col 1
    assert np.all(tiled[:, 6:10, 15:21] == 255)  # the missing sixth tile
    path = video_io.write_video_grid_gif(tmp_path / "g.gif", five, ncols=3)
    with Image.open(path) as im:
        assert im.n_frames == 3 and im.size == (22, 11)
    with pytest.raises(ValueError, match=r"\[N, T, H, W, C\]"):
        video_io.grid_image(videos[0])
