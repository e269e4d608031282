"""A fixed log-mel audio front end and its inverse (mel pseudo-inverse + Griffin-Lim).

The audio representation for the sound of `bouncing_shapes`: a mono track
[S] at `sample_rate` becomes a log-mel image [S / hop, n_mels]; with hop dividing
the samples per video frame, every video frame owns exactly `samples_per_frame / hop`
mel frames (default 16 kHz, hop 125: 16 mel frames per frame at 8 fps), so the two
modalities share a time axis. Decoding inverts the mel projection (least squares,
clipped at 0) and recovers a phase with fast Griffin-Lim (Perraudin et al. 2013).

Chosen over a learned 1D autoencoder at this scale: it has no parameters to train,
its reconstruction keeps every onset (measured by `cascade.evaluation.audio_repr`), and
its latent is already small and smooth (64 mels x 128 frames/s vs 16,000 samples/s).
Everything is numpy float64 with any leading batch shape.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np


@dataclasses.dataclass(frozen=True)
class MelConfig:
    """Log-mel settings. hop must divide the samples per video frame for alignment."""

    sample_rate: int = 16_000
    n_fft: int = 512
    hop: int = 125
    n_mels: int = 64
    fmin: float = 40.0
    fmax: float = 8_000.0
    floor: float = 1e-5  # magnitude floor of the log (-100 dB)


def stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Centred short-time Fourier transform with a periodic Hann window.

    Args:
      x: float [..., S]. Frame i is centred on sample i * hop (zero padding outside).
    Returns:
      complex128 [..., ceil(S / hop), n_fft // 2 + 1].
    """
    x = np.asarray(x, np.float64)
    n = x.shape[-1]
    frames = -(-n // hop)
    pad = [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2 + frames * hop - n)]
    xp = np.pad(x, pad)
    idx = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None, :]
    return np.fft.rfft(xp[..., idx] * _window(n_fft), axis=-1)


def istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Inverse of `stft` (weighted overlap-add): complex [..., F, n_fft // 2 + 1] -> [..., length]."""
    frames = spec.shape[-2]
    win = _window(n_fft)
    chunks = np.fft.irfft(spec, n=n_fft, axis=-1) * win
    total = n_fft + (frames - 1) * hop
    out = np.zeros((*spec.shape[:-2], total))
    norm = np.zeros(total)
    for i in range(frames):
        out[..., i * hop : i * hop + n_fft] += chunks[..., i, :]
        norm[i * hop : i * hop + n_fft] += win**2
    out = out / np.maximum(norm, 1e-8)
    return out[..., n_fft // 2 : n_fft // 2 + length]


@functools.lru_cache(maxsize=4)
def _window(n_fft: int) -> np.ndarray:
    return np.sin(np.pi * np.arange(n_fft) / n_fft) ** 2


@functools.lru_cache(maxsize=8)
def mel_filterbank(cfg: MelConfig) -> np.ndarray:
    """Triangular filters on the HTK mel scale, area-normalised: float64 [n_fft // 2 + 1, n_mels]."""

    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.fft.rfftfreq(cfg.n_fft, 1.0 / cfg.sample_rate)
    edges = hz(np.linspace(mel(cfg.fmin), mel(cfg.fmax), cfg.n_mels + 2))
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lo) / (mid - lo)
    down = (hi - freqs[:, None]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(up, down))
    # Filters narrower than a bin at the low end would be empty: give each its nearest bin.
    empty = fb.sum(0) == 0
    fb[np.abs(freqs[:, None] - mid[None, :]).argmin(0)[empty], np.flatnonzero(empty)] = 1.0
    return fb * (2.0 / (hi - lo))[None, :]


def encode(audio: np.ndarray, cfg: MelConfig = MelConfig()) -> np.ndarray:
    """Log-mel magnitudes: float [..., S] -> float64 [..., ceil(S / hop), n_mels] (natural log)."""
    mag = np.abs(stft(audio, cfg.n_fft, cfg.hop))
    return np.log(np.maximum(mag @ mel_filterbank(cfg), cfg.floor))


def decode(
    logmel: np.ndarray, length: int, cfg: MelConfig = MelConfig(), iters: int = 64
) -> np.ndarray:
    """Audio from log-mels: float [..., F, n_mels] -> float64 [..., length].

    Magnitudes come from the least-squares inverse of the mel projection (clipped at 0);
    the phase from `iters` iterations of fast Griffin-Lim (momentum 0.99), started from zero phase.
    """
    fb = mel_filterbank(cfg)
    mel = np.exp(np.asarray(logmel, np.float64))
    mel = np.where(mel <= cfg.floor * 1.0001, 0.0, mel)  # the floor is silence, not energy
    mag = np.maximum(mel @ np.linalg.pinv(fb), 0.0)
    spec = mag.astype(np.complex128)
    prev = spec
    for _ in range(iters):
        x = istft(spec, cfg.n_fft, cfg.hop, length)
        proj = stft(x, cfg.n_fft, cfg.hop)
        accel = proj + 0.99 * (proj - prev)
        prev = proj
        spec = mag * np.exp(1j * np.angle(accel))
    return istft(spec, cfg.n_fft, cfg.hop, length)
