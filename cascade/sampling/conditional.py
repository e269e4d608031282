"""Conditional generation with a trained stage: given frames, frame prediction and
autoregressive extension to clips longer than the stage was trained on.

One interface for both families: a stage that can be conditioned implements
`Stage.sample_given` (Gaussian U-Net stages: replacement and VDM reconstruction guidance; the
latent DiT: replacement of given latent frames on the flow path) and lists its
`conditioning_methods`; every other stage is refused with a ConfigError.

Every call samples windows of exactly the stage's trained shape [B, T, H, W, C]; which frames
are given is a traced boolean mask, so one compilation (per stage, method, step count and
batch size) serves every window, every mask and every w_r. The math is in
`cascade.diffusion.conditioning` (replacement and VDM reconstruction guidance).

  sample_given_frames(trained, given, mask)   fill in the frames where mask [T] is False
  predict_frames(trained, first)              the first c frames given, the rest generated
  extend(trained, first, target_frames, overlap=c)
      windows of T frames, each conditioned on the last c frames generated so far, until the
      clip has target_frames = F0 + k (T - c) frames (F0 = first.shape[1]).
  extend_video(trained, first_video, target, overlap=c)
      the same from pixel frames: a latent stage encodes them (the VAE's chunked causal path)
      and decodes the long latent clip chunk by chunk; target and overlap count the stage's
      output frames (latent frames for the latent DiT).

The frames above are in the stage's output space: pixels for U-Net stages, scaled latents
[B, t, h, w, c] for the latent DiT.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cascade import video_io
from cascade.configs import ConfigError
from cascade.diffusion import conditioning
from cascade.stages.stage import Batch, ShapeMismatchError, Stage, merge_model
from cascade.training import parallel
from cascade.training.trained import TrainedStage

METHODS = conditioning.METHODS


@functools.partial(jax.jit, static_argnames=("stage", "graphdef", "method", "steps"))
def _sample_window(params, given, mask, cond, w_r, key, *, stage, graphdef, method, steps):
    """One window [B,T,...] with the frames where mask [B,T] is True taken from `given`."""
    model = merge_model(graphdef, params)
    return stage.sample_given(model, key, cond, given, mask, method=method, w_r=w_r, steps=steps)


def conditionable_stage(trained: TrainedStage, method: str) -> Stage:
    """The trained stage, or ConfigError when it cannot sample given frames with `method`
    (`Stage.conditioning_methods`: Gaussian stages both methods, the latent DiT replacement)."""
    stage = trained.stage
    if not stage.conditioning_methods:
        raise ConfigError(
            f"{trained.workdir} holds a {stage.name} stage, which cannot be conditioned on given "
            "frames (a keyframes, temporal/spatial SR or latent_dit stage can)."
        )
    if method not in stage.conditioning_methods:
        raise ConfigError(
            f"method={method!r}: a {stage.name} stage samples given frames by "
            f"{' or '.join(stage.conditioning_methods)} only."
        )
    return stage


def check_frames(stage: Stage, frames: np.ndarray, what: str) -> None:
    """Refuse frames [B,F,H,W,C] whose resolution or channels differ from the stage's window."""
    _, h, w, c = stage.output_shape
    shape = tuple(np.shape(frames))
    if len(shape) != 5 or shape[2:] != (h, w, c):
        raise ShapeMismatchError(
            f"{what} has shape {shape} but the {stage.name} stage generates {h}x{w} frames "
            f"with {c} channel(s): expected [B, F, {h}, {w}, {c}]."
        )


def extension_windows(given_frames: int, target_frames: int, window: int, overlap: int) -> int:
    """Number of windows that take a clip of `given_frames` to exactly `target_frames`, each
    window of `window` frames conditioned on the last `overlap` frames so far (adding
    window - overlap frames). Raises ConfigError naming the numbers when none does."""
    if not 1 <= overlap < window:
        raise ConfigError(
            f"overlap={overlap} must be at least 1 and less than the stage's window of {window} "
            "frames (each window is conditioned on `overlap` frames and generates the rest)."
        )
    if given_frames < overlap:
        raise ConfigError(
            f"the first clip has {given_frames} frame(s), fewer than overlap={overlap}."
        )
    stride = window - overlap
    extra = target_frames - given_frames
    if extra < 0 or extra % stride:
        lower = given_frames + max(extra, 0) // stride * stride
        raise ConfigError(
            f"target_frames={target_frames} cannot be reached from {given_frames} given frames "
            f"with a window of {window} frames and overlap {overlap}: each window adds {stride}, "
            f"so reachable lengths are {given_frames} + k*{stride} (nearest: {lower} or "
            f"{lower + stride})."
        )
    return extra // stride


def _cond(stage: Stage, batch: int, labels: np.ndarray | None) -> Batch:
    if stage.input_shape is not None:
        raise ConfigError(
            f"a {stage.name} stage is conditioned on a low-resolution video; frame prediction "
            "and extension here are for a stage that generates from noise (keyframes)."
        )
    if labels is None:  # class-unconditional: the null label learnt with label dropout
        labels = np.full((batch,), stage.null_label, np.int32)
    labels = np.asarray(labels, np.int32)
    if labels.shape != (batch,):
        raise ShapeMismatchError(f"labels have shape {labels.shape}, expected ({batch},)")
    return {"label": labels}


def _run_window(
    trained: TrainedStage,
    given: np.ndarray,
    mask: np.ndarray,
    cond: Batch,
    *,
    method: str,
    w_r: float,
    key: jax.Array,
    steps: int | None,
) -> np.ndarray:
    stage = trained.stage
    mesh = trained.sampler.mesh
    inputs = {"given": np.asarray(given, np.float32), "mask": np.asarray(mask, bool), **cond}
    # The batch split over the data-parallel axes when it divides, as `Sampler` does.
    sharding = (
        parallel.batch_sharding(mesh)
        if len(given) % parallel.data_parallel_size(mesh) == 0
        else parallel.replicated(mesh)
    )
    with mesh:
        placed = parallel.global_array(inputs, sharding)
        given_d, mask_d = placed.pop("given"), placed.pop("mask")
        out = _sample_window(
            trained.params,
            given_d,
            mask_d,
            placed,
            jnp.float32(w_r),
            key,
            stage=stage,
            graphdef=trained.graphdef,
            method=method,
            steps=int(steps or stage.config.sample.steps),
        )
    return np.asarray(parallel.to_host(out), np.float32)


def sample_given_frames(
    trained: TrainedStage,
    given: np.ndarray,
    mask: np.ndarray,
    *,
    key: jax.Array,
    method: str = "reconstruction",
    w_r: float = 2.0,
    labels: np.ndarray | None = None,
    cond: Batch | None = None,
    steps: int | None = None,
) -> np.ndarray:
    """One window [B,T,H,W,C] (the stage's shape) keeping `given` where `mask` is True.

    given: [B,T,H,W,C] in [-1, 1] (values at unmasked frames are ignored); mask: bool [T]
    (the same frames known in every clip) or [B,T]. method: "replacement" or
    "reconstruction" (VDM eq. 7 with weight w_r; w_r = 0 is replacement). labels [B] (default
    the null label: class-unconditional); `cond` replaces {"label": labels} entirely (e.g. a
    super-resolution stage's {"label", "cond"}). steps: sampler steps (default the config's).
    """
    stage = conditionable_stage(trained, method)
    window = stage.output_shape
    check_frames(stage, given, "given")
    if np.shape(given)[1] != window[0]:
        raise ShapeMismatchError(
            f"given has {np.shape(given)[1]} frames; the {stage.name} stage's window is "
            f"{window[0]} frames (pass every frame, marking the known ones in mask)."
        )
    b = len(given)
    mask = np.asarray(mask, bool)
    mask = np.broadcast_to(mask, (b, window[0])) if mask.shape == (window[0],) else mask
    if mask.shape != (b, window[0]):
        raise ShapeMismatchError(
            f"mask has shape {mask.shape}, expected ({window[0]},) or {b, window[0]}"
        )
    if cond is None:
        cond = _cond(stage, b, labels)
    return _run_window(trained, given, mask, cond, method=method, w_r=w_r, key=key, steps=steps)


def predict_frames(
    trained: TrainedStage,
    first_frames: np.ndarray,
    *,
    key: jax.Array,
    method: str = "reconstruction",
    w_r: float = 2.0,
    labels: np.ndarray | None = None,
    steps: int | None = None,
) -> np.ndarray:
    """Frame prediction: first_frames [B,c,H,W,C] given, the stage's other T - c frames
    generated; returns [B,T,H,W,C] whose first c frames are first_frames exactly."""
    stage = conditionable_stage(trained, method)
    check_frames(stage, first_frames, "first_frames")
    c, window = np.shape(first_frames)[1], stage.output_shape[0]
    if not 1 <= c < window:
        raise ConfigError(
            f"frame prediction from c={c} given frames needs 1 <= c < {window}, the "
            f"{stage.name} stage's window (c >= {window} leaves nothing to generate)."
        )
    return extend(
        trained,
        first_frames,
        window,
        overlap=c,
        key=key,
        method=method,
        w_r=w_r,
        labels=labels,
        steps=steps,
    )


def extend(
    trained: TrainedStage,
    first_clip: np.ndarray,
    target_frames: int,
    *,
    overlap: int,
    key: jax.Array,
    method: str = "reconstruction",
    w_r: float = 2.0,
    labels: np.ndarray | None = None,
    steps: int | None = None,
) -> np.ndarray:
    """Autoregressive extension: first_clip [B,F0,H,W,C] (F0 >= overlap; a generated or real
    clip) continued window by window to [B,target_frames,H,W,C].

    Each window has the stage's trained shape [B,T,H,W,C]: its first `overlap` frames are the
    last `overlap` frames so far (given, by `method`; `Stage.window_context`: latent stages
    re-encode them), the other T - overlap are appended.
    target_frames must be F0 + k (T - overlap); window i samples with fold_in(key, i).
    """
    stage = conditionable_stage(trained, method)
    check_frames(stage, first_clip, "first_clip")
    window = stage.output_shape
    video = np.asarray(first_clip, np.float32)
    b = len(video)
    count = extension_windows(video.shape[1], target_frames, window[0], overlap)
    cond = _cond(stage, b, labels)
    mask = np.zeros((b, window[0]), bool)
    mask[:, :overlap] = True
    latest = video  # what the next window continues: the first clip, then the last window
    for i in range(count):
        given = np.zeros((b, *window), np.float32)
        given[:, :overlap] = stage.window_context(latest, overlap)
        out = _run_window(
            trained,
            given,
            mask,
            cond,
            method=method,
            w_r=w_r,
            key=jax.random.fold_in(key, i),
            steps=steps,
        )
        video = np.concatenate([video, out[:, overlap:]], axis=1)
        latest = out
    return video


def extend_video(
    trained: TrainedStage,
    first_video: np.ndarray,
    target_frames: int,
    *,
    overlap: int,
    key: jax.Array,
    method: str = "replacement",
    w_r: float = 0.0,
    labels: np.ndarray | None = None,
    steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`extend` from pixel frames, for any conditionable stage: first_video [B,F,H,W,C] in
    [-1, 1] goes through `Stage.frames_to_outputs` (the latent DiT: F = 1 + 4k frames, encoded
    with the VAE's chunked causal path), is extended to `target_frames` output frames with
    `overlap` (both counted in the stage's output frames: latent frames for the DiT), and
    decoded with `Stage.to_video` (long latents: chunk by chunk, constant memory).

    Returns (video [B, F', H, W, C] in [-1, 1], outputs [B, target_frames, ...])."""
    stage = conditionable_stage(trained, method)
    first = stage.frames_to_outputs(np.asarray(first_video, np.float32))
    outputs = extend(
        trained,
        first,
        target_frames,
        overlap=overlap,
        key=key,
        method=method,
        w_r=w_r,
        labels=labels,
        steps=steps,
    )
    return stage.to_video(outputs), outputs


VIDEO_SUFFIXES = (".gif", ".mp4", ".npy")


def read_condition_video(path: str, frame_shape: tuple[int, int, int]) -> np.ndarray:
    """Conditioning frames from a file: clips [N, F, H, W, C] in [-1, 1].

    .gif / .mp4 (read with imageio: one clip, uint8 RGB, averaged to grey when C = 1) or .npy
    ([F,H,W,C] or [N,F,H,W,C]; uint8, or float in [-1, 1]). frame_shape (H, W, C) is what the
    stage generates; other resolutions raise ShapeMismatchError naming the expected shape."""
    import imageio.v3 as iio  # only this reader needs it

    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ConfigError(f"--condition_video={path}: use a {' / '.join(VIDEO_SUFFIXES)} file.")
    if not Path(path).is_file():
        raise ConfigError(f"--condition_video={path}: no such file.")
    if suffix == ".npy":
        video = np.load(path)
    else:
        video = np.asarray(iio.imread(path, index=None))  # [F, H, W, 3 or 4] uint8
        if video.ndim == 3:  # a one-frame GIF
            video = video[None]
        video = video[..., :3]
        if frame_shape[2] == 1:
            video = np.round(video.mean(axis=-1, keepdims=True)).astype(np.uint8)
    video = video[None] if video.ndim == 4 else video
    h, w, c = frame_shape
    if video.ndim != 5 or video.shape[2:] != (h, w, c):
        raise ShapeMismatchError(
            f"--condition_video={path} has frames of shape {video.shape[2:] if video.ndim == 5 else video.shape} "
            f"but the stage generates {h}x{w} frames with {c} channel(s): expected "
            f"[F, {h}, {w}, {c}] or [N, F, {h}, {w}, {c}] (resize the video to {h}x{w})."
        )
    if video.dtype == np.uint8:
        return video.astype(np.float32) / 127.5 - 1.0
    return np.clip(video.astype(np.float32), -1.0, 1.0)


def given_frames_mask(num_frames: int, *, first: int = 0, every: int = 0) -> np.ndarray:
    """Bool [num_frames]: True on the first `first` frames and on every `every`-th frame
    (0, every, 2 every, ...; every = 0: none)."""
    mask = np.zeros((num_frames,), bool)
    mask[:first] = True
    if every:
        mask[::every] = True
    return mask


GIVEN_COLOR = (0, 200, 0)  # green: frames that were given (conditioning)
GENERATED_COLOR = (220, 0, 0)  # red: frames the model generated


def mark_given_frames(
    frames: np.ndarray,
    mask: np.ndarray,
    *,
    width: int = 1,
    given_color: tuple[int, int, int] = GIVEN_COLOR,
    generated_color: tuple[int, int, int] = GENERATED_COLOR,
) -> np.ndarray:
    """Frames [N,T,H,W,C] (float in [-1, 1] or uint8; C = 1 or 3) framed by a coloured border
    of `width` pixels: `given_color` where mask ([T] or [N,T], bool) is True, else
    `generated_color`. Returns uint8 RGB [N, T, H + 2 width, W + 2 width, 3]; the picture
    itself is untouched (the border is padding, so small frames keep every pixel)."""
    video = video_io.to_uint8(frames)
    if video.ndim != 5:
        raise ShapeMismatchError(f"frames have shape {np.shape(frames)}, expected [N,T,H,W,C]")
    n, t = video.shape[:2]
    if np.shape(mask) not in ((t,), (n, t)):
        raise ShapeMismatchError(f"mask has shape {np.shape(mask)}, expected ({t},) or {n, t}")
    mask = np.broadcast_to(np.asarray(mask, bool), (n, t))
    color = np.where(mask[..., None], np.asarray(given_color), np.asarray(generated_color))
    color = color.astype(np.uint8)  # [N, T, 3]
    out = np.broadcast_to(
        color[:, :, None, None, :],
        (n, t, video.shape[2] + 2 * width, video.shape[3] + 2 * width, 3),
    ).copy()
    out[:, :, width : width + video.shape[2], width : width + video.shape[3]] = video
    return out
