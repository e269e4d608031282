"""How experiments/long_video.py makes its long clips: the frame counts (`Lengths`), the real
clips every method continues (`given_clips`), and each method's generation (`generate`: the
causal DiT's KV-cache rollout, the bidirectional DiT's window-by-window extension by
replacement, the keyframe stage's extension with reconstruction guidance).
"""

from __future__ import annotations

import math

import numpy as np

LENGTH = 8  # generated clips are LENGTH x the trained length
W_R = 2.0  # reconstruction guidance weight of the cascade (VDM: w_r > 1 helps)
REAL_VIEW_SEED = 0  # every training seed continues the same real clips


class Lengths:
    """Frame counts of the experiment from the trained pixel length T and latent frames n:
    G given pixel frames (g latents), target = LENGTH x T pixel frames; each method generates
    at least `target` frames (its own stride) and is cut to `target`."""

    def __init__(self, frames: int, latents: int, chunk: int):
        self.frames, self.latents, self.chunk = frames, latents, chunk
        self.given_latents = (latents + 1) // 2
        self.given = 1 + 4 * (self.given_latents - 1)  # the causal VAE's 1 + 4k frames
        self.target = LENGTH * frames
        # Latents decoding to >= target frames, whole chunks for the causal rollout.
        self.chunks = math.ceil((math.ceil((self.target - 1) / 4) + 1) / chunk)
        stride = latents - self.given_latents  # the bidirectional DiT's window stride
        self.dit_latents = self.given_latents + stride * math.ceil(
            (self.chunks * chunk - self.given_latents) / stride
        )
        kf_stride = frames - self.given
        self.keyframes = self.given + kf_stride * math.ceil((self.target - self.given) / kf_stride)


def generate(
    method: str, trained, first: np.ndarray, labels, key, lengths: Lengths, warmup: bool = False
) -> np.ndarray:
    """One method's long clips [N, target, H, W, C] in [-1, 1] from the given frames
    first [N, G, H, W, C]; `trained` is the causal DiT's `ChunkRollout` (built once: its jitted
    steps are compiled on the first call) or the other methods' trained stage. warmup: only
    compile (the cascade's one window, which every window reuses; the DiTs' whole run, as
    their VAE decode compiles per length); returns what was generated."""
    from cascade.sampling import conditional

    n = len(first)
    if method == "cascade":
        target = lengths.frames if warmup else lengths.keyframes
        video = conditional.extend(
            trained, first, target, overlap=lengths.given, key=key,
            method="reconstruction", w_r=W_R, labels=labels,
        )  # fmt: skip
    elif method == "latent_dit":
        video, _ = conditional.extend_video(
            trained, first, lengths.dit_latents, overlap=lengths.given_latents, key=key,
            method="replacement", labels=labels,
        )  # fmt: skip
    else:
        stage = trained.stage
        cond = {"label": np.zeros(n, np.int32) if labels is None else np.asarray(labels, np.int32)}
        given = stage.frames_to_outputs(first)
        latents = trained.latents(cond, key, lengths.chunks, given=given)
        video = stage.vae.decode_long(latents)
    if warmup:
        return video
    if video.shape[1] < lengths.target:
        raise AssertionError(f"{method}: {video.shape[1]} < {lengths.target} frames generated")
    return video[:, : lengths.target]


def given_clips(dataset: str, kf_config, lengths: Lengths, count: int):
    """The real view of the first `count` test clips [N, >= target frames, ...] (read with the keyframe
    stage's config), their first G frames (what every method continues) and their labels
    (moving_digits; None otherwise)."""
    from cascade.data import pipeline
    from cascade.evaluation import continuation

    clips = pipeline.test_clips(kf_config.data, count)
    real = continuation.real_view(clips["video"], kf_config, lengths.target, REAL_VIEW_SEED)
    labels = clips["label"] if dataset == "moving_digits" else None
    return real, real[:, : lengths.given], labels
