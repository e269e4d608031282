"""Reading moving_digits videos: digit identity and position per frame, and metrics.

A `DigitReader` finds digits as connected ink blobs (position = ink centroid, the
same definition as the builder's `positions` feature) and classifies each blob with a
k-nearest-neighbour classifier on crops of the builder's own train-pool
glyphs, cut exactly the way they are cut at test time. Its accuracy is measured on test-split
clips (`reader_accuracy`), whose glyphs the classifier never saw.

Metrics of a batch of videos (`digit_metrics`):
  identity_stability: per tracked digit, the fraction of frames read as its majority
    class (a generated digit that morphs into another scores < 1);
  cv_residual: RMS residual (px) of constant-velocity fits of each track between wall
    bounces (the builder's digits move at constant velocity and reflect off walls;
    ground truth scores ~0.3 px, the rounding of glyph positions to whole pixels);
  num_tracks vs num_digits: broken or spurious trajectories;
  label_match (given labels): the label is the majority class of some track.
Frames where digits overlap cannot be read; they are skipped (tracks bridge them).

The Inception-Score analogue (`clip_class_probs`, `inception_score`): exp E_x KL(p(y|x) ||
p(y)) with the reader as the classifier, p(y|x) a clip's mean class probabilities.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from cascade.data.builders import moving_digits as md

CROP = 12  # classifier input side (crops are resized to CROP x CROP)
INK = 0.2 * 255  # a pixel brighter than this is ink


def to_gray255(videos: np.ndarray) -> np.ndarray:
    """uint8, or float in [-1, 1], [..., H, W, 1] -> float32 [..., H, W] in [0, 255]."""
    videos = np.asarray(videos)
    x = (
        videos.astype(np.float32)
        if videos.dtype == np.uint8
        else (np.clip(videos, -1, 1) + 1) * 127.5
    )
    return x[..., 0].astype(np.float32)


def detect(frame: np.ndarray, limits: dict[str, float]) -> list[dict[str, Any]]:
    """Ink blobs of one frame [H, W] (0-255): centroid (y, x), crop [CROP, CROP], merged.

    Pieces of one digit closer than 2 px are joined. A blob taller, wider or heavier
    than any single glyph (`limits`: height, width, mass, min_mass, glyph) is marked
    merged (overlapping digits) and gets no crop.
    """
    ink = frame > INK
    comps, n = ndimage.label(ndimage.binary_dilation(ink, iterations=1), np.ones((3, 3)))
    out = []
    for i in range(1, n + 1):
        rows, cols = np.nonzero((comps == i) & ink)
        w = frame[rows, cols]
        mass = w.sum()
        if mass < limits["min_mass"]:
            continue
        centroid = np.array([(w * rows).sum(), (w * cols).sum()]) / mass
        merged = (
            np.ptp(rows) + 1 > limits["height"] + 1
            or np.ptp(cols) + 1 > limits["width"] + 1
            or mass > 1.05 * limits["mass"]
        )
        weights = np.zeros_like(frame)
        weights[rows, cols] = w
        out.append(
            {
                "centroid": centroid,
                "merged": bool(merged),
                "crop": None if merged else _crop(weights, centroid, int(limits["glyph"])),
            }
        )
    return out


def _crop(image: np.ndarray, centre: np.ndarray, glyph: int) -> np.ndarray:
    """glyph x glyph window around `centre` (zero-padded), resized to CROP x CROP, / 255."""
    pad = glyph
    padded = np.pad(image, pad)
    y0, x0 = (np.rint(centre).astype(int) - glyph // 2) + pad
    window = padded[y0 : y0 + glyph, x0 : x0 + glyph]
    return ndimage.zoom(window, CROP / glyph, order=1)[:CROP, :CROP] / 255.0


class DigitReader:
    """Digit classifier for moving_digits frames at one resolution.

    k-nearest-neighbours (k = 5, inverse-distance weighted, in numpy) on CROP x CROP
    ink crops of every train-pool glyph at `copies` random placements: it "trains" in
    about a second and reads unseen (test-pool) glyphs with ~97% accuracy at 64 x 64.
    """

    def __init__(self, resolution: int, *, copies: int = 4, seed: int = 0, k: int = 5):
        self.resolution = resolution
        self.glyph = md.glyph_size(resolution)
        images, labels, _ = md.glyphs(self.glyph)
        pool = md.split_pool("train", len(images))
        ink = images[pool] > INK
        mass = np.where(ink, images[pool], 0).reshape(len(pool), -1).sum(1)
        self.limits = {
            "glyph": self.glyph,
            "height": float(ink.any(2).sum(1).max()),
            "width": float(ink.any(1).sum(1).max()),
            "mass": float(mass.max()),
            "min_mass": 0.2 * float(mass.min()),
        }
        rng = np.random.default_rng(seed)
        x, y = [], []
        canvas = self.glyph + 8  # detection is translation invariant: a small canvas will do
        for idx in pool:
            for _ in range(copies):
                frame = np.zeros((canvas, canvas), np.float32)
                y0, x0 = rng.integers(0, canvas - self.glyph + 1, size=2)
                frame[y0 : y0 + self.glyph, x0 : x0 + self.glyph] = images[idx]
                blobs = [b for b in detect(frame, self.limits) if not b["merged"]]
                if len(blobs) == 1:
                    x.append(blobs[0]["crop"].ravel())
                    y.append(labels[idx])
        self.k = k
        self.train_x = np.array(x, np.float32)
        self.train_y = np.array(y)
        self.train_sq = (self.train_x**2).sum(1)

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        """Class probabilities [N, 10] of flattened crops [N, CROP * CROP]: the
        inverse-distance-weighted vote of the k nearest training crops."""
        x = np.asarray(crops, np.float32)
        d2 = (x**2).sum(1, keepdims=True) - 2.0 * x @ self.train_x.T + self.train_sq
        nearest = np.argpartition(d2, self.k, axis=1)[:, : self.k]
        dist = np.sqrt(np.maximum(np.take_along_axis(d2, nearest, 1), 0.0))
        weights = 1.0 / np.maximum(dist, 1e-6)
        probs = np.zeros((len(x), md.NUM_CLASSES))
        np.add.at(probs, (np.arange(len(x))[:, None], self.train_y[nearest]), weights)
        return probs / probs.sum(1, keepdims=True)

    def read(self, frames: np.ndarray) -> list[list[dict[str, Any]]]:
        """Blobs of every frame of [T, H, W] (0-255), with `probs` [10] (None if merged)."""
        reads = [detect(frame, self.limits) for frame in frames]
        blobs = [b for r in reads for b in r if not b["merged"]]
        if blobs:
            probs = self.predict_proba(np.stack([b["crop"].ravel() for b in blobs]))
            for b, p in zip(blobs, probs, strict=True):
                b["probs"] = p
        for r in reads:
            for b in r:
                b.setdefault("probs", None)
        return reads


@functools.lru_cache(maxsize=4)
def get_reader(resolution: int) -> DigitReader:
    """A trained reader per resolution, cached for the process (training takes seconds)."""
    return DigitReader(resolution)


def reader_accuracy(
    resolution: int = 64, num_clips: int = 100, frames: int = 8
) -> dict[str, float]:
    """Per-digit, per-frame accuracy of the reader on test-split clips (unseen glyphs),
    on frames where the digit is not overlapping another; and its position error (px)."""
    reader = get_reader(resolution)
    rng = np.random.default_rng(12345)
    correct, total, errors = 0, 0, []
    for _ in range(num_clips):
        clip = md.render_clip(rng, frames, resolution, "test")
        reads = reader.read(clip["video"][..., 0].astype(np.float32))
        for t in range(frames):
            blobs = [b for b in reads[t] if not b["merged"]]
            for d in np.flatnonzero(clip["digits"] >= 0):
                truth = clip["positions"][t, d]
                if not blobs:
                    continue
                dist = [np.linalg.norm(b["centroid"] - truth) for b in blobs]
                best = blobs[int(np.argmin(dist))]
                if min(dist) > 2.0:  # overlapping digits: no clean read of this one
                    continue
                total += 1
                correct += int(np.argmax(best["probs"]) == clip["digits"][d])
                errors.append(min(dist))
    return {
        "accuracy": correct / max(total, 1),
        "position_error_px": float(np.mean(errors)) if errors else float("nan"),
        "digits_read": total,
    }


def track(reads: list[list[dict[str, Any]]], max_jump: float) -> list[dict[str, np.ndarray]]:
    """Link per-frame blobs into tracks (constant-velocity prediction + Hungarian).

    Returns tracks with `frames` [n], `centroid` [n, 2], `probs` [n, 10] (NaN if merged).
    """
    tracks: list[dict[str, list]] = []
    for t, blobs in enumerate(reads):
        blobs = [b for b in blobs if not b["merged"]]
        live = [tr for tr in tracks if t - tr["frames"][-1] <= 3]
        predicted = []
        for tr in live:
            c = tr["centroid"]
            v = (c[-1] - c[-2]) / (tr["frames"][-1] - tr["frames"][-2]) if len(c) > 1 else 0.0
            predicted.append(c[-1] + v * (t - tr["frames"][-1]))
        used = set()
        if live and blobs:
            cost = np.array([[np.linalg.norm(b["centroid"] - p) for b in blobs] for p in predicted])
            for i, j in zip(*linear_sum_assignment(cost), strict=True):
                if cost[i, j] <= max_jump:
                    live[i]["frames"].append(t)
                    live[i]["centroid"].append(blobs[j]["centroid"])
                    live[i]["probs"].append(blobs[j]["probs"])
                    used.add(j)
        for j, b in enumerate(blobs):
            if j not in used:
                tracks.append({"frames": [t], "centroid": [b["centroid"]], "probs": [b["probs"]]})
    return [{k: np.array(v) for k, v in tr.items()} for tr in tracks]


def _cv_residual(
    tr: dict[str, np.ndarray], lo: float, hi: float, margin: float
) -> tuple[float, int]:
    """Squared residual and dof of constant-velocity fits between wall bounces.

    A run of consecutive frames is cut where a velocity component reverses near the
    wall of that axis (a reflection; zero steps from rounding are skipped when looking
    for the reversal), and the frames at the turn are dropped. Any other change of
    velocity stays in the fit.
    """
    frames, c = tr["frames"], tr["centroid"]
    pieces, start = [], 0
    last_sign = np.zeros(2)  # sign of the last non-zero step per axis
    last_step = np.full(2, -1)  # index of that step
    for k in range(len(frames) - 1):
        if frames[k + 1] != frames[k] + 1:  # a gap: start afresh
            pieces.append((start, k + 1))
            start, last_sign, last_step = k + 1, np.zeros(2), np.full(2, -1)
            continue
        step = c[k + 1] - c[k]
        sign = np.where(np.abs(step) >= 0.5, np.sign(step), 0.0)
        near = (c[k] < lo + margin) | (c[k] > hi - margin)
        reversed_ = (sign * last_sign < 0) & near
        if reversed_.any():
            turn = int(last_step[reversed_].min())  # frames turn+1 .. k sit at the wall
            pieces.append((start, turn + 1))
            start = k + 1
            last_sign, last_step = np.zeros(2), np.full(2, -1)
        moved = sign != 0
        last_sign, last_step = np.where(moved, sign, last_sign), np.where(moved, k, last_step)
    pieces.append((start, len(frames)))
    ss, dof = 0.0, 0
    for a, b in pieces:
        n = b - a
        if n >= 3:
            design = np.stack([np.ones(n), frames[a:b] - frames[a]], 1).astype(np.float64)
            coef = np.linalg.lstsq(design, c[a:b], rcond=None)[0]
            ss += float(((design @ coef - c[a:b]) ** 2).sum())
            dof += 2 * (n - 2)
    return ss, dof


def _mark_ambiguous(reads: list[list[dict[str, Any]]]) -> int:
    """Number of digits in a clip; blobs of frames showing fewer are marked merged.

    The count is the largest number of separate blobs seen in at least 3 frames (or in
    any frame of a shorter clip); a frame with fewer has digits on top of each other,
    and its blobs cannot be read as single digits.
    """
    counts = np.array([sum(not b["merged"] for b in r) for r in reads])
    values, freq = np.unique(counts, return_counts=True)
    common = values[freq >= min(3, len(reads))]
    n_digits = int(common.max()) if common.size else int(counts.max())
    for r, k in zip(reads, counts, strict=True):
        if k < n_digits or any(b["merged"] for b in r):
            for b in r:
                b["merged"] = True
    return n_digits


def digit_metrics(videos: np.ndarray, labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-clip metrics [B] of moving_digits videos [B, T, H, W, 1] (uint8 or [-1, 1]).

    Returns identity_stability (NaN without a track of >= 3 read frames), cv_residual
    (px, NaN without a fit), num_digits, num_tracks (more tracks than digits: broken
    or spurious trajectories), and label_match when labels [B] are given.
    """
    frames = to_gray255(videos)
    res = frames.shape[-1]
    reader = get_reader(res)
    scale = res / md.REFERENCE_RESOLUTION
    max_jump = 2 * md.SPEED_RANGE[1] * scale + 2.0
    # An ink centroid is at most a glyph from the wall it bounces off.
    lo, hi, margin = 0.0, float(res - 1), reader.glyph + 1.0
    keys = ("identity_stability", "cv_residual", "num_digits", "num_tracks")
    out: dict[str, list] = {k: [] for k in keys}
    if labels is not None:
        out["label_match"] = []
    for b, clip in enumerate(frames):
        reads = reader.read(clip)
        out["num_digits"].append(_mark_ambiguous(reads))
        tracks = [tr for tr in track(reads, max_jump) if len(tr["frames"]) >= 3]
        stabilities, majorities, ss, dof = [], [], 0.0, 0
        for tr in tracks:
            classes = np.argmax(np.stack(tr["probs"]), axis=1)
            majority = np.bincount(classes).argmax()
            stabilities.append(np.mean(classes == majority))
            majorities.append(majority)
            s, d = _cv_residual(tr, lo, hi, margin)
            ss, dof = ss + s, dof + d
        out["identity_stability"].append(np.mean(stabilities) if stabilities else np.nan)
        out["cv_residual"].append(np.sqrt(ss / dof) if dof else np.nan)
        out["num_tracks"].append(len(tracks))
        if labels is not None:
            out["label_match"].append(float(int(labels[b]) in majorities))
    return {k: np.array(v) for k, v in out.items()}


def clip_class_probs(videos: np.ndarray) -> np.ndarray:
    """p(y|x) [B, 10] of moving_digits videos [B, T, H, W, 1] (uint8 or [-1, 1]): the mean
    class probabilities of every readable digit blob in every frame of a clip (a clip with
    two digits spreads its mass over both). A row is NaN where no digit could be read."""
    frames = to_gray255(videos)
    reader = get_reader(frames.shape[-1])
    out = np.full((len(frames), md.NUM_CLASSES), np.nan)
    for b, clip in enumerate(frames):
        probs = [
            blob["probs"] for r in reader.read(clip) for blob in r if blob["probs"] is not None
        ]
        if probs:
            out[b] = np.mean(probs, axis=0)
    return out


def inception_score(probs: np.ndarray) -> float:
    """exp E_x KL(p(y|x) || p(y)) over the readable rows of `probs` [B, 10] (`clip_class_probs`),
    p(y) their mean: 1 when every clip reads alike, up to 10 for confident, diverse classes
    (the analogue of the Inception Score of VDM's guidance table). NaN without a readable row."""
    p = np.asarray(probs, np.float64)
    p = p[np.isfinite(p).all(axis=1)]
    if not len(p):
        return float("nan")
    marginal = p.mean(axis=0)
    eps = 1e-12  # 0 log 0 = 0
    kl = (p * (np.log(p + eps) - np.log(marginal + eps))).sum(axis=1)
    return float(np.exp(kl.mean()))
