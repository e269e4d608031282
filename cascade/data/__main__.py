"""Build (if needed), load and preview a data set.

    python -m cascade.data --dataset=moving_digits --data_dir=DIR --preview=out.gif

builds the data set in DIR if it is not there yet (embedded sets; real TFDS sets
must already be prepared in DIR), reads it back through TFDS, and writes a preview
of the first --num_examples clips: out.gif (clips tiled, animated), out.mp4 (the
same, H.264) and out.png (one row per clip, one column per frame). With --sound
(bouncing_shapes only) the clips carry their impact sound track, and out.mp4 plays the
previewed clips' tracks mixed together, in sync with the tiles (at the data's frame rate).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from absl import flags

# Flags live in their own FlagValues so that importing this module (tests) never
# collides with flags defined by other entry points.
FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "dataset",
    "moving_digits",
    "Data set: moving_digits | bouncing_shapes (embedded, built on demand) | moving_mnist "
    "| bair_robot_pushing_small | ucf101 (real TFDS sets, prepared beforehand in "
    "--data_dir; a TFDS config may follow a slash, e.g. ucf101/ucf101_1).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "data_dir",
    os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"),
    "TFDS data directory where data sets are built / looked for.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("num_examples", 8, "Number of clips in the preview.", flag_values=FLAGS)
flags.DEFINE_string(
    "preview",
    None,
    "Preview GIF path (an .mp4 and a .png grid are written beside it). None: only build.",
    flag_values=FLAGS,
)
flags.DEFINE_enum("split", "train", ["train", "test"], "Split to preview.", flag_values=FLAGS)
flags.DEFINE_integer(
    "num_train", 1000, "Embedded sets: clips in the train split.", flag_values=FLAGS
)
flags.DEFINE_integer("num_test", 100, "Embedded sets: clips in the test split.", flag_values=FLAGS)
flags.DEFINE_integer("frames", 32, "Frames per clip.", flag_values=FLAGS)
flags.DEFINE_integer("resolution", 64, "Frame height = width in pixels.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Embedded sets: generation seed.", flag_values=FLAGS)
flags.DEFINE_integer(
    "frame_stride", 1, "Real sets: take every k-th frame of a clip.", flag_values=FLAGS
)
flags.DEFINE_float("fps", 8.0, "Frames per second of the preview.", flag_values=FLAGS)
flags.DEFINE_integer(
    "scale", 2, "Integer upscaling of the preview (nearest neighbour).", flag_values=FLAGS
)
flags.DEFINE_bool(
    "sound",
    False,
    "bouncing_shapes only: build/read the variant with a synchronized impact sound track; "
    "the MP4 preview then has sound (and plays at the data's frame rate, 8 fps).",
    flag_values=FLAGS,
)


DEFAULT_SIZES = dict(num_train=1000, num_test=100, frames=32, resolution=64, seed=0)


def build_and_preview(
    dataset: str,
    data: str | os.PathLike | Any,
    preview: str | os.PathLike | None = None,
    *,
    num_examples: int = 8,
    split: str = "train",
    fps: float = 8.0,
    scale: int = 2,
    **overrides: Any,
) -> dict[str, str]:
    """Builds (if needed) and loads `dataset`, and writes its previews.

    Args:
      dataset: data set name (see --dataset).
      data: a data_dir path, or a data config (ConfigDict / dict with data_dir,
        frames, resolution, num_train, num_test, ...) whose name is replaced by
        `dataset`.
      preview: GIF path; the MP4 and PNG grid go beside it. None: only build.
      overrides: data config fields to set (num_train, num_test, frames,
        resolution, seed, frame_stride); unset ones come from `data` or defaults.
    Returns:
      {'gif' | 'mp4' | 'png': path written} (empty without preview).
    """
    import ml_collections
    import numpy as np

    from cascade import video_io
    from cascade.data import loading

    unknown = set(overrides) - {*DEFAULT_SIZES, "frame_stride", "sound"}
    if unknown:
        raise TypeError(f"build_and_preview got unknown fields {sorted(unknown)}.")
    if isinstance(data, str | os.PathLike):
        fields = dict(DEFAULT_SIZES, data_dir=os.fspath(data), shuffle_buffer=1024)
    else:
        fields = dict(data.to_dict() if hasattr(data, "to_dict") else data)
    fields.update({k: v for k, v in overrides.items() if v is not None}, name=dataset)
    data_cfg = ml_collections.ConfigDict(fields)
    start = time.perf_counter()
    source = loading.open_source(data_cfg, split)
    print(
        f"{dataset}: {source.num_examples} {split} clips in {source.builder.data_dir} "
        f"(ready in {time.perf_counter() - start:.1f} s)"
    )
    if not preview:
        return {}
    clips = list(source.dataset().take(num_examples).as_numpy_iterator())
    if not clips:
        raise ValueError(f"{dataset} split {split!r} is empty.")
    videos = np.stack([c["video"] for c in clips])
    labels = [int(c["label"]) for c in clips]
    stem = os.path.splitext(os.path.expanduser(preview))[0]
    sound = {}
    if "audio" in clips[0]:  # the tracks mixed (summed, peak-normalised), at the data's rate
        from cascade.data.builders import bouncing_shapes_sound as bss

        mix = np.sum([c["audio"].astype(np.float32) / 32768.0 for c in clips], axis=0)
        sound = dict(audio=mix / max(1.0, float(np.abs(mix).max())), sample_rate=bss.SAMPLE_RATE)
        fps = bss.FPS
    paths = {
        "gif": video_io.write_video_grid_gif(stem + ".gif", videos, fps=fps, scale=scale),
        "mp4": video_io.write_video_grid_mp4(stem + ".mp4", videos, fps=fps, scale=scale, **sound),
        "png": video_io.write_grid_png(stem + ".png", videos, scale=scale),
    }
    print(f"labels of the previewed clips: {labels}")
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return paths


def check_flags(fv: flags.FlagValues) -> None:
    """Refuse flag values that cannot work, naming the flag (before anything is built)."""
    from cascade import cli

    for name in ("num_examples", "num_train", "num_test", "frames", "resolution"):
        if fv[name].value < 1:
            raise cli.UsageError(f"--{name} must be >= 1, got {fv[name].value}.")
    for name, low in (("frame_stride", 1), ("scale", 1), ("seed", 0)):
        if fv[name].value < low:
            raise cli.UsageError(f"--{name} must be >= {low}, got {fv[name].value}.")
    if not fv.fps > 0:
        raise cli.UsageError(f"--fps must be > 0, got {fv.fps}.")
    if fv.sound and fv.fps != 8:  # bouncing_shapes_sound.FPS (not imported: TensorFlow)
        raise cli.UsageError(
            f"--fps={fv.fps} with --sound: the sound track is timed for 8 frames per second; "
            "leave --fps at 8."
        )
    if not fv.data_dir:
        raise cli.UsageError("--data_dir is empty: name the TFDS data directory.")
    cli.check_data_dir(fv.data_dir, "--data_dir")
    if fv.preview:
        cli.check_writable_dir(os.path.dirname(os.path.expanduser(fv.preview)) or ".", "--preview")


def main(argv: list[str] | None = None) -> int:
    """Entry point: parses flags from argv (default sys.argv) and runs; returns the exit code
    (2: a user mistake, reported in one line)."""
    from cascade import cli

    def body(args: cli.Args) -> None:
        check_flags(FLAGS)
        try:
            build_and_preview(
                FLAGS.dataset,
                FLAGS.data_dir,
                FLAGS.preview,
                num_examples=FLAGS.num_examples,
                split=FLAGS.split,
                num_train=FLAGS.num_train,
                num_test=FLAGS.num_test,
                frames=FLAGS.frames,
                resolution=FLAGS.resolution,
                seed=FLAGS.seed,
                frame_stride=FLAGS.frame_stride,
                sound=FLAGS.sound,
                fps=FLAGS.fps,
                scale=FLAGS.scale,
            )
        except ValueError as err:  # the data layer's ValueErrors name the bad setting
            raise cli.UsageError(str(err)) from None

    return cli.entry(body, FLAGS, __doc__, argv, distributed=False)


if __name__ == "__main__":
    sys.exit(main())
