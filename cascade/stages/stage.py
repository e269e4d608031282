"""What every stage is: a network, an objective, the views it trains on, a sampler.

A stage never touches devices, checkpoints or files: the trainer and the
runners do. `make_batch` runs on the host in numpy (views of the raw clips,
seeded per step so a resumed run sees the same batches); `loss` and `sample`
are pure JAX functions of an NNX model and an explicit key. `model_graphdef`,
`merge_model` and `sampling_fn` turn a stage's network into pure functions of its
parameters, which the trainer, the samplers and evaluation jit.

Callers never branch on a stage's type: what differs between stages is a method
here (`distill_loss`, `trivial_baselines`, `to_video`, `measured_config`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

Batch = dict[str, Any]
Shape = tuple[int, int, int, int]  # (frames, height, width, channels)


class ShapeMismatchError(ValueError):
    """A batch or a chained stage whose shape disagrees with the config."""


def apply_measured(
    config: ml_collections.ConfigDict, measured: dict[str, Any] | None
) -> ml_collections.ConfigDict:
    """`config` with the values a stage measured at training time (`Stage.measured_config`)
    filled in where the config leaves them to be measured (0); others are kept as given."""
    if not measured:
        return config
    config = ml_collections.ConfigDict(config.to_dict())  # never change the caller's config
    for dotted, value in measured.items():
        section, _, key = dotted.rpartition(".")
        target = config
        for part in section.split(".") if section else ():
            target = target[part]
        if not target[key]:
            target[key] = value
    return config


def model_graphdef(stage: Stage) -> nnx.GraphDef:
    """The network's static structure, without allocating parameters."""
    return nnx.split(nnx.eval_shape(lambda: stage.build_model(nnx.Rngs(0))))[0]


def merge_model(graphdef: nnx.GraphDef, params: Any) -> nnx.Module:
    """Rebuild the network from its graph and parameters."""
    return nnx.merge(graphdef, params)


def sampling_fn(
    stage: Stage, graphdef: nnx.GraphDef, steps: int | None = None
) -> Callable[[Any, Batch, jax.Array], jax.Array]:
    """(params, cond, key) -> outputs [B, *stage.output_shape]: the stage's whole sampling loop
    as a pure function of its parameters, to jit (`training.sampler`) or cost (evaluation)."""

    def run(params: Any, cond: Batch, key: jax.Array) -> jax.Array:
        return stage.sample(merge_model(graphdef, params), key, cond, steps=steps)

    return run


class Stage(abc.ABC):
    """Base class: subclasses set `name` and implement the abstract methods."""

    name: str = ""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    @abc.abstractmethod
    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        """The network with freshly initialised parameters."""

    @abc.abstractmethod
    def make_batch(self, clips: Batch, rng: np.random.Generator) -> Batch:
        """Training pair(s) from raw clips `video` [B,T,H,W,C] in [-1,1] (host, numpy)."""

    def eval_batch(self, clips: Batch, rng: np.random.Generator) -> Batch:
        """Like `make_batch`, without training-only augmentation (e.g. random crops)."""
        return self.make_batch(clips, rng)

    @abc.abstractmethod
    def loss(self, model: nnx.Module, batch: Batch, key: jax.Array) -> tuple[jax.Array, dict]:
        """Scalar training loss and a dict of scalar metrics."""

    @abc.abstractmethod
    def sample(
        self, model: nnx.Module, key: jax.Array, cond: Batch, *, steps: int | None = None
    ) -> jax.Array:
        """Generate outputs [B, *output_shape] given conditioning `cond` (`cond_from_batch`)
        in `steps` network evaluations (None: the config's `sample.steps`)."""

    @property
    @abc.abstractmethod
    def output_shape(self) -> Shape:
        """(frames, height, width, channels) of what `sample` produces."""

    @property
    def input_shape(self) -> Shape | None:
        """(frames, height, width, channels) of the video this stage is conditioned on, if any."""
        return None

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """Shapes/dtypes `loss` expects; used to validate batches and to benchmark."""
        spec = {"video": jax.ShapeDtypeStruct((batch_size, *self.output_shape), jnp.float32)}
        spec["label"] = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
        if self.input_shape is not None:
            spec["cond"] = jax.ShapeDtypeStruct((batch_size, *self.input_shape), jnp.float32)
        return spec

    def measured_config(self) -> dict[str, Any]:
        """Config values this stage measured from the training data (dotted key -> value).

        The trainer stores them in the checkpoint's meta ("measured"), and loading applies
        them (`apply_measured`), so a trained stage samples without the training set.
        """
        return {}

    def to_video(self, outputs: np.ndarray) -> np.ndarray:
        """What `sample` produced, as clips [B,T,H,W,C] in [-1, 1] (latent stages decode)."""
        return outputs

    def cond_from_batch(self, batch: Batch) -> Batch:
        """The part of a training/test batch that `sample` conditions on."""
        cond = {"label": batch["label"]}
        if "cond" in batch:
            cond["cond"] = batch["cond"]
        return cond

    # -- hooks for callers that would otherwise branch on the stage's type ------------------------
    supports_distillation: bool = False  # True where `distill_loss` is implemented

    def distill_loss(
        self,
        student: nnx.Module,
        teacher: nnx.Module,
        batch: Batch,
        key: jax.Array,
        *,
        student_steps: jax.Array,
        weighting: str,
    ) -> tuple[jax.Array, dict]:
        """Progressive distillation loss of `student` against two deterministic steps of
        `teacher` (Salimans & Ho 2022), the student taking `student_steps` steps in all;
        `weighting` as in config.distill.weighting ("auto": the stage's own loss)."""
        raise NotImplementedError(f"a {self.name} stage has no sampler to distil")

    # Methods `sample_given` knows ("replacement", "reconstruction"); empty: none.
    conditioning_methods: tuple[str, ...] = ()

    def sample_given(
        self,
        model: nnx.Module,
        key: jax.Array,
        cond: Batch,
        given: jax.Array,
        mask: jax.Array,
        *,
        method: str,
        w_r: jax.Array,
        steps: int,
    ) -> jax.Array:
        """Outputs [B, *output_shape] that equal `given` [B, *output_shape] on the frames where
        mask [B, T] is True, the other frames generated by `method` (one of
        `conditioning_methods`; w_r: reconstruction guidance weight) in `steps` steps."""
        raise NotImplementedError(f"a {self.name} stage cannot be conditioned on given frames")

    def frames_to_outputs(self, video: np.ndarray) -> np.ndarray:
        """Clips [B,F,H,W,C] in [-1, 1] in the space `sample_given` works in (latent stages
        encode); the inverse of `to_video`. Any clip length the stage can represent."""
        return video

    def window_context(self, outputs: np.ndarray, overlap: int) -> np.ndarray:
        """The last `overlap` frames of `outputs` [B, F, ...] (the first clip of an
        autoregressive extension, then each window just generated) as the first frames of the
        next window [B, overlap, ...]. Pixel stages: the frames themselves; latent stages
        re-encode them (see `LatentDiTStage`)."""
        return outputs[:, -overlap:]

    def trivial_baselines(
        self, target: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray] | None:
        """For a stage that restores a degraded video (super-resolution), from ground-truth
        clips `target` [B, *output_shape]: the degraded input it is given [B, *input_shape],
        the trivial baselines' outputs by name [B, *output_shape], and a boolean mask [T] of
        the frames the stage has to generate (the ones worth scoring). None otherwise."""
        return None

    def check_batch(self, batch: Batch) -> None:
        """Refuse a batch whose shapes disagree with the stage config, naming both."""
        for key, spec in self.batch_spec(len(batch["video"])).items():
            if key not in batch:
                raise ShapeMismatchError(
                    f"{self.name}: batch has no {key!r} (expects {spec.shape})."
                )
            got = tuple(np.shape(batch[key]))
            if got != tuple(spec.shape):
                raise ShapeMismatchError(
                    f"{self.name}: batch[{key!r}] has shape {got} but the config expects "
                    f"{tuple(spec.shape)} [B,T,H,W,C]. Check config.view / config.model against "
                    "config.data (frames, resolution, channels)."
                )
