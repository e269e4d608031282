"""Fréchet Video Distance (FVD) and Kernel Video Distance (KVD) with the Kinetics-400 I3D.

Protocol (Unterthiner et al. 2018, "Towards Accurate Generative Models of Video"):
clips of `clip_length` frames are resized to 224 x 224 (TF1 bilinear, exactly as the
reference `frechet_video_distance.py` does), given to the
Kinetics-400 I3D as RGB in [-1, 1], and the 400 pre-softmax logits -- what the TF-Hub
module `deepmind/i3d-kinetics-400/1` returns and what the reference FVD code embeds --
are the features. FVD is the Fréchet distance between Gaussians fitted to real and
generated features; KVD the unbiased polynomial-kernel MMD^2 on the same features.

Every choice that changes the number is a field of `FVDProtocol`, and `to_dict()` is
written into every result so two numbers are only compared under the same protocol.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cascade.evaluation.feature_distances import frechet_distance_of_features, kernel_distance
from cascade.models import i3d
from cascade.training import parallel

FEATURE_LAYERS = {"logits": "Logits", "pool": "AvgPool"}
# tf1_bilinear: the reference FVD code's `tf.image.resize_bilinear(align_corners=False)` (TF1,
# no half-pixel centres), so numbers compare with published ones. half_pixel_bilinear: the
# `jax.image.resize` / TF2 / torch(align_corners=False) grid this code used before; it shifts
# the picture by (in/out - 1)/2 input pixels and moves FVD (by ~6 at 64 px, ~16 at 32 px on
# moving_digits), so it is kept only to reproduce old numbers.
RESIZE_DESCRIPTIONS = {
    "tf1_bilinear": "TF1 resize_bilinear(align_corners=False) as the reference FVD code: "
    "src = dst * in/out, no half-pixel centres, no antialiasing",
    "half_pixel_bilinear": "bilinear with half-pixel centres (src = (dst + 0.5) * in/out - 0.5), "
    "no antialiasing: NOT the reference FVD preprocessing",
}
RESIZE_METHODS = tuple(RESIZE_DESCRIPTIONS)
SPLITS = ("train", "test", "validation")


@dataclasses.dataclass(frozen=True)
class FVDProtocol:
    """Everything that changes an FVD number. Build from config: `FVDProtocol(**cfg)`.

    Fields:
      num_videos: clips per side; `compute_fvd` refuses fewer (FVD is biased in N).
      clip_length: frames per clip fed to I3D (>= 9; 16 is the FVD paper's choice).
      clip_start: first frame of the clip inside each video.
      resolution: I3D input size (224: the head's 7 x 7 pool needs it).
      resize_method: "tf1_bilinear" (default): exactly the reference implementation's
        TF1 `resize_bilinear(align_corners=False)`, source pixel = output pixel * in/out,
        no half-pixel centres, no antialiasing (`resize_tf1_bilinear`);
        "half_pixel_bilinear": half-pixel centres (as `tf.image.resize` v2 / torch
        `interpolate(align_corners=False)`), the pre-2026-12 default; not comparable with
        published FVDs.
      quantize_uint8: round generated clips to 256 levels first, so fake clips are
        treated like real ones (which come from uint8) and like a saved video.
      real_split: which split of the data set is the real reference.
      feature_layer: "logits" (400-d, standard FVD) or "pool" (1024-d Mixed_5c pool).
      batch_size: clips per jitted I3D call (a multiple of the devices in the sharding).
      kvd_degree, kvd_coef: polynomial kernel k(x, y) = (x.y / d + coef) ** degree.
    """

    num_videos: int = 256
    clip_length: int = 16
    clip_start: int = 0
    resolution: int = 224
    resize_method: str = "tf1_bilinear"
    quantize_uint8: bool = True
    real_split: str = "test"
    feature_layer: str = "logits"
    batch_size: int = 8
    kvd_degree: int = 3
    kvd_coef: float = 1.0

    def __post_init__(self) -> None:
        if self.feature_layer not in FEATURE_LAYERS:
            raise ValueError(
                f"FVDProtocol.feature_layer must be one of {tuple(FEATURE_LAYERS)}, "
                f"got {self.feature_layer!r}"
            )
        if self.resize_method not in RESIZE_METHODS:
            raise ValueError(
                f"FVDProtocol.resize_method must be one of {RESIZE_METHODS}, "
                f"got {self.resize_method!r}"
            )
        if self.real_split not in SPLITS:
            raise ValueError(
                f"FVDProtocol.real_split must be one of {SPLITS}, got {self.real_split!r}"
            )
        if self.clip_length < 9:
            raise ValueError(
                f"FVDProtocol.clip_length must be >= 9 (the I3D head pools 2 steps after 8x "
                f"temporal downsampling), got {self.clip_length}"
            )
        if self.resolution != 224:
            raise ValueError(
                f"FVDProtocol.resolution must be 224 (the Kinetics I3D head), got {self.resolution}"
            )
        for name in ("num_videos", "batch_size", "kvd_degree"):
            if getattr(self, name) < 1:
                raise ValueError(f"FVDProtocol.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_videos < 2:
            raise ValueError("FVDProtocol.num_videos must be >= 2 (a covariance needs 2)")

    def to_dict(self) -> dict[str, Any]:
        """The protocol plus the fixed facts (network, input range), for result JSONs."""
        out = dataclasses.asdict(self)
        out.update(
            network="I3D Kinetics-400 RGB (deepmind/kinetics-i3d = TF-Hub i3d-kinetics-400/1)",
            weights=f"{i3d.WEIGHTS_PACKAGE} 0.0.1: {i3d.WEIGHTS_FILE}",
            input_range=[-1.0, 1.0],
            resize=RESIZE_DESCRIPTIONS[self.resize_method],
            feature_dim=400 if self.feature_layer == "logits" else 1024,
            frechet="float64, trace sqrt via eigh of sqrt(S1) S2 sqrt(S1)",
            kvd="unbiased MMD^2, polynomial kernel (x.y/d + coef)^degree",
        )
        return out


def preprocess(videos: jax.Array, protocol: FVDProtocol) -> jax.Array:
    """[B, T, H, W, C] float in [-1, 1] (or uint8), C in {1, 3} -> [B, L, 224, 224, 3]."""
    if videos.ndim != 5 or videos.shape[-1] not in (1, 3):
        raise ValueError(f"videos must be [B, T, H, W, C] with C in (1, 3), got {videos.shape}")
    start, length = protocol.clip_start, protocol.clip_length
    if videos.shape[1] < start + length:
        raise ValueError(
            f"the FVD protocol reads frames [{start}, {start + length}) but videos have "
            f"{videos.shape[1]} frames"
        )
    x = videos[:, start : start + length]
    if x.dtype == jnp.uint8:
        x = x.astype(jnp.float32) / 127.5 - 1.0
    x = jnp.clip(x.astype(jnp.float32), -1.0, 1.0)
    if protocol.quantize_uint8:
        x = jnp.round((x + 1.0) * 127.5) / 127.5 - 1.0
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)  # grayscale -> RGB, as a gray video would be stored
    b, t, _, _, c = x.shape
    size = protocol.resolution
    if protocol.resize_method == "tf1_bilinear":
        return resize_tf1_bilinear(x, size, size)
    return jax.image.resize(x, (b, t, size, size, c), method="bilinear", antialias=False)


def _tf1_grid(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, weight of upper) per output pixel on TF1's legacy grid.

    TF1 `resize_bilinear(align_corners=False, half_pixel_centers=False)`: source coordinate
    = dst * in/out (float32, as TF computes it); lower = floor, upper = min(ceil, in - 1).
    Static shapes, so the grid is a compile-time constant.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.arange(out_size, dtype=np.float32) * scale
    lower = np.floor(src)
    upper = np.minimum(np.ceil(src), in_size - 1).astype(np.int32)
    weight = (src - lower).astype(np.float32)
    return np.minimum(lower, in_size - 1).astype(np.int32), upper, weight


def resize_tf1_bilinear(images: jax.Array, height: int, width: int) -> jax.Array:
    """[..., H, W, C] -> [..., height, width, C] float32, as `tf.compat.v1.image.resize_bilinear`
    (align_corners=False) computes it: the reference FVD preprocessing, in JAX (jittable;
    batch axes stay sharded, as only H and W are gathered)."""
    x = jnp.asarray(images, jnp.float32)
    y0, y1, fy = _tf1_grid(x.shape[-3], height)
    x0, x1, fx = _tf1_grid(x.shape[-2], width)
    top, bottom = jnp.take(x, y0, axis=-3), jnp.take(x, y1, axis=-3)
    fx, fy = jnp.asarray(fx)[:, None], jnp.asarray(fy)[:, None, None]

    def along_width(rows: jax.Array) -> jax.Array:
        left, right = jnp.take(rows, x0, axis=-2), jnp.take(rows, x1, axis=-2)
        return left + (right - left) * fx  # TF's lerp order, for bit-level agreement

    top, bottom = along_width(top), along_width(bottom)
    return top + (bottom - top) * fy


@functools.lru_cache(maxsize=1)
def _default_params() -> i3d.Params:
    return i3d.load_params()


class I3DFeatureExtractor:
    """Jitted, batched I3D features for a protocol: `extractor(videos) -> [N, D] float64`.

    Args:
      protocol: the FVD protocol (feature layer, clip, batch size).
      params: I3D params (default: the Kinetics-400 weights, loaded once per process).
      sharding: optional sharding of a [batch_size, ...] video batch, e.g.
        `NamedSharding(mesh, P("data"))`; params are then replicated over its mesh.
      dtype: I3D compute dtype (bfloat16 is fine on GPU/TPU; float32 on CPU).
    """

    def __init__(
        self,
        protocol: FVDProtocol,
        *,
        params: i3d.Params | None = None,
        sharding: jax.sharding.Sharding | None = None,
        dtype: Any = jnp.float32,
    ):
        self.protocol = protocol
        self.sharding = sharding
        params = params if params is not None else _default_params()
        if isinstance(sharding, jax.sharding.NamedSharding):
            replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
            params = parallel.global_array(params, replicated)
        self.params = params
        endpoint = FEATURE_LAYERS[protocol.feature_layer]

        def features(params: i3d.Params, videos: jax.Array) -> jax.Array:
            return i3d.i3d_apply(
                params, preprocess(videos, protocol), endpoint=endpoint, dtype=dtype
            )

        self._features = jax.jit(features)

    def __call__(self, videos: np.ndarray | jax.Array) -> np.ndarray:
        """Features of [N, T, H, W, C] videos as float64 [N, D], in batches of batch_size.

        A last, smaller batch is padded (and the padding dropped) to the next power of two, so
        a few compilations serve every N without computing up to batch_size - 1 blank clips
        (a call with 2 videos would otherwise cost as much as one with 8).
        """
        videos = np.asarray(videos)
        n, bs = videos.shape[0], self.protocol.batch_size
        out = []
        for start in range(0, n, bs):
            batch = videos[start : start + bs]
            valid = batch.shape[0]
            size = self._padded_size(valid)
            if valid < size:
                pad = np.zeros((size - valid, *batch.shape[1:]), batch.dtype)
                batch = np.concatenate([batch, pad])
            if self.sharding is not None:  # every process holds all videos: fill own shards
                batch = parallel.global_array(batch, self.sharding)
            features = parallel.to_host(self._features(self.params, batch))
            out.append(np.asarray(features, np.float64)[:valid])
        return np.concatenate(out) if out else np.zeros((0, 0))

    def _padded_size(self, valid: int) -> int:
        """The batch `valid` clips are padded to: the next power of two (a multiple of the
        sharding's devices), at most batch_size."""
        devices = len(self.sharding.device_set) if self.sharding is not None else 1
        size = max(1 << (valid - 1).bit_length(), devices)
        size = -(-size // devices) * devices
        return min(size, self.protocol.batch_size)


class FeatureCache:
    """I3D extractors per (protocol, sharding) and features per (clips, protocol), kept for
    the life of the cache.

    Scoring many generated sets against one real set (an experiment's settings, each a
    `compute_fvd` call) then compiles I3D once per protocol and runs it on the real clips
    once (~0.6 s per clip on 2 CPU cores). Clips are keyed by content (SHA-1 of their
    bytes, dtype and shape), so a changed real set is never served stale features.
    """

    def __init__(self) -> None:
        self._extractors: dict[tuple[FVDProtocol, Any], I3DFeatureExtractor] = {}
        self._features: dict[tuple[str, FVDProtocol], np.ndarray] = {}

    def extractor(
        self, protocol: FVDProtocol, sharding: jax.sharding.Sharding | None = None
    ) -> I3DFeatureExtractor:
        """The (jitted) extractor for `protocol` and `sharding`, built on first use."""
        key = (protocol, sharding)
        if key not in self._extractors:
            self._extractors[key] = I3DFeatureExtractor(protocol, sharding=sharding)
        return self._extractors[key]

    def features(self, extractor: I3DFeatureExtractor, videos: np.ndarray) -> np.ndarray:
        """`extractor(videos)` [N, D] for videos [N, T, H, W, C], computed once per content."""
        videos = np.ascontiguousarray(videos)
        digest = hashlib.sha1(videos.tobytes())
        digest.update(f"{videos.dtype}{videos.shape}".encode())
        key = (digest.hexdigest(), extractor.protocol)
        if key not in self._features:
            self._features[key] = extractor(videos)
        return self._features[key]


def fvd_from_features(
    real_features: np.ndarray, fake_features: np.ndarray, protocol: FVDProtocol
) -> dict[str, Any]:
    """FVD and KVD from precomputed features [N, D] (e.g. cached real-split features)."""
    return {
        "fvd": frechet_distance_of_features(real_features, fake_features),
        "kvd": kernel_distance(
            real_features, fake_features, degree=protocol.kvd_degree, coef=protocol.kvd_coef
        ),
        "num_real": int(real_features.shape[0]),
        "num_fake": int(fake_features.shape[0]),
        "protocol": protocol.to_dict(),
    }


def compute_fvd(
    real_videos: np.ndarray | jax.Array,
    fake_videos: np.ndarray | jax.Array,
    protocol: FVDProtocol | None = None,
    *,
    extractor: I3DFeatureExtractor | None = None,
    sharding: jax.sharding.Sharding | None = None,
    cache: FeatureCache | None = None,
) -> dict[str, Any]:
    """FVD / KVD between real and generated videos [N, T, H, W, C] in [-1, 1] (or uint8).

    Uses the first `protocol.num_videos` of each side and refuses fewer. With a `cache`
    (and no `extractor`), the extractor and the real clips' features come from it.
    Returns dict(fvd=, kvd=, num_real=, num_fake=, protocol=protocol.to_dict()).
    """
    protocol = protocol or FVDProtocol()
    for name, videos in (("real", real_videos), ("fake", fake_videos)):
        if videos.shape[0] < protocol.num_videos:
            raise ValueError(
                f"the FVD protocol asks for {protocol.num_videos} videos, got "
                f"{videos.shape[0]} {name} videos"
            )
    if extractor is None and cache is not None:
        extractor = cache.extractor(protocol, sharding)
    extractor = extractor or I3DFeatureExtractor(protocol, sharding=sharding)
    if extractor.protocol != protocol:
        raise ValueError("the extractor was built for a different FVD protocol")
    if cache is not None:
        real = cache.features(extractor, real_videos[: protocol.num_videos])
    else:
        real = extractor(real_videos[: protocol.num_videos])
    fake = extractor(fake_videos[: protocol.num_videos])
    return fvd_from_features(real, fake, protocol)
