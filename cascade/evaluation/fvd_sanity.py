"""FVD sanity check on real clips: real test vs real train, and increasingly corrupted test.

    python -m cascade.evaluation.fvd_sanity --dataset=moving_digits --data_dir=DIR \\
        --num_videos=64

prints a table: FVD / KVD of the clean test clips against the train clips (finite-sample
FVD between two real samples), then, for noise, blur and frame shuffling at increasing
strength, FVD of the corrupted test clips against the train clips and against the same
clean test clips (which cancels the sampling noise, so level 0 is exactly 0).
Features are extracted once per set. On 2 CPU cores I3D costs ~1.2-3 s per clip, so
N = 64 per side with the default 9 corruption levels takes ~15-30 minutes; a GPU does
it in seconds.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from cascade import json_io
from cascade.evaluation import fvd

DEFAULT_LEVELS = {
    "noise": (0.05, 0.1, 0.2),  # std of Gaussian pixel noise, in [-1, 1] units
    "blur": (1.0, 2.0, 3.0),  # spatial Gaussian blur sigma, pixels
    "shuffle": (0.25, 0.5, 1.0),  # fraction of each clip's frames randomly permuted
}


def corrupt(videos: np.ndarray, kind: str, level: float, seed: int = 0) -> np.ndarray:
    """A corrupted copy of float videos [N, T, H, W, C] in [-1, 1].

    noise: + N(0, level^2), clipped; blur: spatial Gaussian blur of std `level` px;
    shuffle: a random `level` fraction of each clip's frames (at least 2) is permuted
    so that none of them stays in place.
    """
    rng = np.random.default_rng(seed)
    if kind == "noise":
        noise = rng.normal(size=videos.shape).astype(np.float32)
        return np.clip(videos + level * noise, -1.0, 1.0)
    if kind == "blur":
        return gaussian_filter(videos, sigma=(0, 0, level, level, 0), mode="nearest")
    if kind == "shuffle":
        out = videos.copy()
        t = videos.shape[1]
        for clip in out:
            chosen = np.sort(rng.choice(t, size=max(2, int(round(level * t))), replace=False))
            perm = chosen
            while (perm == chosen).any():
                perm = rng.permutation(chosen)
            clip[chosen] = clip[perm]
        return out
    raise ValueError(f"unknown corruption {kind!r}; known: {tuple(DEFAULT_LEVELS)}")


def sanity_table(
    train: np.ndarray,
    test: np.ndarray,
    protocol: fvd.FVDProtocol,
    *,
    levels: dict[str, tuple[float, ...]] | None = None,
    extractor: fvd.I3DFeatureExtractor | None = None,
) -> dict[str, Any]:
    """FVD/KVD rows for clean and corrupted test clips (see the module docstring).

    Returns dict(rows=[{corruption, level, fvd_vs_train, kvd_vs_train, fvd_vs_clean}],
    seconds_per_clip=, protocol=).
    """
    levels = DEFAULT_LEVELS if levels is None else levels
    extractor = extractor or fvd.I3DFeatureExtractor(protocol)
    n = protocol.num_videos
    train, test = train[:n], test[:n]
    start = time.perf_counter()
    ref, clean = extractor(train), extractor(test)
    clips = 2 * n

    def row(kind: str, level: float, feats: np.ndarray) -> dict[str, Any]:
        vs_train = fvd.fvd_from_features(ref, feats, protocol)
        return {
            "corruption": kind,
            "level": level,
            "fvd_vs_train": vs_train["fvd"],
            "kvd_vs_train": vs_train["kvd"],
            "fvd_vs_clean": fvd.fvd_from_features(clean, feats, protocol)["fvd"],
        }

    rows = [row("none", 0.0, clean)]
    for kind, values in levels.items():
        for level in values:
            rows.append(row(kind, level, extractor(corrupt(test, kind, level))))
            clips += n
    return {
        "rows": rows,
        "seconds_per_clip": (time.perf_counter() - start) / clips,
        "protocol": protocol.to_dict(),
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"{'corruption':<11}{'level':>7}{'FVD vs train':>14}{'KVD vs train':>14}"
        f"{'FVD vs clean':>14}"
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['corruption']:<11}{r['level']:>7.2f}{r['fvd_vs_train']:>14.1f}"
            f"{r['kvd_vs_train']:>14.2f}{r['fvd_vs_clean']:>14.1f}"
        )
    lines.append(f"I3D seconds per clip (incl. resize): {result['seconds_per_clip']:.2f}")
    return "\n".join(lines)


def load_videos(data_cfg: dict[str, Any], split: str, n: int) -> np.ndarray:
    """The first n clips of a split (stored order, as every evaluation reads them) as float32
    [n, T, H, W, C] in [-1, 1]."""
    from cascade.data import pipeline

    return pipeline.test_clips(data_cfg, n, split=split)["video"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (argparse exits 2 with one usage line on a malformed flag)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--dataset", default="moving_digits", help="data set name")
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir (default: TFDS's)")
    parser.add_argument("--num_videos", type=int, default=64, help="clips per side, >= 2")
    parser.add_argument("--clip_length", type=int, default=16, help="frames fed to I3D, >= 9")
    parser.add_argument("--batch_size", type=int, default=8, help="clips per I3D call")
    parser.add_argument("--frames", type=int, default=32, help="embedded builder: frames")
    parser.add_argument("--resolution", type=int, default=64, help="embedded builder: size")
    parser.add_argument("--num_train", type=int, default=1000, help="embedded builder")
    parser.add_argument("--num_test", type=int, default=100, help="embedded builder")
    parser.add_argument("--output", default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)
    for name in ("frames", "resolution", "num_train", "num_test"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The sanity table for parsed arguments; prints it and writes --output."""
    data_cfg = {
        "name": args.dataset,
        "data_dir": args.data_dir,
        "frames": args.frames,
        "resolution": args.resolution,
        "num_train": max(args.num_train, args.num_videos),
        "num_test": max(args.num_test, args.num_videos),
        "seed": 0,
    }
    protocol = fvd.FVDProtocol(
        num_videos=args.num_videos,
        clip_length=args.clip_length,
        batch_size=args.batch_size,
        real_split="train",
    )
    if args.output:
        from cascade import cli

        cli.check_writable_dir(os.path.dirname(os.path.abspath(args.output)), "--output")
    train = load_videos(data_cfg, "train", args.num_videos)
    test = load_videos(data_cfg, "test", args.num_videos)
    result = sanity_table(train, test, protocol)
    result["data"] = data_cfg
    print(f"FVD sanity: {args.dataset}, {args.num_videos} clips per side")
    print(format_table(result))
    if args.output:
        json_io.write_json(args.output, result)
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    from cascade import cli

    args = parse_args(argv)

    def body() -> None:
        try:
            run(args)
        except ValueError as err:  # FVDProtocol and the data layer name the bad setting
            if isinstance(err, cli.user_errors()):
                raise
            raise cli.UsageError(str(err)) from None

    return cli.guarded(body)


if __name__ == "__main__":
    import sys

    sys.exit(main())
