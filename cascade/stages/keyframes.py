"""The keyframe stage, the cascade's first: a few low-res frames from noise and a class label.

Its training clips are views of the stored clips: a random window of
`frames * frame_stride` frames, every `frame_stride`-th kept, box-downsampled
to `resolution`. Optional extra independent images from other clips
(VDM joint image-video training) are appended on the time axis, masked in
temporal attention, and carry their own labels (`image_label` [B, extra]).
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from cascade.configs import ConfigError
from cascade.data import views
from cascade.stages.gaussian import GaussianStage
from cascade.stages.stage import Batch, Shape


class KeyframesStage(GaussianStage):
    name = "keyframes"

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        v = config.view
        if (
            self.model_config.in_channels != v.channels
            or self.model_config.out_channels != v.channels
        ):
            raise ConfigError(
                f"config.model: in_channels={self.model_config.in_channels} and out_channels="
                f"{self.model_config.out_channels} must both equal config.view.channels={v.channels}."
            )

    @property
    def output_shape(self) -> Shape:
        v = self.config.view
        return (v.frames, v.resolution, v.resolution, v.channels)

    def batch_spec(self, batch_size: int) -> dict:
        spec = super().batch_spec(batch_size)
        extra = self.config.view.extra_images
        if extra:
            t, h, w, c = self.output_shape
            spec["video"] = jax.ShapeDtypeStruct((batch_size, t + extra, h, w, c), np.float32)
            spec["image_mask"] = jax.ShapeDtypeStruct((batch_size, t + extra), np.bool_)
            spec["image_label"] = jax.ShapeDtypeStruct((batch_size, extra), np.int32)
        return spec

    def make_batch(self, clips: Batch, rng: np.random.Generator) -> Batch:
        v = self.config.view
        video = views.clip_view(clips["video"], v, self.config.data, rng)
        batch = {"video": video, "label": clips["label"].astype(np.int32)}
        if v.extra_images:
            # From the image pool's batch when the data has one (data.image_pool: many more
            # clips than videos), else from the other clips of this batch.
            pooled = "pool_video" in clips
            images, image_labels = views.extra_images(
                clips["pool_video" if pooled else "video"],
                v.extra_images,
                rng,
                labels=clips["pool_label" if pooled else "label"],
            )
            images = views.spatial_downsample(images, clips["video"].shape[2] // v.resolution)
            batch["video"] = np.concatenate([video, images], axis=1)
            # Each image keeps the label of the clip it came from (see GaussianStage.loss).
            batch["image_label"] = np.asarray(image_labels, np.int32)
            mask = np.zeros((len(video), v.frames + v.extra_images), bool)
            mask[:, v.frames :] = True
            batch["image_mask"] = mask
        return batch

    def conditioning(self, batch: Batch, key: jax.Array, *, train: bool):
        return None, None
