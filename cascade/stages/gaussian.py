"""Gaussian-diffusion stages in log-SNR (VDM / Imagen Video): the shared objective and sampler.

The keyframe stage and both super-resolution stages differ only in what the
network is conditioned on; that is the `conditioning` hook. Everything else
(time sampling, the forward process, the loss weighting, classifier-free
guidance, the sampler) lives here once.
"""

from __future__ import annotations

import abc
import functools

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from cascade.configs import ConfigError, build_dataclass, check_choice
from cascade.diffusion import conditioning as given_frames  # `conditioning` is a hook here
from cascade.diffusion import distill, gaussian, guidance, samplers, schedules
from cascade.models.unet3d import UNet3D, UNetConfig
from cascade.stages.stage import Batch, Stage


class GaussianStage(Stage, abc.ABC):
    """A U-Net trained with a Gaussian diffusion objective; subclasses add conditioning."""

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        d = config.diffusion
        check_choice(d.parametrization, gaussian.PARAMETRIZATIONS, "diffusion.parametrization")
        check_choice(d.loss, gaussian.WEIGHTINGS, "diffusion.loss")
        check_choice(d.schedule, tuple(schedules.SCHEDULES), "diffusion.schedule")
        check_choice(config.sample.sampler, samplers.SAMPLERS, "sample.sampler")
        self.model_config: UNetConfig = build_dataclass(UNetConfig, config.model, "model")
        size = self.model_config.image_size
        if size != self.network_size:
            raise ConfigError(
                f"config.model.image_size={size} but this {self.name} network sees "
                f"{self.network_size}x{self.network_size} frames (config.view / config.sr.crop)."
            )
        self.schedule = schedules.get_schedule(
            d.schedule, logsnr_min=d.logsnr_min, logsnr_max=d.logsnr_max, shift=d.schedule_shift
        )

    @property
    def network_size(self) -> int:
        """Height = width of the frames the network is trained on."""
        return self.config.view.resolution

    # -- hooks -------------------------------------------------------------------------------
    @abc.abstractmethod
    def conditioning(
        self, batch: Batch, key: jax.Array, *, train: bool
    ) -> tuple[jax.Array | None, jax.Array | None]:
        """(channels to concatenate to z_t [B,T,H,W,Cc] or None, aug_logsnr [B] or None)."""

    # -- network ------------------------------------------------------------------------------
    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return UNet3D(self.model_config, rngs=rngs)

    @property
    def null_label(self) -> int:
        return self.model_config.num_classes

    def _labels(self, batch: Batch) -> jax.Array | None:
        if self.model_config.num_classes <= 0:
            return None
        return batch["label"].astype(jnp.int32)

    def _train_labels(self, batch: Batch, key: jax.Array) -> jax.Array | None:
        """Training labels with classifier-free label dropout: [B], or [B, T] per frame when
        the batch has extra independent images (`image_label` [B, n], the last n frames).

        A clip's frames share its label and one dropout draw; each image has its own label
        and its own draw, so the null label is learnt on images as on clips.
        """
        label = self._labels(batch)
        if label is None:
            return None
        p = self.config.diffusion.label_dropout
        if p > 0:
            label = guidance.drop_labels(label, p, key, self.null_label)
        if "image_label" not in batch:
            return label
        images = batch["image_label"].astype(jnp.int32)
        if p > 0:
            images = guidance.drop_labels(images, p, jax.random.fold_in(key, 1), self.null_label)
        b, frames = label.shape[0], batch["video"].shape[1] - images.shape[1]
        return jnp.concatenate([jnp.broadcast_to(label[:, None], (b, frames)), images], axis=1)

    # -- what is diffused ---------------------------------------------------------------------
    def diffusion_target(self, batch: Batch) -> jax.Array:
        """The clips the diffusion process runs on [B,T,H,W,C]: the videos themselves here;
        a super-resolution stage may diffuse their residual from its upsampled input."""
        return batch["video"]

    def from_diffusion_target(self, x: jax.Array, cond: Batch) -> jax.Array:
        """The inverse of `diffusion_target`: samples x [B,T,H,W,C] -> videos."""
        return x

    def x0_clip(self, cond: Batch) -> bool | float | tuple[jax.Array, jax.Array]:
        """The sampler's x^ clipping (config.sample.clip_x0) in the diffused space, for
        sampling given `cond` (see `gaussian.predictions`)."""
        return self.config.sample.clip_x0

    def _network(self, model, z, logsnr, cond, aug_logsnr, label, **kwargs):
        x_in = z if cond is None else jnp.concatenate([z, cond.astype(z.dtype)], axis=-1)
        return model(x_in, logsnr, label=label, aug_logsnr=aug_logsnr, **kwargs)

    # -- objective ----------------------------------------------------------------------------
    def loss(self, model: nnx.Module, batch: Batch, key: jax.Array) -> tuple[jax.Array, dict]:
        x = self.diffusion_target(batch)
        b = x.shape[0]
        k_t, k_eps, k_label, k_cond, k_drop = jax.random.split(key, 5)
        t = schedules.uniform_t(k_t, b)  # low-discrepancy (VDM)
        logsnr = self.schedule(t)
        eps = jax.random.normal(k_eps, x.shape, x.dtype)
        z = gaussian.q_sample(x, eps=eps, logsnr=logsnr)
        label = self._train_labels(batch, k_label)
        cond, aug_logsnr = self.conditioning(batch, k_cond, train=True)
        out = self._network(
            model,
            z,
            logsnr,
            cond,
            aug_logsnr,
            label,
            image_mask=batch.get("image_mask"),
            deterministic=False,
            dropout_rng=k_drop,
        )
        per_example = gaussian.diffusion_loss(
            out.astype(jnp.float32),
            x=x,
            eps=eps,
            logsnr=logsnr,
            parametrization=self.config.diffusion.parametrization,
            weighting=self.config.diffusion.loss,
        )
        loss = jnp.mean(per_example)
        return loss, {"loss": loss}

    supports_distillation = True

    def distill_loss(self, student, teacher, batch, key, *, student_steps, weighting):
        """Matching two deterministic DDIM steps of the teacher (see `Stage.distill_loss`);
        `weighting` "auto" is the stage's own diffusion.loss."""
        x = self.diffusion_target(batch)
        k_u, k_eps, k_cond = jax.random.split(key, 3)
        u = distill.sample_student_u(k_u, x.shape[0], student_steps)
        eps = jax.random.normal(k_eps, x.shape, x.dtype)
        cond = self.cond_from_batch(batch)
        p = self.config.diffusion.parametrization
        z = gaussian.q_sample(x, eps=eps, logsnr=self.schedule(u))
        target = distill.gaussian_distill_target(
            self.denoiser(teacher, cond, k_cond),
            z,
            u,
            student_steps=student_steps,
            schedule=self.schedule,
            parametrization=p,
        )
        out = self.denoiser(student, cond, k_cond)(z, target["logsnr"])
        if weighting == "auto":
            weighting = self.config.diffusion.loss
        loss = jnp.mean(distill.gaussian_distill_loss(out, target, p, weighting))
        return loss, {"loss": loss}

    # -- sampling -----------------------------------------------------------------------------
    def denoiser(self, model: nnx.Module, cond: Batch, key: jax.Array):
        """fn(z_t, logsnr [B]) -> network output at sampling time: conditioning fixed (SR noise
        augmentation at its sampling level), classifier-free guidance if configured."""
        cond_channels, aug_logsnr = self.conditioning(cond, key, train=False)
        label = self._labels(cond)

        def denoise(z, logsnr, label):
            channels, aug = cond_channels, aug_logsnr
            if channels is not None and z.shape[0] != channels.shape[0]:
                # Classifier-free guidance runs both halves in one [2B] batch: the
                # conditioning clip (and its augmentation level) is the same for both.
                reps = z.shape[0] // channels.shape[0]
                channels = jnp.concatenate([channels] * reps)
                aug = None if aug is None else jnp.concatenate([aug] * reps)
            out = self._network(model, z, logsnr, channels, aug, label)
            return out.astype(jnp.float32)

        w = self.config.sample.guidance_scale
        if label is not None and w > 0:
            return guidance.cfg_denoise_fn(
                denoise,
                w,
                self.null_label,
                label,
                parametrization=self.config.diffusion.parametrization,
            )
        return functools.partial(denoise, label=label)

    def sample(
        self, model: nnx.Module, key: jax.Array, cond: Batch, *, steps: int | None = None
    ) -> jax.Array:
        s = self.config.sample
        k_cond, k_sample = jax.random.split(key)
        x = samplers.sample(
            self.denoiser(model, cond, k_cond),
            (cond["label"].shape[0], *self.output_shape),
            k_sample,
            steps=steps or s.steps,
            sampler=s.sampler,
            eta=s.eta,
            gamma=s.gamma,
            schedule=self.schedule,
            parametrization=self.config.diffusion.parametrization,
            clip_x0=self.x0_clip(cond),
        )
        return self.from_diffusion_target(x, cond)

    conditioning_methods = given_frames.METHODS

    def sample_given(self, model, key, cond, given, mask, *, method, w_r, steps):
        """Replacement or VDM reconstruction guidance (`cascade.diffusion.conditioning.sample_given`) with the
        stage's sampler; see `Stage.sample_given`."""
        s = self.config.sample
        k_cond, k_sample = jax.random.split(key)
        x = given_frames.sample_given(
            self.denoiser(model, cond, k_cond),
            self.diffusion_target({**cond, "video": given}),
            mask[:, :, None, None, None],
            k_sample,
            method=method,
            w_r=w_r,
            steps=steps,
            parametrization=self.config.diffusion.parametrization,
            sampler=s.sampler,
            eta=s.eta,
            gamma=s.gamma,
            schedule=self.schedule,
            clip_x0=self.x0_clip(cond),
        )
        return self.from_diffusion_target(x, cond)
