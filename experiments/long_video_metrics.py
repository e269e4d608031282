"""What experiments/long_video.py measures of a long clip: content metrics and FVD in windows
along time and over the whole clip, and the XLA FLOPs of generating it.

Metrics per data set (per clip, then averaged over clips, NaN-aware):
  bouncing_shapes  teleports, permanence_violations (object permanence after occlusion),
                   gravity_error (|fitted g - the builder's g| / g), count_drift (|objects seen
                   - objects in the real clip|), identity (shape constancy of each object)
  moving_digits    identity (identity stability: frames a tracked digit keeps its class),
                   cv_residual (px, constant-velocity motion residual), count_drift (|digits
                   read - digits in the real clip|)
  both             empty_scene (1 where no object / digit is found at all; the violation counts
                   of such a clip are undefined, NaN, not 0: an empty scene violates nothing);
                   fvd: Kinetics-I3D FVD of the window across clips vs real windows of the
                   same length (2 x as many real windows as clips), when enabled and >= 9 frames.

Windows tile the whole clip, given frames included (window 0 holds the seam between the given
and the generated frames); the whole-clip content metrics are taken on the generated frames
only, so the real given frames cannot stand in for objects a method lost after them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cascade.evaluation.aggregate import finite_mean

METRICS = {
    "bouncing_shapes": (
        "teleports",
        "permanence_violations",
        "gravity_error",
        "count_drift",
        "identity",
        "empty_scene",
    ),
    "moving_digits": ("identity", "cv_residual", "count_drift", "empty_scene"),
}


def per_clip_content(
    videos: np.ndarray, reference: dict[str, np.ndarray], dataset: str, labels=None
) -> dict[str, np.ndarray]:
    """METRICS[dataset] per clip ([N] each, NaN where undefined) of clips [N, F, H, W, C] in
    [-1, 1]; `reference` is `_per_clip` of the real clips (for the count drift; clip i of
    `videos` continues real clip i mod M)."""
    per_clip = _per_clip(videos, dataset, labels)
    ref_count = np.resize(reference["count"], len(videos))
    empty = per_clip["count"] == 0
    out = {"count_drift": np.abs(per_clip["count"] - ref_count), "empty_scene": empty * 1.0}
    for key in METRICS[dataset]:  # violations are NaN in an empty scene (`physics_scoring`)
        if key not in out:
            out[key] = np.asarray(per_clip[key], np.float64)
    return out


def _per_clip(videos: np.ndarray, dataset: str, labels=None) -> dict[str, np.ndarray]:
    """Per-clip arrays [N]: the METRICS[dataset] values and `count` (objects / digits seen)."""
    if dataset == "bouncing_shapes":
        from cascade.evaluation import physics, physics_scoring

        m = physics.physics_metrics(videos)
        g = physics_scoring.Limits(videos.shape[2]).gravity
        return {
            "teleports": m["teleports"].astype(float),
            "permanence_violations": m["permanence_violations"].astype(float),
            "gravity_error": np.abs(m["gravity_estimate"] - g) / g,
            "identity": m["shape_constancy"],
            "count": m["num_objects"].astype(float),
        }
    from cascade.evaluation import digits

    m = digits.digit_metrics(videos, labels)
    return {
        "identity": m["identity_stability"],
        "cv_residual": m["cv_residual"],
        "count": m["num_digits"].astype(float),
    }


def long_video_metrics(
    video: np.ndarray,
    real: np.ndarray,
    *,
    dataset: str,
    window: int,
    given: int = 0,
    labels: np.ndarray | None = None,
    fvd_videos: int = 0,
    cache: Any = None,
) -> dict[str, Any]:
    """Content metrics and FVD of long clips video [N, F, H, W, C] (F a multiple of `window`)
    against real clips [M, R, H, W, C] (R >= window), per window of `window` frames and whole
    (content metrics: frames given.. F, the generated ones; FVD: every window pooled).

    Returns {"starts": [F // window window start frames], "windows": {metric: [values per
    window]}, "whole": {metric: value over whole clips}, "fvd_reason": why FVD is missing or
    None, "per_clip": {"whole": {metric: [N]}, "windows": {metric: [windows, N]}}} (content
    metrics; the others are their NaN-aware means over clips). FVD of a window: its first
    `fvd_videos` clips vs 2 x as many real windows (window 0 of every real clip first);
    whole: every window of those clips pooled."""
    from cascade.evaluation import evaluate

    count = video.shape[1] // window
    reference = {"count": _per_clip(real, dataset)["count"]}
    starts = [k * window for k in range(count)]
    windows: dict[str, list] = {k: [] for k in (*METRICS[dataset], "fvd")}
    clips_per_window: dict[str, list] = {k: [] for k in METRICS[dataset]}
    for s in starts:
        scores = per_clip_content(video[:, s : s + window], reference, dataset, labels)
        for key, values in scores.items():
            windows[key].append(finite_mean(values))
            clips_per_window[key].append(values)
    clips_whole = per_clip_content(video[:, given:], reference, dataset, labels)
    whole = {key: finite_mean(values) for key, values in clips_whole.items()}
    n = min(fvd_videos, len(video))
    reason = None
    if n < 2:
        reason = f"FVD off (fvd_videos={fvd_videos})"
    elif window < evaluate.MIN_I3D_FRAMES:
        reason = f"{window}-frame windows are shorter than the {evaluate.MIN_I3D_FRAMES} I3D needs"
    if reason is None:
        per_window, whole["fvd"] = _window_fvd(video[:n], real, window, cache)
        windows["fvd"] = per_window
    else:
        windows["fvd"] = [None] * count
        whole["fvd"] = None
    per_clip = {
        "whole": clips_whole,
        "windows": {key: np.stack(values) for key, values in clips_per_window.items()},
    }
    return {
        "starts": starts,
        "windows": windows,
        "whole": whole,
        "fvd_reason": reason,
        "per_clip": per_clip,
    }


def _window_fvd(video: np.ndarray, real: np.ndarray, window: int, cache) -> tuple[list, float]:
    """FVD of each window of `video` [n, F, ...] vs the real windows, and of all pooled."""
    from cascade.evaluation import fvd

    # Real windows window-major (window 0 of every clip first), so a prefix spans clips; 2n
    # of them: I3D costs seconds per clip on a CPU, and n fake clips face 2n real ones.
    n = len(video)
    real_w = np.concatenate(
        [real[:, s : s + window] for s in range(0, real.shape[1] - window + 1, window)]
    )[: 2 * n]
    protocol = fvd.FVDProtocol(num_videos=n, clip_length=window, batch_size=min(8, n))
    cache = cache or fvd.FeatureCache()
    extractor = cache.extractor(protocol)
    real_f = cache.features(extractor, real_w)
    fake_f = [
        cache.features(extractor, video[:, s : s + window])
        for s in range(0, video.shape[1] - window + 1, window)
    ]
    per_window = [fvd.fvd_from_features(real_f, f, protocol)["fvd"] for f in fake_f]
    return per_window, fvd.fvd_from_features(real_f, np.concatenate(fake_f), protocol)["fvd"]


def generation_flops(method: str, trained, first: np.ndarray, lengths) -> dict[str, float]:
    """Loop-aware XLA FLOPs of generating long clips from first [N, G, H, W, C] with one
    method (`experiments.long_video.generate`): every sampled window or chunk, the VAE encode
    of the given frames and the decode of the long latents (DiTs), and the bidirectional
    DiT's per-window re-encoding of its given latents. Lowered from shapes."""
    import jax
    import jax.numpy as jnp

    from cascade.diffusion.rollout import chunk_step
    from cascade.evaluation.cost import xla_flops
    from cascade.sampling.rollout import context_step
    from cascade.stages.stage import merge_model

    stage, graphdef, params = trained.stage, trained.graphdef, trained.params
    n = len(first)
    key = jax.random.key(0)
    labels = jnp.zeros((n,), jnp.int32)
    total, unknown = 0.0, 0

    def add(counted: dict[str, float], times: int = 1) -> None:
        nonlocal total, unknown
        total += times * counted["flops"]
        unknown += counted["loops_counted_once"]

    if method in ("cascade", "latent_dit"):
        window = stage.output_shape
        given = jnp.zeros((n, *window), jnp.float32)
        mask = jnp.zeros((n, window[0]), bool)
        steps = int(stage.config.sample.steps)
        fn_method = "reconstruction" if method == "cascade" else "replacement"

        def sample(p, given, mask, labels, w_r, key):
            model = merge_model(graphdef, p)
            return stage.sample_given(model, key, {"label": labels}, given, mask,
                                      method=fn_method, w_r=w_r, steps=steps)  # fmt: skip

        if method == "cascade":
            windows = (lengths.keyframes - lengths.given) // (window[0] - lengths.given)
        else:
            windows = (lengths.dit_latents - lengths.given_latents) // (
                window[0] - lengths.given_latents
            )
        add(xla_flops(sample, params, given, mask, labels, jnp.float32(2.0), key), windows)
    else:
        spec = stage.rollout_spec()
        label = stage.labels({"label": labels})
        from cascade.models.kv_cache import rollout_cache

        cache = rollout_cache(
            stage.model_config, n, spec.chunk_shape, spec.window,
            guided=label is not None and spec.guidance_scale > 0,
        )  # fmt: skip
        chunk = jnp.zeros((n, *spec.chunk_shape), jnp.float32)

        def step(p, cache, key, label):
            return chunk_step(merge_model(graphdef, p), cache, key, jnp.int32(0), batch=n,
                              spec=spec, label=label)  # fmt: skip

        def prefill(p, cache, key, chunk, label):
            return context_step(merge_model(graphdef, p), cache, key, jnp.int32(0), chunk,
                                spec=spec, label=label)  # fmt: skip

        given_chunks = lengths.given_latents // spec.chunk_shape[0]
        add(xla_flops(prefill, params, cache, key, chunk, label), given_chunks)
        add(xla_flops(step, params, cache, key, label), lengths.chunks - given_chunks)
    if method != "cascade":  # the DiTs work in the VAE's latent space
        vae = stage.vae
        per = vae.LATENTS_PER_CHUNK
        latent_frame = stage.output_shape[1:]

        def encode(p, x):
            return merge_model(vae.graphdef, p).encode_chunked(x, per)[0]

        def decode(p, z):
            return merge_model(vae.graphdef, p).decode_chunked(z, per)

        def decode_flops(latents: int) -> dict[str, float]:
            z = jnp.zeros((n, latents, *latent_frame), jnp.float32)
            return xla_flops(decode, vae.params, z)

        add(xla_flops(encode, vae.params, jnp.asarray(first, jnp.float32)))
        if method == "causal_dit":
            add(decode_flops(lengths.chunks * stage.spec.chunk_shape[0]))
        else:
            final = decode_flops(lengths.dit_latents)
            add(final)
            # Every window after the first re-encodes its given latents from the clip so far,
            # decoded whole (`Stage.window_context`): decode of g + i * stride latents and
            # encode of the last 1 + 4 (g - 1) frames, windows i = 1 .. windows - 1. The
            # chunked decoder's work is linear in the latents: interpolated between two
            # compiled lengths rather than compiling every length.
            g = lengths.given_latents
            stride = window[0] - g
            if windows > 1:
                tail = jnp.zeros((n, 1 + 4 * (g - 1), *first.shape[2:]), jnp.float32)
                add(xla_flops(encode, vae.params, tail), windows - 1)
                lo, hi = g + stride, lengths.dit_latents
                lo_flops = decode_flops(lo)
                slope = (final["flops"] - lo_flops["flops"]) / max(hi - lo, 1)
                for i in range(1, windows):
                    total += lo_flops["flops"] + slope * (g + i * stride - lo)
    return {"flops": total, "loops_counted_once": unknown}
