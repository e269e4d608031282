"""Per-clip scoring of tracked bouncing_shapes objects: step 3 of `physics.physics_metrics`.

`score_clip` takes one clip's observations (`physics.observe`: per frame and palette colour,
presence, cleanliness, centroid, shape) and scores them against the limits the builder's
constants imply (`Limits`): ballistic fits with the builder's gravity, teleports, object
permanence through the occluder, colour and shape changes, and the object count.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cascade.data.builders import bouncing_shapes as bs


class Limits:
    """Physical limits at a resolution, from the builder's constants."""

    def __init__(self, res: int):
        c = bs.scaled_constants(res)
        self.radius, self.gravity = c["radius"], c["gravity"]
        self.lo, self.hi = bs.arena(res)
        self.occluder = bs.occluder_box(res)  # (y0, x0, y1, x1), rows y0..y1-1
        vx_max = bs.SPEED_X_RANGE[1] * c["scale"]
        vy0_max = max(abs(v) for v in bs.SPEED_Y_RANGE) * c["scale"]
        vy_max = np.sqrt(vy0_max**2 + 2 * self.gravity * (self.hi - self.lo))
        self.vx_max = vx_max
        self.vx_min = bs.SPEED_X_RANGE[0] * c["scale"] * bs.RESTITUTION**2
        self.max_step = float(np.hypot(vx_max, vy_max))
        self.tolerance = 1.5  # px of rasterisation jitter on a clean centroid

    def near_occluder(self, pos: np.ndarray) -> bool:
        y0, x0, y1, x1 = self.occluder
        m = self.radius + self.vx_max + 1.0
        return bool(x0 - m <= pos[1] <= x1 - 1 + m and y0 - m <= pos[0] <= y1 - 1 + m)

    def hidden_frames(self, vx: float) -> float:
        """Longest plausible time hidden (behind the occluder) at horizontal speed vx."""
        # Below `min_pixels` visible pixels an object counts as gone: that happens over
        # about the occluder's width (less the object's, plus the partly visible parts).
        width = self.occluder[3] - self.occluder[1] + 2.0
        return 1.25 * width / max(abs(vx), self.vx_min) + 2.0


# Counts of what went wrong with the objects of a clip: undefined (NaN) for a clip in which the
# tracker finds no object, which `empty_scene` counts instead.
NEEDS_AN_OBJECT = ("teleports", "permanence_violations", "color_changes", "count_stability")


def score_clip(obs: dict[str, np.ndarray], res: int) -> dict[str, Any]:
    """Scores of one clip from its observations ([T, P] arrays of `physics.observe`) at
    resolution `res`: the per-clip values `physics.physics_metrics` stacks into [B] arrays."""
    lim = Limits(res)
    t_len = obs["present"].shape[0]
    colors = np.flatnonzero(obs["present"].any(0))
    fits = [_ballistic_fit(obs, p, lim) for p in colors]
    ss = sum(f[0] for f in fits)
    dof = sum(f[1] for f in fits)
    gravity = _gravity_fit([seg for f in fits for seg in f[2]])
    teleports = sum(_teleports(obs, p, lim) for p in colors)
    events = _permanence(obs, colors, lim, t_len)
    constancy = []
    for p in colors:
        shapes = obs["shape"][:, p][obs["shape"][:, p] >= 0]
        if shapes.size:
            constancy.append(np.mean(shapes == np.bincount(shapes).argmax()))
    alive = events["alive"] + obs["extra"].sum(1)
    count_changes = int((np.diff(alive) != 0).sum())
    scores = {
        "ballistic_rmse": float(np.sqrt(ss / dof)) if dof > 0 else np.nan,
        "gravity_estimate": gravity,
        "teleports": int(teleports),
        "permanence_violations": int(events["violations"]),
        "color_changes": int(events["color_changes"]),
        "shape_constancy": float(np.mean(constancy)) if constancy else np.nan,
        "count_changes": count_changes,
        "count_stability": 1.0 - count_changes / max(t_len - 1, 1),
        "num_objects": int(events["objects"]),
        "empty_scene": float(not events["objects"]),
    }
    if not events["objects"]:  # an empty scene violates nothing: undefined, not a perfect 0
        scores.update(dict.fromkeys(NEEDS_AN_OBJECT, np.nan))
    return scores


def _segments(obs: dict[str, np.ndarray], p: int, lim: Limits) -> list[np.ndarray]:
    """Runs of consecutive clean frames of colour p, split where a bounce may happen."""
    clean, c = obs["clean"][:, p], obs["centroid"][:, p]
    segments, current = [], []
    for t in np.flatnonzero(clean):
        if current and (t != current[-1] + 1 or _bounce_possible(c[current[-1]], c[t], lim)):
            segments.append(np.array(current))
            current = []
        current.append(t)
    if current:
        segments.append(np.array(current))
    return [s for s in segments if s.size >= 3]


def _bounce_possible(a: np.ndarray, b: np.ndarray, lim: Limits) -> bool:
    """Between positions a and b (one frame apart), could the floor or a wall be hit?

    A step longer than physically possible is no bounce: it stays in the fit."""
    if np.linalg.norm(b - a) > lim.max_step + lim.tolerance:
        return False
    margin = np.abs(b - a) + 1.0
    floor = max(a[0], b[0]) >= lim.hi - margin[0]
    walls = min(a[1], b[1]) <= lim.lo + margin[1] or max(a[1], b[1]) >= lim.hi - margin[1]
    return bool(floor or walls)


def _ballistic_fit(obs, p, lim) -> tuple[float, int, list]:
    """Sum of squared residuals and degrees of freedom of the fixed-gravity fits."""
    ss, dof, segs = 0.0, 0, []
    for seg in _segments(obs, p, lim):
        tau = (seg - seg[0]).astype(np.float64)
        pos = obs["centroid"][seg, p]
        design = np.stack([np.ones_like(tau), tau], 1)
        target_y = pos[:, 0] - 0.5 * lim.gravity * tau**2
        for target in (target_y, pos[:, 1]):
            coef = np.linalg.lstsq(design, target, rcond=None)[0]
            ss += float(((design @ coef - target) ** 2).sum())
        dof += 2 * (seg.size - 2)
        segs.append((tau, pos[:, 0]))
    return ss, dof, segs


def _gravity_fit(segs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Least-squares g shared by all segments, each with its own offset and speed."""
    if sum(tau.size - 2 for tau, _ in segs) < 1:
        return np.nan
    n = sum(tau.size for tau, _ in segs)
    design = np.zeros((n, 2 * len(segs) + 1))
    target = np.zeros(n)
    row = 0
    for i, (tau, y) in enumerate(segs):
        sl = slice(row, row + tau.size)
        design[sl, 2 * i], design[sl, 2 * i + 1], design[sl, -1] = 1.0, tau, 0.5 * tau**2
        target[sl] = y
        row += tau.size
    return float(np.linalg.lstsq(design, target, rcond=None)[0][-1])


def _teleports(obs, p, lim) -> int:
    """Steps between successive observations longer than physically possible."""
    frames = np.flatnonzero(obs["present"][:, p])
    c, clean = obs["centroid"][:, p], obs["clean"][:, p]
    count = 0
    for a, b in zip(frames[:-1], frames[1:], strict=True):
        # A partly hidden object's centroid can sit up to a radius off its centre.
        tol = lim.tolerance if clean[a] and clean[b] else lim.tolerance + lim.radius
        count += np.linalg.norm(c[b] - c[a]) > (b - a) * lim.max_step + tol
    return count


def _runs(present: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], present.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def _velocity(obs, p: int, run: tuple[int, int], at_end: bool, lim: Limits) -> np.ndarray:
    """(vy, vx) per frame at the end (or start) of a run.

    From the last two clean observations if there are two; else from the edge facing
    away from the occluder, which stays in view while the object slides behind it (a
    partly hidden object's centroid moves slower than the object)."""
    start, end = run
    frames = np.arange(start, end + 1)
    clean = frames[obs["clean"][frames, p]]
    if frames.size < 2:
        return np.zeros(2)
    track = obs["centroid"][:, p]
    if clean.size >= 2:
        a, b = (clean[-2], clean[-1]) if at_end else (clean[0], clean[1])
        return (track[b] - track[a]) / (b - a)
    a, b = (end - 1, end) if at_end else (start, start + 1)
    centre = (lim.occluder[1] + lim.occluder[3] - 1) / 2
    side = 0 if track[b, 1] < centre else 1
    edge = obs["x_range"][:, p, side]
    return np.array([track[b, 0] - track[a, 0], edge[b] - edge[a]])


def _majority_shape(obs, p, t0, t1) -> int:
    shapes = obs["shape"][t0 : t1 + 1, p]
    shapes = shapes[shapes >= 0]
    return int(np.bincount(shapes).argmax()) if shapes.size else -1


def _explained(obs, p, frames: np.ndarray, predicted: np.ndarray, lim: Limits) -> bool:
    """Could colour p be hidden at `frames` (predicted positions [F, 2]): behind the
    occluder, or under another object drawn over it?"""
    c, present = obs["centroid"], obs["present"]
    for t, pos in zip(frames, predicted, strict=True):
        pos = np.array([np.clip(pos[0], lim.lo, lim.hi), pos[1]])
        if lim.near_occluder(pos):
            continue
        others = present[t] & (np.arange(present.shape[1]) != p)
        dist = np.linalg.norm(c[t, others] - pos, axis=-1)
        if not (dist <= 2 * lim.radius + lim.tolerance).any():
            return False
    return True


def _permanence(obs, colors, lim: Limits, t_len: int) -> dict[str, Any]:
    """Object permanence (c), colour changes (d) and the alive-object count (e).

    Every gap in a colour's presence must be explained by hiding (behind the occluder
    or under another object, along the interpolated path, for no longer than its speed
    allows); so must the frames before its first and after its last appearance
    (extrapolated). A last exit and a first entry of two colours that fit one object
    (same place within a frame, or through the occluder at the right time and side) are
    one object that changed colour.
    """
    c = obs["centroid"]
    violations, color_changes = 0, 0
    alive = np.zeros(t_len, np.int64)
    exits, entries, spans = [], [], {}
    for p in colors:
        runs = _runs(obs["present"][:, p])
        birth, death = int(runs[0][0]), int(runs[-1][1])
        if birth > 0:
            v = _velocity(obs, p, runs[0], at_end=False, lim=lim)
            frames = np.arange(birth)
            predicted = c[birth, p] + v * (frames - birth)[:, None]
            ok = birth <= lim.hidden_frames(v[1]) and _explained(obs, p, frames, predicted, lim)
            entries.append({"p": p, "t": birth, "pos": c[birth, p], "ok": ok})
            birth = 0 if ok else birth
        for (s0, e0), (s1, e1) in zip(runs[:-1], runs[1:], strict=True):
            frames = np.arange(e0 + 1, s1)
            w = ((frames - e0) / (s1 - e0))[:, None]
            predicted = (1 - w) * c[e0, p] + w * c[s1, p]
            vx = (c[s1, p, 1] - c[e0, p, 1]) / (s1 - e0)
            if frames.size <= lim.hidden_frames(vx) and _explained(obs, p, frames, predicted, lim):
                before, after = _majority_shape(obs, p, s0, e0), _majority_shape(obs, p, s1, e1)
                violations += before >= 0 and after >= 0 and before != after
            else:  # flickered, vanished in the open or stayed hidden too long
                violations += 1
                alive[e0 + 1 : s1] -= 1
        if death < t_len - 1:
            v = _velocity(obs, p, runs[-1], at_end=True, lim=lim)
            frames = np.arange(death + 1, t_len)
            predicted = c[death, p] + v * (frames - death)[:, None]
            ok = frames.size <= lim.hidden_frames(v[1]) and _explained(
                obs, p, frames, predicted, lim
            )
            exits.append({"p": p, "t": death + 1, "pos": c[death, p], "v": v, "ok": ok})
            death = t_len - 1 if ok else death
        spans[p] = [birth, death]

    for ex in exits:
        for en in entries:
            if en.get("paired") or en["p"] == ex["p"]:
                continue
            dt = en["t"] - ex["t"]
            in_open = (
                abs(dt) <= 1
                and np.linalg.norm(en["pos"] - ex["pos"]) <= 2 * lim.max_step + lim.tolerance
            )
            if in_open or _through_occluder(ex, en, lim):
                color_changes += 1
                violations += not in_open  # came back from the occluder as another object
                ex["paired"] = en["paired"] = True
                spans[ex["p"]][1] = min(spans[ex["p"]][1], en["t"] - 1)
                spans[en["p"]][0] = en["t"]
                break
    # Unexplained and unpaired: vanished / never came back, or appeared from nowhere.
    violations += sum(not e["ok"] and not e.get("paired") for e in exits + entries)
    for birth, death in spans.values():
        alive[birth : death + 1] += 1
    return {
        "violations": violations,
        "color_changes": color_changes,
        "alive": alive,
        "objects": len(colors) - color_changes,
    }


def _through_occluder(ex: dict, en: dict, lim: Limits) -> bool:
    """Does an entry continue an exit behind the occluder: the far side in the direction
    of motion, at about the time the exit's horizontal speed takes to cross?"""
    if not (lim.near_occluder(ex["pos"]) and lim.near_occluder(en["pos"])):
        return False
    vx = ex["v"][1]
    if abs(vx) < 1e-6 or np.sign(en["pos"][1] - ex["pos"][1]) != np.sign(vx):
        return False
    return 0 <= en["t"] - ex["t"] <= lim.hidden_frames(vx)
