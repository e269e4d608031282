"""Views of a batch of clips, from which each stage builds its training pairs.

All functions take videos [B, T, H, W, C] as numpy or jax arrays and return the
same kind (jax inputs stay jax, so they can run inside `jax.jit`). Typical pairs:

  keyframe stage: spatial_downsample(temporal_subsample(x, s), f)   (few frames, low res)
  temporal SR:    temporal_subsample(x, k)  ->  x                    (every k-th frame -> all)
  spatial SR:     spatial_downsample(x, f)  ->  x                    (low res -> full res)
  joint training: append_extra_images(x, n, rng)                    (clip + n independent frames)

Random draws take a numpy `Generator` (numpy in, numpy out) or a jax PRNG key.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cascade.configs import ConfigError, ensure_divisible


def _xp(x: Any):
    return jnp if isinstance(x, jax.Array) else np


def _check_video(video: Any) -> None:
    if np.ndim(video) != 5:
        raise ValueError(f"Expected videos [B, T, H, W, C], got shape {np.shape(video)}.")


def _is_key(rng: Any) -> bool:
    return not isinstance(rng, np.random.Generator)


def temporal_subsample(video: Any, stride: int, offset: int = 0) -> Any:
    """Every `stride`-th frame starting at `offset`.

    Args:
      video: [B, T, H, W, C].
    Returns:
      [B, ceil((T - offset) / stride), H, W, C] = video[:, offset::stride].
    """
    _check_video(video)
    if stride < 1 or not 0 <= offset < video.shape[1]:
        raise ValueError(
            f"Need stride >= 1 and 0 <= offset < T={video.shape[1]}; got {stride}, {offset}."
        )
    return video[:, offset::stride]


def spatial_downsample(video: Any, factor: int) -> Any:
    """Box (area) filter: each output pixel is the mean of a factor x factor block.

    Args:
      video: [B, T, H, W, C] with H and W divisible by `factor`.
    Returns:
      [B, T, H / factor, W / factor, C]; float inputs keep their dtype, integer
      inputs give float32 (the exact block means).
    """
    _check_video(video)
    b, t, h, w, c = video.shape
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"factor={factor} must be >= 1 and divide H={h} and W={w}.")
    if factor == 1:
        return video
    xp = _xp(video)
    dtype = video.dtype if xp.issubdtype(video.dtype, xp.floating) else xp.float32
    blocks = video.astype(xp.float32).reshape(b, t, h // factor, factor, w // factor, factor, c)
    return blocks.mean(axis=(3, 5)).astype(dtype)


def random_window(video: Any, length: int, rng: Any) -> Any:
    """A window of `length` consecutive frames per clip, at an independent random start.

    Args:
      video: [B, T, H, W, C] with T >= length.
      rng: numpy Generator or jax PRNG key (starts uniform in [0, T - length]).
    Returns:
      [B, length, H, W, C].
    """
    _check_video(video)
    b, t = video.shape[:2]
    if not 1 <= length <= t:
        raise ValueError(f"Window length {length} must be in [1, T={t}].")
    if _is_key(rng):
        starts = jax.random.randint(rng, (b,), 0, t - length + 1)
        window = lambda v, s: jax.lax.dynamic_slice_in_dim(v, s, length, axis=0)
        return jax.vmap(window)(jnp.asarray(video), starts)
    starts = rng.integers(0, t - length + 1, size=b)
    idx = starts[:, None] + np.arange(length)[None, :]
    return video[np.arange(b)[:, None], idx]


def extra_image_sources(batch: int, frames: int, num: int, rng: Any) -> tuple[Any, Any]:
    """Where the extra images of `extra_images` come from: (clip [B, num], frame [B, num]).

    Image j of clip b is frame t of clip c with c != b (when B > 1) and t uniform, all
    drawn independently. Knowing c gives each image its own label (`labels[c]`).
    """
    b, t = batch, frames
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}.")
    if _is_key(rng):
        k_clip, k_time = jax.random.split(rng)
        shift = jax.random.randint(k_clip, (b, num), 1, b) if b > 1 else 0
        times = jax.random.randint(k_time, (b, num), 0, t)
        return (jnp.arange(b)[:, None] + shift) % b, times
    shift = rng.integers(1, b, size=(b, num)) if b > 1 else np.zeros((b, num), np.int64)
    times = rng.integers(0, t, size=(b, num))
    return (np.arange(b)[:, None] + shift) % b, times


def extra_images(video_batch: Any, num: int, rng: Any, labels: Any = None) -> Any:
    """`num` independent frames per clip, each from another clip of the batch.

    For joint image-video training (VDM): see `extra_image_sources`.

    Args:
      video_batch: [B, T, H, W, C].
      rng: numpy Generator or jax PRNG key.
      labels: optional class labels [B] of the clips.
    Returns:
      images [B, num, H, W, C]; with `labels`, (images, image labels [B, num]): each
      image's label is the label of the clip it was taken from, not of the clip it joins.
    """
    _check_video(video_batch)
    clips, times = extra_image_sources(*video_batch.shape[:2], num, rng)
    xp = jnp if _is_key(rng) else _xp(video_batch)
    images = xp.asarray(video_batch)[clips, times]
    if labels is None:
        return images
    return images, xp.asarray(labels)[clips]


def append_extra_images(video_batch: Any, num: int, rng: Any) -> tuple[Any, Any]:
    """Clips followed by `num` independent frames each, plus the image mask.

    Returns:
      video [B, T + num, H, W, C] and image_mask bool [B, T + num], True on the
      appended independent frames (the model's `image_mask`: they must not attend
      to other frames).
    """
    xp = _xp(video_batch) if not _is_key(rng) else jnp
    images = extra_images(video_batch, num, rng)
    b, t = video_batch.shape[:2]
    video = xp.concatenate([xp.asarray(video_batch), images], axis=1)
    mask = xp.concatenate([xp.zeros((b, t), bool), xp.ones((b, num), bool)], axis=1)
    return video, mask


def clip_view(
    clips: np.ndarray,
    view: ml_collections.ConfigDict,
    data: ml_collections.ConfigDict,
    rng: np.random.Generator,
) -> np.ndarray:
    """A stage's view of stored clips (its `config.view` section): a random window of
    `frames * frame_stride` frames, every `frame_stride`-th kept, box-downsampled to
    `resolution`. [B,T,H,W,C] -> [B,view.frames,view.resolution,view.resolution,C]."""
    span = view.frames * view.frame_stride
    if span > clips.shape[1]:
        raise ConfigError(
            f"config.view: frames={view.frames} x frame_stride={view.frame_stride} = {span} "
            f"frames, but stored clips have only {clips.shape[1]} (config.data.frames)."
        )
    ensure_divisible(
        clips.shape[2], view.resolution, "config.data.resolution / config.view.resolution"
    )
    window = random_window(clips, span, rng)
    video = temporal_subsample(window, view.frame_stride)
    return spatial_downsample(video, clips.shape[2] // view.resolution)
