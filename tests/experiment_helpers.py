"""What the tiny end-to-end experiment tests share: their configs, and reading their CSVs."""

import csv
import math

import numpy as np

from experiments import expconfig


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, list(rows[0].keys()) if rows else []


def finite(text):
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def tiny(name, data_dir, tmp_path_factory):
    """configs/experiments/<name>.py:tiny on the session's data_dir, with its own fresh
    workdirs and output folder under pytest's temporary directory."""
    overrides = [
        ("out", str(tmp_path_factory.mktemp(name))),
        ("data_dir", data_dir),
        ("workdirs", str(tmp_path_factory.mktemp(f"{name}-workdirs"))),
    ]
    return expconfig.load(f"experiments/{name}:tiny", overrides)


def synthetic_setting(ablation, setting, shift, rng, seeds=2, n=6, sr=False):
    """A setting as `vdm_ablations.Ablations.add` records it, with random per-clip arrays
    (label match raised and features shifted by `shift`); `sr` adds PSNR and intensity shift."""
    runs_ = []
    for _ in range(seeds):
        arrays = {
            "label_match": (rng.random(n) < 0.5 + shift).astype(float),
            "identity_stability": np.where(rng.random(n) < 0.2, np.nan, rng.random(n)),
            "cv_residual": rng.random(n),
            "class_probs": rng.dirichlet(np.ones(10), n),
            "features": rng.normal(shift, 1.0, (n, 5)),
            "seconds_per_video": np.array([1.0 + shift]),
        }
        if sr:
            arrays.update(psnr=20 + rng.random(n), intensity_shift=rng.random(n))
        runs_.append((arrays, {}))
    view = "spatial_sr" if sr else "keyframes"
    return {"ablation": ablation, "setting": setting, "view": view, "runs": runs_}


def stand_in_i3d(patch):
    """Swap the Kinetics I3D network (about a second per 224 x 224 clip on 2 cores, most of a
    tiny experiment's run) for a fixed random projection of each clip's 8 x 8-pooled pixels,
    with I3D's output shape. Everything around it still runs: the FVD protocol's resize, the
    extractor's batching and padding, the feature cache, FVD, KVD and their bootstrap. The
    network itself is checked against float64 NumPy and on real clips in test_fvd.py."""
    import jax.numpy as jnp

    from cascade.models import i3d

    def apply(params, video, *, endpoint="Logits", dtype=jnp.float32):
        b, t, h, w, c = video.shape
        pooled = video.reshape(b, t, 8, h // 8, 8, w // 8, c).mean((3, 5)).reshape(b, -1)
        dims = 400 if endpoint == "Logits" else 1024
        projection = np.random.default_rng(0).normal(size=(pooled.shape[1], dims))
        return pooled @ jnp.asarray(projection / np.sqrt(pooled.shape[1]), pooled.dtype)

    patch.setattr(i3d, "i3d_apply", apply)
