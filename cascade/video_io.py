"""Writing videos and grids of videos: GIF, MP4 and PNG contact sheets.

Every writer accepts float arrays in [-1, 1] (the model convention) or uint8
arrays, with 1 (grayscale, upgraded to RGB) or 3 channels; a missing channel
axis means grayscale. jax arrays are accepted too (converted with np.asarray).
GIFs are written with Pillow; MP4 with the ffmpeg binary bundled by
imageio-ffmpeg (H.264, yuv420p, so odd sizes are padded to even ones).

Run outputs (what training previews, `--mode=sample` and the runners write) are
`write_videos` (name.gif, name.mp4, name_grid.png) and `write_run_outputs` (every
stage, the final videos, all stages side by side, timing.json).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from PIL import Image

from cascade import json_io


def to_uint8(video: Any) -> np.ndarray:
    """Float in [-1, 1] or uint8 -> uint8 RGB, same leading shape, last axis 3.

    Accepts [..., H, W] (grayscale), [..., H, W, 1] or [..., H, W, 3].
    """
    x = np.asarray(video)
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"Expected uint8 or float in [-1, 1], got dtype {x.dtype}.")
        x = np.clip(np.rint((x.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if x.ndim >= 3 and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    elif x.ndim >= 3 and x.shape[-1] == 3:
        pass
    elif x.ndim >= 2:
        x = np.repeat(x[..., None], 3, axis=-1)  # no channel axis: grayscale
    else:
        raise ValueError(f"Expected [..., H, W(, C)], got shape {x.shape}.")
    return x


def _video(video: Any) -> np.ndarray:
    """-> uint8 [T, H, W, 3]; a single image [H, W, C] becomes one frame."""
    x = to_uint8(video)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"Expected a video [T, H, W, C], got shape {np.shape(video)}.")
    return x


def _upscale(x: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of [..., H, W, C] by an integer factor."""
    if scale == 1:
        return x
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}.")
    return np.repeat(np.repeat(x, scale, axis=-3), scale, axis=-2)


def _makedirs(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


def write_gif(path: str | os.PathLike, video: Any, fps: float = 8.0, scale: int = 1) -> str:
    """Writes a looping GIF.

    Args:
      video: [T, H, W, C] (C in {1, 3}) or [T, H, W], float in [-1, 1] or uint8.
      fps: frames per second (GIF stores delays in 10 ms units).
      scale: integer nearest-neighbour upscaling factor (small clips are tiny).
    Returns:
      The path written. (Pillow merges identical consecutive frames into one longer
      frame, so a GIF of a static clip may report fewer frames than T.)
    """
    frames = _upscale(_video(video), scale)
    images = [Image.fromarray(f) for f in frames]
    path = _makedirs(path)
    images[0].save(
        path,
        save_all=True,
        append_images=images[1:],
        duration=max(20, int(round(1000.0 / fps))),
        loop=0,
        optimize=False,
        disposal=2,
    )
    return path


def _ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise RuntimeError(
            "write_mp4 needs the imageio-ffmpeg package (pip install imageio-ffmpeg), "
            "which bundles an ffmpeg binary."
        ) from e
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:
        raise RuntimeError(
            "write_mp4: no ffmpeg binary found. imageio-ffmpeg ships one in its wheel for "
            "common platforms; on others install ffmpeg and set IMAGEIO_FFMPEG_EXE to its "
            f"path. ({e})"
        ) from e


def write_mp4(
    path: str | os.PathLike,
    video: Any,
    fps: float = 8.0,
    scale: int = 1,
    *,
    audio: Any = None,
    sample_rate: int = 16_000,
) -> str:
    """Writes an H.264 MP4 (yuv420p) with imageio-ffmpeg's bundled ffmpeg.

    Args: as `write_gif`, and `audio`: an optional mono track, float [samples] in [-1, 1],
    sampled at `sample_rate` Hz and starting with frame 0; it is muxed as AAC, cut or
    zero-padded to the video's duration (T / fps). Odd heights/widths are padded by one
    edge pixel because yuv420p needs even sizes. Returns the path written.
    """
    frames = _upscale(_video(video), scale)
    exe = _ffmpeg_exe()
    import imageio_ffmpeg

    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    path = _makedirs(path)
    final, path = path, (path if audio is None else path + ".video.mp4")
    writer = imageio_ffmpeg.write_frames(
        path,
        size=(frames.shape[2], frames.shape[1]),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        macro_block_size=1,
        quality=8,
        ffmpeg_log_level="error",
    )
    writer.send(None)  # start the ffmpeg process
    try:
        for f in frames:
            writer.send(np.ascontiguousarray(f))
    finally:
        writer.close()
    if audio is not None:
        _mux_audio(exe, path, audio, sample_rate, round(t / fps * sample_rate), final)
    return final


def _mux_audio(exe: str, video_path: str, audio: Any, rate: int, length: int, out: str) -> None:
    """Muxes mono `audio` (float [samples] in [-1, 1], cut/padded to `length`) as AAC beside
    the H.264 stream of `video_path` into `out`; removes the intermediate files."""
    import subprocess
    import wave

    track = np.asarray(audio, np.float32).reshape(-1)[:length]
    track = np.pad(track, (0, length - track.size))
    pcm = np.clip(np.rint(track * 32767.0), -32768, 32767).astype("<i2")
    wav_path = out + ".audio.wav"
    try:
        with wave.open(wav_path, "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(int(rate))
            f.writeframes(pcm.tobytes())
        cmd = [exe, "-y", "-loglevel", "error", "-i", video_path, "-i", wav_path]
        cmd += ["-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-b:a", "96k", out]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ffmpeg could not mux the audio into {out}: {done.stderr[-500:]}")
    finally:
        for tmp in (wav_path, video_path):
            if os.path.exists(tmp):
                os.remove(tmp)


def _videos(videos: Any) -> np.ndarray:
    """-> uint8 [N, T, H, W, 3]."""
    x = to_uint8(videos)
    if x.ndim != 5:
        raise ValueError(f"Expected videos [N, T, H, W, C], got shape {np.shape(videos)}.")
    return x


def grid_image(videos: Any, pad: int = 1, pad_value: int = 255) -> np.ndarray:
    """Contact sheet: frames along x, videos along y.

    Args:
      videos: [N, T, H, W, C], float in [-1, 1] or uint8.
    Returns:
      uint8 [N*H + (N+1)*pad, T*W + (T+1)*pad, 3].
    """
    x = _videos(videos)
    x = np.pad(x, ((0, 0), (0, 0), (pad, 0), (pad, 0), (0, 0)), constant_values=pad_value)
    n, t, h, w, c = x.shape
    sheet = x.transpose(0, 2, 1, 3, 4).reshape(n * h, t * w, c)
    return np.pad(sheet, ((0, pad), (0, pad), (0, 0)), constant_values=pad_value)


def write_grid_png(
    path: str | os.PathLike, videos: Any, pad: int = 1, scale: int = 1, pad_value: int = 255
) -> str:
    """Writes `grid_image(videos)` as a PNG (row n = video n, column t = frame t)."""
    path = _makedirs(path)
    Image.fromarray(_upscale(grid_image(videos, pad, pad_value), scale)).save(path)
    return path


def tile_videos(
    videos: Any, ncols: int | None = None, pad: int = 1, pad_value: int = 255
) -> np.ndarray:
    """Tiles N videos into one video, per frame, on a grid of `ncols` columns.

    Args:
      videos: [N, T, H, W, C], float in [-1, 1] or uint8.
      ncols: columns (default ceil(sqrt(N))); missing tiles are filled with pad_value.
    Returns:
      uint8 [T, rows*H + (rows+1)*pad, ncols*W + (ncols+1)*pad, 3].
    """
    x = _videos(videos)
    n, t, h, w, c = x.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    x = np.concatenate([x, np.full((nrows * ncols - n, t, h, w, c), pad_value, np.uint8)])
    x = np.pad(x, ((0, 0), (0, 0), (pad, 0), (pad, 0), (0, 0)), constant_values=pad_value)
    h, w = h + pad, w + pad
    x = x.reshape(nrows, ncols, t, h, w, c).transpose(2, 0, 3, 1, 4, 5)
    x = x.reshape(t, nrows * h, ncols * w, c)
    return np.pad(x, ((0, 0), (0, pad), (0, pad), (0, 0)), constant_values=pad_value)


def write_video_grid_gif(
    path: str | os.PathLike,
    videos: Any,
    ncols: int | None = None,
    fps: float = 8.0,
    scale: int = 1,
    pad: int = 1,
) -> str:
    """Writes N videos tiled on a grid (see `tile_videos`) as one looping GIF."""
    return write_gif(path, tile_videos(videos, ncols, pad), fps=fps, scale=scale)


def write_video_grid_mp4(
    path: str | os.PathLike,
    videos: Any,
    ncols: int | None = None,
    fps: float = 8.0,
    scale: int = 1,
    pad: int = 1,
    *,
    audio: Any = None,
    sample_rate: int = 16_000,
) -> str:
    """Writes N videos tiled on a grid (see `tile_videos`) as one MP4, with an optional mono
    sound track (see `write_mp4`)."""
    grid = tile_videos(videos, ncols, pad)
    return write_mp4(path, grid, fps=fps, scale=scale, audio=audio, sample_rate=sample_rate)


def nearest_resize(videos: np.ndarray, frames: int, size: int) -> np.ndarray:
    """[N,T,H,W,C] -> [N,frames,size,size,C] by repetition (for showing stages side by side)."""
    n, t, h, w, c = videos.shape
    ti = (np.arange(frames) * t) // frames
    yi = (np.arange(size) * h) // size
    xi = (np.arange(size) * w) // size
    return videos[:, ti][:, :, yi][:, :, :, xi]


def side_by_side(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Every stage's output on the final grid, concatenated along width: [N,T,H,W*stages,C]."""
    final = list(outputs.values())[-1]
    _, t, h, _, c = final.shape
    panels = []
    for video in outputs.values():
        if video.shape[-1] != c:
            video = np.repeat(video[..., :1], c, axis=-1)
        panels.append(nearest_resize(video, t, h))
    return np.concatenate(panels, axis=3)


def write_videos(videos: np.ndarray, out_dir: str | os.PathLike, name: str, fps: int = 8) -> Path:
    """name.gif and name.mp4 (videos [N,T,H,W,C] tiled), name_grid.png (rows = videos, cols =
    frames). Small frames are upscaled (nearest) to at least 64 pixels so a person can see them.
    With several processes (all holding the same videos) only process 0 writes."""
    out_dir = Path(out_dir)
    if jax.process_index() != 0:
        return out_dir / f"{name}.gif"
    out_dir.mkdir(parents=True, exist_ok=True)
    scale = max(1, 64 // max(videos.shape[2], 1))
    write_video_grid_gif(out_dir / f"{name}.gif", videos, fps=fps, scale=scale)
    write_video_grid_mp4(out_dir / f"{name}.mp4", videos, fps=fps, scale=scale)
    write_grid_png(out_dir / f"{name}_grid.png", videos, scale=scale)
    return out_dir / f"{name}.gif"


def write_run_outputs(
    out_dir: str | os.PathLike,
    outputs: dict[str, np.ndarray],
    seconds: dict[str, float],
    fps: int,
) -> dict[str, Any]:
    """final.{gif,mp4,_grid.png}, <stage>.{...} for every intermediate, stages.gif, timing.json.

    `outputs`: each stage's videos [N,T,H,W,C] in run order; `seconds`: wall time per stage.
    Returns the timing report written to timing.json.
    """
    out_dir = Path(out_dir)
    names = list(outputs)
    for name in names:
        write_videos(outputs[name], out_dir, name, fps=fps)
    write_videos(outputs[names[-1]], out_dir, "final", fps=fps)
    write_videos(side_by_side(outputs), out_dir, "stages", fps=fps)
    n = len(outputs[names[-1]])
    report = {
        "stages": names,
        "shapes": {k: list(v.shape[1:]) for k, v in outputs.items()},
        "seconds": seconds,
        "seconds_per_video": {k: v / n for k, v in seconds.items()},
        "num_videos": n,
    }
    if jax.process_index() == 0:  # every host holds the same outputs; one writes them
        json_io.write_json(out_dir / "timing.json", report)
    return report
