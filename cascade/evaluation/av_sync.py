"""Audio-visual synchrony of bouncing_shapes clips with sound (real or generated).

Per clip, two independent detectors, neither of which reads ground-truth states:
1. Audio onsets (`detect_onsets`): spectral flux (summed positive rise of the log
   magnitude spectrum between STFT frames of 256 samples, hop 32) peak-picked above an
   absolute threshold, one onset per `min_gap` seconds at most. Times in video frames.
2. Video impacts (`detect_impacts`): the physics tracker (`physics.segment`/`observe`)
   gives each colour's centroid per frame; an impact is a reversal of the vertical
   velocity from down to up (floor) or of the horizontal one (wall). Its sub-frame
   time is where the two arcs around the reversal cross: with the known gravity g,
   z(t) = y(t) - g t^2 / 2 is linear on each ballistic arc, so the crossing of the
   line through the two frames before and the line through the two frames after is the
   exact bounce time for exact centroids (walls: the same with g = 0).

Scores (`sync_scores`, pooled over clips; offsets are audio minus video, in frames):
  offset_median, offset_abs_mean   signed median / mean absolute offset of each onset to
                                   its nearest video impact
  within_half, within_1            fraction of onsets within +-0.5 / +-1 frame of an impact
  precision, recall, f1            one-to-one matching of onsets (predictions) to video
                                   impacts (references) within `tolerance` frames
                                   (default 0.5: a one-frame shift must count as a miss)
Audio statistics against real tracks (`audio_statistics`, `statistics_distance`):
1-D Wasserstein distances between the distributions of per-frame loudness (dBFS),
spectral centroid (Hz, frames above -50 dBFS) and onsets per second.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from cascade.data.builders import bouncing_shapes as bs
from cascade.evaluation import physics
from cascade.models import audio_frontend

ONSET_FFT = 256
ONSET_HOP = 32
ONSET_THRESHOLD = 8.0  # flux units (sum over bins of log-magnitude rises); noise floor < 3
MIN_GAP = 0.04  # s: strikes closer than this are heard as one onset
MIN_STEP = 0.25  # px/frame at REFERENCE_RESOLUTION: slower steps are tracker jitter
LOUDNESS_FLOOR = -50.0  # dBFS: quieter frames are silence for the spectral centroid


def onset_strength(audio: np.ndarray) -> np.ndarray:
    """Spectral flux of a mono track float [S] in [-1, 1]: float64 [ceil(S / ONSET_HOP)]."""
    mag = np.abs(audio_frontend.stft(audio, ONSET_FFT, ONSET_HOP))
    logmag = np.log1p(10.0 * mag)  # compression: the -60 dBFS noise floor stays near 0
    flux = np.maximum(np.diff(logmag, axis=0), 0.0).sum(-1)
    return np.concatenate([[0.0], flux])


def detect_onsets(
    audio: np.ndarray, sample_rate: int, fps: float, threshold: float = ONSET_THRESHOLD
) -> np.ndarray:
    """Onset times of a mono track float [S] in [-1, 1], in video frames: float64 [N], sorted.

    A flux peak is an onset when it is the largest value within +-MIN_GAP and above
    `threshold`. The time is the peak STFT frame's centre minus half a hop (the rise
    happened between it and the previous frame).
    """
    flux = onset_strength(audio)
    gap = max(1, int(MIN_GAP * sample_rate / ONSET_HOP))
    padded = np.pad(flux, gap, constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * gap + 1)
    peak = (flux >= windows.max(-1)) & (flux > threshold)
    # Plateaus (equal neighbours) would count twice: keep the first frame of each.
    peak[1:] &= ~(peak[:-1] & (flux[1:] == flux[:-1]))
    seconds = (np.flatnonzero(peak) - 0.5) * ONSET_HOP / sample_rate
    return seconds * fps


def _crossing(t_pre: np.ndarray, z_pre: np.ndarray, t_post: np.ndarray, z_post: np.ndarray):
    """Time where the line through (t_pre, z_pre) meets the line through (t_post, z_post)."""
    s1 = (z_pre[1] - z_pre[0]) / (t_pre[1] - t_pre[0])
    s2 = (z_post[1] - z_post[0]) / (t_post[1] - t_post[0])
    if not np.isfinite(s1 - s2) or abs(s1 - s2) < 1e-6:
        return np.nan
    return (z_post[0] - z_pre[0] + s1 * t_pre[0] - s2 * t_post[0]) / (s1 - s2)


def _reversals(track: np.ndarray, g: float, min_step: float, floor_only: bool) -> list[float]:
    """Impact times (frames) along one coordinate track float [T] (NaN where unseen)."""
    t_len = len(track)
    steps = np.diff(track)
    sign = np.where(np.abs(steps) >= min_step, np.sign(steps), 0.0)  # 0: unseen or jitter
    valid = np.flatnonzero(sign != 0)
    frames = np.arange(t_len, dtype=np.float64)
    z = track - 0.5 * g * frames**2
    times = []
    for j, k in zip(valid[:-1], valid[1:], strict=True):
        if k - j > 2 or sign[j] == sign[k] or (floor_only and sign[j] < 0):
            continue  # no reversal, or too long a gap to place it; up->down is an apex
        lo, hi = float(j), float(k + 1)  # the bounce lies between these frames
        estimate = np.nan
        if j >= 1 and k + 2 < t_len:
            pre, post = np.array([j - 1, j]), np.array([k + 1, k + 2])
            if np.isfinite(z[pre]).all() and np.isfinite(z[post]).all():
                estimate = _crossing(pre, z[pre], post, z[post])
        if not np.isfinite(estimate) or not lo <= estimate <= hi:
            estimate = 0.5 * (lo + hi)
        times.append(float(estimate))
    return times


def detect_impacts(video: np.ndarray, *, color_threshold: float = 100.0) -> np.ndarray:
    """Impact times (frames, sub-frame) seen in one clip [T, H, W, 3] (uint8 or [-1, 1]):
    float64 [N], sorted. See the module docstring."""
    video = physics.to_rgb255(video)
    resolution = video.shape[1]
    c = bs.scaled_constants(resolution)
    obs = physics.observe(physics.segment(video, color_threshold))
    times: list[float] = []
    for p in range(obs["present"].shape[1]):
        if obs["present"][:, p].sum() < 3:
            continue
        y, x = obs["centroid"][:, p, 0], obs["centroid"][:, p, 1]
        min_step = MIN_STEP * c["scale"]
        times += _reversals(y, c["gravity"], min_step, floor_only=True)
        times += _reversals(x, 0.0, min_step, floor_only=False)
    return np.sort(np.array(times, np.float64))


def match(onsets: np.ndarray, impacts: np.ndarray, tolerance: float) -> int:
    """Pairs matched one-to-one within `tolerance` frames, closest pairs first."""
    if not len(onsets) or not len(impacts):
        return 0
    d = np.abs(onsets[:, None] - impacts[None, :])
    pairs = np.argwhere(d <= tolerance)
    pairs = pairs[np.argsort(d[pairs[:, 0], pairs[:, 1]], kind="stable")]
    used_o, used_i, n = set(), set(), 0
    for i, j in pairs:
        if i not in used_o and j not in used_i:
            used_o.add(i)
            used_i.add(j)
            n += 1
    return n


def sync_scores(
    onsets: list[np.ndarray], impacts: list[np.ndarray], tolerance: float = 0.5
) -> dict[str, float]:
    """Pooled synchrony scores (see the module docstring) of per-clip onset and impact times
    (frames; lists of float [N_i] and [M_i], one entry per clip)."""
    matched = sum(match(on, im, tolerance) for on, im in zip(onsets, impacts, strict=True))
    n_on = sum(len(o) for o in onsets)
    n_im = sum(len(i) for i in impacts)
    off = offsets(onsets, impacts)
    precision = matched / n_on if n_on else float("nan")
    recall = matched / n_im if n_im else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    # Onsets with no impact in their clip count as out of sync in the fractions.
    return {
        "onsets": float(n_on),
        "impacts": float(n_im),
        "offset_median": float(np.median(off)) if off.size else float("nan"),
        "offset_abs_mean": float(np.abs(off).mean()) if off.size else float("nan"),
        "within_half": float((np.abs(off) <= 0.5).sum() / n_on) if n_on else float("nan"),
        "within_1": float((np.abs(off) <= 1.0).sum() / n_on) if n_on else float("nan"),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def offsets(onsets: list[np.ndarray], impacts: list[np.ndarray]) -> np.ndarray:
    """Every onset's signed offset (frames) to its clip's nearest video impact: float64 [N]."""
    out = [
        on - im[np.abs(on[:, None] - im[None, :]).argmin(1)]
        for on, im in zip(onsets, impacts, strict=True)
        if len(on) and len(im)
    ]
    return np.concatenate(out) if out else np.zeros(0)


def audio_statistics(
    audio: np.ndarray, sample_rate: int, samples_per_frame: int
) -> dict[str, np.ndarray]:
    """Pooled distributions of tracks float [B, S]: per-video-frame loudness (dBFS, [B * T]),
    spectral centroid (Hz) of the STFT frames above LOUDNESS_FLOOR, onsets per second [B]."""
    audio = np.asarray(audio, np.float64)
    b, s = audio.shape
    frames = audio[:, : s // samples_per_frame * samples_per_frame].reshape(
        b, -1, samples_per_frame
    )
    loud = 10 * np.log10(np.mean(frames**2, -1) + 1e-10).ravel()
    mag = np.abs(audio_frontend.stft(audio, ONSET_FFT, ONSET_HOP)) ** 2
    freqs = np.fft.rfftfreq(ONSET_FFT, 1.0 / sample_rate)
    energy = mag.sum(-1)
    centroid = (mag @ freqs) / np.maximum(energy, 1e-20)
    # Parseval: a frame of RMS r has energy ~ r^2 * sum(window^2) * n_fft / 2 in the rfft bins.
    window_sq = np.sin(np.pi * np.arange(ONSET_FFT) / ONSET_FFT) ** 4
    level = 10 * np.log10(energy / (window_sq.sum() * ONSET_FFT / 2) + 1e-20)
    fps = sample_rate / samples_per_frame
    rate = [len(detect_onsets(a, sample_rate, fps)) / (s / sample_rate) for a in audio]
    return {
        "loudness_db": loud,
        "centroid_hz": centroid[level > LOUDNESS_FLOOR],
        "onset_rate": np.array(rate, np.float64),
    }


def statistics_distance(
    generated: dict[str, np.ndarray], real: dict[str, np.ndarray]
) -> dict[str, float]:
    """1-D Wasserstein distance per `audio_statistics` entry (NaN where one side is empty)."""
    out = {}
    for key in real:
        a, b = generated[key], real[key]
        out[f"w1_{key}"] = float(stats.wasserstein_distance(a, b)) if a.size and b.size else np.nan
    return out
