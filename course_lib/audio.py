"""Audio as images: log-mel spectrograms, Griffin-Lim inversion, a spoken-digit classifier (notebook 08).

The pipeline, in torch only::

    waveform (N, L) --stft--> power |X(f, n)|^2 (N, F, frames),  F = n_fft / 2 + 1
                    --mel filterbank--> mel power (N, n_mels, frames)
                    --10 log10, clamp to [db_min, db_max], scale--> image in [-1, 1]

- STFT: a periodic Hann window of ``n_fft`` samples every ``hop_length`` samples, centred, so a clip
  of L samples has 1 + L // hop_length frames. A cosine of amplitude A at the centre frequency of
  bin k has |X_k| = A * sum(window) / 2 = A * n_fft / 4.
- Mel filters (HTK scale, ``hz_to_mel``): n_mels + 2 points evenly spaced in mel between f_min and
  f_max; filter m is a triangle rising from point m to point m + 1 and falling to point m + 2 (peak 1,
  no area normalisation), evaluated at the FFT bin frequencies k * sample_rate / n_fft.
- Inversion: mel power -> linear power through the filterbank's pseudo-inverse (clamped at 0), its
  square root as the magnitude, and a phase found by Griffin-Lim (Griffin and Lim, 1984); with
  ``momentum`` > 0, the fast Griffin-Lim of Perraudin et al. (2013).

Usage::

    spec = SpectrogramConfig()                                  # 8 kHz, n_fft 512, hop 192, 32 mels
    fsdd = load_fsdd("train", length=spec.clip_length)          # 5,952 samples -> 32 frames
    images = waveform_to_image(fsdd.waveforms, spec)            # (N, 1, 32, 32) in [-1, 1]
    audio = image_to_waveform(images[:4], spec, iters=64)       # (4, 5952) after Griffin-Lim
    clf = DigitClassifier(); logits = clf(images)               # (N, 10)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import NUM_CLASSES, check_image_batch
from .train import cosine_lr, fit


@dataclass
class SpectrogramConfig:
    sample_rate: int = 8000  # Hz (the Free Spoken Digit Dataset's rate)
    n_fft: int = 512  # window and FFT length in samples (64 ms at 8 kHz)
    hop_length: int = 192  # samples between frames (62.5% window overlap)
    n_mels: int = 32  # mel bands: the image height
    n_frames: int = 32  # frames: the image width
    f_min: float = 0.0  # Hz, lowest edge of the first mel filter
    f_max: float | None = None  # Hz, highest edge of the last mel filter; None = sample_rate / 2
    db_min: float = -50.0  # mel power in dB (10 log10) mapped to -1; anything quieter is clipped
    db_max: float = 30.0  # mel power in dB mapped to +1

    @property
    def clip_length(self) -> int:
        """Samples per clip such that a centred STFT gives exactly ``n_frames`` frames."""
        return (self.n_frames - 1) * self.hop_length

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def top_freq(self) -> float:
        return float(self.f_max if self.f_max is not None else self.sample_rate / 2)


def hz_to_mel(f):
    """HTK mel scale: 2595 log10(1 + f / 700). Works on floats and tensors."""
    if isinstance(f, torch.Tensor):
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_to_hz(m):
    """Inverse of ``hz_to_mel``: 700 (10^(m / 2595) - 1)."""
    if isinstance(m, torch.Tensor):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(config: SpectrogramConfig) -> torch.Tensor:
    """Triangular mel filters as a (n_mels, n_freqs) float64 matrix: mel power = fb @ linear power."""
    c = config
    if not 0 <= c.f_min < c.top_freq <= c.sample_rate / 2:
        raise ValueError(f"Need 0 <= f_min < f_max <= sample_rate / 2, got f_min={c.f_min}, f_max={c.top_freq}.")
    freqs = torch.arange(c.n_freqs, dtype=torch.float64) * c.sample_rate / c.n_fft  # (F,) bin centre frequencies
    mels = torch.linspace(hz_to_mel(c.f_min), hz_to_mel(c.top_freq), c.n_mels + 2, dtype=torch.float64)
    edges = mel_to_hz(mels)  # (n_mels + 2,) in Hz
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (n_mels, 1) each
    rising = (freqs[None, :] - left) / (centre - left)  # (n_mels, F)
    falling = (right - freqs[None, :]) / (right - centre)  # (n_mels, F)
    return torch.minimum(rising, falling).clamp(min=0)  # (n_mels, F)


def _window(config: SpectrogramConfig, device) -> torch.Tensor:
    return torch.hann_window(config.n_fft, periodic=True, device=device)  # (n_fft,)


def stft(waveform: torch.Tensor, config: SpectrogramConfig) -> torch.Tensor:
    """Complex STFT: (N, L) -> (N, n_freqs, 1 + L // hop_length)."""
    return torch.stft(waveform, config.n_fft, config.hop_length, window=_window(config, waveform.device),
                      center=True, return_complex=True)


def istft(spec: torch.Tensor, config: SpectrogramConfig, length: int | None = None) -> torch.Tensor:
    """Inverse of ``stft`` (overlap-add with the same window): (N, n_freqs, frames) -> (N, length)."""
    return torch.istft(spec, config.n_fft, config.hop_length, window=_window(config, spec.device),
                       center=True, length=length)


def _check_waveform(waveform: torch.Tensor) -> torch.Tensor:
    waveform = torch.as_tensor(waveform)
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim != 2 or not waveform.is_floating_point():
        raise ValueError("Expected float waveforms of shape (N, L) or (L,), "
                         f"got {waveform.dtype} {tuple(waveform.shape)}.")
    return waveform.float()


def mel_power(waveform: torch.Tensor, config: SpectrogramConfig) -> torch.Tensor:
    """Mel power spectrogram: (N, L) -> (N, n_mels, frames)."""
    waveform = _check_waveform(waveform)
    power = stft(waveform, config).abs() ** 2  # (N, F, frames)
    fb = mel_filterbank(config).to(power)  # (n_mels, F)
    return torch.einsum("mf,nft->nmt", fb, power)  # (N, n_mels, frames)


def waveform_to_image(waveform: torch.Tensor, config: SpectrogramConfig) -> torch.Tensor:
    """Log-mel image in [-1, 1]: (N, L) -> (N, 1, n_mels, n_frames); the clip is cut or zero-padded to fit."""
    waveform = _check_waveform(waveform)
    L = config.clip_length
    waveform = waveform[:, :L] if waveform.shape[1] >= L else F.pad(waveform, (0, L - waveform.shape[1]))
    db = 10 * torch.log10(mel_power(waveform, config).clamp(min=1e-10))  # (N, n_mels, n_frames)
    db = db.clamp(config.db_min, config.db_max)
    return (2 * (db - config.db_min) / (config.db_max - config.db_min) - 1)[:, None]  # (N, 1, n_mels, n_frames)


def image_to_mel_power(image: torch.Tensor, config: SpectrogramConfig) -> torch.Tensor:
    """Inverse of the scaling in ``waveform_to_image``: (N, 1, n_mels, frames) in [-1, 1] -> mel power."""
    if image.ndim != 4 or image.shape[1:3] != (1, config.n_mels):
        raise ValueError(f"Expected log-mel images (N, 1, {config.n_mels}, frames), got {tuple(image.shape)}.")
    db = (image[:, 0].float().clamp(-1, 1) + 1) / 2 * (config.db_max - config.db_min) + config.db_min
    return 10 ** (db / 10)  # (N, n_mels, frames)


def mel_to_linear_power(mel: torch.Tensor, config: SpectrogramConfig) -> torch.Tensor:
    """Least-squares linear power with this mel power: pinv(fb) @ mel, clamped at 0. (N, n_mels, T) -> (N, F, T)."""
    pinv = torch.linalg.pinv(mel_filterbank(config)).to(mel)  # (F, n_mels)
    return torch.einsum("fm,nmt->nft", pinv, mel).clamp(min=0)


def griffin_lim(
    magnitude: torch.Tensor,
    config: SpectrogramConfig,
    iters: int = 64,
    momentum: float = 0.99,
    length: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A waveform (N, length) whose STFT magnitude approximates ``magnitude`` (N, n_freqs, frames).

    Random initial phases (drawn on the CPU from ``generator``), then ``iters`` rounds of istft and stft,
    each keeping the new phase. ``momentum`` 0 is the original algorithm, whose error never increases.
    ``length`` None: (frames - 1) * hop_length.
    """
    if magnitude.ndim != 3 or magnitude.shape[1] != config.n_freqs:
        raise ValueError(f"Expected magnitudes (N, {config.n_freqs}, frames), got {tuple(magnitude.shape)}.")
    length = length or (magnitude.shape[2] - 1) * config.hop_length
    phase = torch.rand(magnitude.shape, generator=generator) * 2 * math.pi  # (N, F, frames)
    angles = torch.polar(torch.ones_like(magnitude), phase.to(magnitude.device))  # unit complex numbers
    previous = torch.zeros_like(angles)
    for _ in range(iters):
        rebuilt = stft(istft(magnitude * angles, config, length), config)  # the closest consistent spectrogram
        update = rebuilt - momentum / (1 + momentum) * previous if momentum else rebuilt
        previous = rebuilt
        angles = update / update.abs().clamp(min=1e-8)
    return istft(magnitude * angles, config, length)  # (N, length)


def spectral_convergence(magnitude: torch.Tensor, waveform: torch.Tensor, config: SpectrogramConfig) -> torch.Tensor:
    """|| |STFT(waveform)| - magnitude ||_F / || magnitude ||_F per clip: 0 is a perfect match. (N,)"""
    rebuilt = stft(_check_waveform(waveform), config).abs()
    return (rebuilt - magnitude).flatten(1).norm(dim=1) / magnitude.flatten(1).norm(dim=1)


def image_to_waveform(image: torch.Tensor, config: SpectrogramConfig, iters: int = 64,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Log-mel image (N, 1, n_mels, frames) in [-1, 1] -> waveform (N, clip_length) via Griffin-Lim."""
    magnitude = mel_to_linear_power(image_to_mel_power(image, config), config).sqrt()  # (N, F, frames)
    audio = griffin_lim(magnitude, config, iters=iters, generator=generator,
                        length=(image.shape[-1] - 1) * config.hop_length)
    return audio.clamp(-1, 1)


@dataclass
class ClassifierConfig:
    channels: tuple[int, ...] = (16, 32, 64)  # conv channels per stage; each stage halves H and W
    n_classes: int = NUM_CLASSES
    dropout: float = 0.2


class DigitClassifier(nn.Module):
    """A small CNN: log-mel images (B, 1, n_mels, frames) -> (B, n_classes) logits.

    Conv stages, then the mean over positions, so any H and W divisible by 2 ** stages work.
    """

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = cfg = config or ClassifierConfig()
        layers, c_in = [], 1
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(c_in, cfg.n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 ** len(self.config.channels)
        check_image_batch(x, "DigitClassifier", (1, "H", "W"), f)
        h = self.features(x)  # (B, C, H / f, W / f)
        return self.head(h.mean(dim=(2, 3)))  # (B, n_classes)


def train_digit_classifier(images: torch.Tensor, labels: torch.Tensor, steps: int = 500, batch_size: int = 64,
                           lr: float = 2e-3, seed: int = 20, device: torch.device | str = "cpu") -> DigitClassifier:
    """A ``DigitClassifier`` trained on spectrogram images (N, 1, H, W) in [-1, 1] with labels (N,).

    AdamW, warm-up then cosine decay, random time shifts of up to 3 frames. Deterministic for a ``seed``
    (weights, batches, shifts, dropout); the global random state is left untouched. Mixed precision as
    ``course_lib.precision`` chooses for ``device``.
    """
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"train_digit_classifier: expected images (N, 1, H, W) and labels (N,), got "
                         f"{tuple(images.shape)} and {tuple(labels.shape)}.")
    x, y = images.to(device), labels.to(device)
    forked = [x.device] if x.device.type == "cuda" else []  # manual_seed reseeds CUDA too: fork it as well
    with torch.random.fork_rng(devices=forked, device_type="cuda"):
        torch.manual_seed(seed)
        clf = DigitClassifier()
        opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, steps, max(1, steps // 20)))
        g = torch.Generator().manual_seed(seed + 1)

        def batches():
            while True:
                idx = torch.randint(0, len(x), (batch_size,), generator=g)
                shift = int(torch.randint(-3, 4, (), generator=g))  # small time shifts as augmentation
                yield torch.roll(x[idx], shift, dims=3), y[idx]

        fit(clf, opt, lambda m, b: F.cross_entropy(m(b[0]), b[1]), batches(), steps=steps, device=device,
            scheduler=sched, progress=False)
    return clf.eval()


__all__ = [
    "SpectrogramConfig", "hz_to_mel", "mel_to_hz", "mel_filterbank", "stft", "istft", "mel_power",
    "waveform_to_image", "image_to_mel_power", "mel_to_linear_power", "griffin_lim", "spectral_convergence",
    "image_to_waveform", "ClassifierConfig", "DigitClassifier", "train_digit_classifier",
]
