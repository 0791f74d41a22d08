"""course_lib.audio against analytic values and hand computations."""
import math

import pytest
import torch

from course_lib.audio import (
    DigitClassifier,
    SpectrogramConfig,
    griffin_lim,
    hz_to_mel,
    image_to_mel_power,
    mel_filterbank,
    mel_power,
    mel_to_hz,
    spectral_convergence,
    stft,
    train_digit_classifier,
    waveform_to_image,
)


def test_mel_scale_anchor_and_inverse():
    assert hz_to_mel(0.0) == 0.0
    assert abs(hz_to_mel(1000.0) - 1000.0) < 0.1  # the HTK scale is built so that 1 kHz is ~1000 mel
    f = torch.tensor([0.0, 125.0, 700.0, 3999.0], dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(f)), f, atol=1e-9)


def test_filterbank_matches_a_hand_computation():
    c = SpectrogramConfig(sample_rate=8000, n_fft=16, n_mels=3, f_min=0.0, f_max=4000.0)
    fb = mel_filterbank(c)
    assert fb.shape == (3, 9)
    top = 2595 * math.log10(1 + 4000 / 700)
    edges = [700 * (10 ** (top * i / 4 / 2595) - 1) for i in range(5)]  # 5 points evenly spaced in mel
    for m in range(3):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        for k in range(9):
            f = k * 8000 / 16
            if lo <= f <= mid:
                expected = (f - lo) / (mid - lo)
            elif mid < f <= hi:
                expected = (hi - f) / (hi - mid)
            else:
                expected = 0.0
            assert abs(fb[m, k].item() - expected) < 1e-12, (m, k)


def test_filterbank_triangles_sum_to_one_between_first_and_last_centre():
    c = SpectrogramConfig()
    fb = mel_filterbank(c)
    freqs = torch.arange(c.n_freqs) * c.sample_rate / c.n_fft
    centres = mel_to_hz(torch.linspace(0, hz_to_mel(4000.0), c.n_mels + 2, dtype=torch.float64))[1:-1]
    inside = (freqs >= centres[0]) & (freqs <= centres[-1])
    assert torch.allclose(fb[:, inside].sum(0), torch.ones(int(inside.sum()), dtype=torch.float64), atol=1e-9)


def test_pure_tone_power_and_peak_band():
    c = SpectrogramConfig()
    k, amplitude = 40, 0.5  # a cosine exactly at bin 40 (625 Hz)
    n = torch.arange(c.clip_length, dtype=torch.float64)
    tone = (amplitude * torch.cos(2 * math.pi * k * c.sample_rate / c.n_fft * n / c.sample_rate)).float()
    power = stft(tone[None], c).abs() ** 2  # (1, F, frames)
    middle = power[0, :, c.n_frames // 2]
    assert middle.argmax().item() == k
    assert abs(middle[k].item() / (amplitude * c.n_fft / 4) ** 2 - 1) < 1e-3  # |X_k| = A * n_fft / 4
    mel = mel_power(tone, c)[0, :, c.n_frames // 2]
    fb = mel_filterbank(c)
    assert mel.argmax().item() == fb[:, k].argmax().item()  # the band whose triangle peaks nearest 625 Hz


def test_image_scaling_round_trip_and_range():
    c = SpectrogramConfig()
    g = torch.Generator().manual_seed(0)
    wave = 0.1 * torch.randn(3, c.clip_length, generator=g)
    img = waveform_to_image(wave, c)
    assert img.shape == (3, 1, c.n_mels, c.n_frames) and img.min() >= -1 and img.max() <= 1
    db = 10 * torch.log10(mel_power(wave, c).clamp(min=1e-10)).clamp(c.db_min, c.db_max)
    assert torch.allclose(10 * torch.log10(image_to_mel_power(img, c)), db, atol=1e-3)
    short = waveform_to_image(wave[:, :1000], c)  # zero-padded to the clip length
    assert short.shape == img.shape
    with pytest.raises(ValueError, match="waveforms"):
        waveform_to_image(torch.zeros(2, 3, 100), c)


def test_griffin_lim_recovers_a_consistent_magnitude():
    c = SpectrogramConfig()
    n = torch.arange(c.clip_length, dtype=torch.float32) / c.sample_rate
    chirp = 0.3 * torch.sin(2 * math.pi * (300 * n + 900 * n**2))[None]  # (1, L): a rising tone
    magnitude = stft(chirp, c).abs()
    g = torch.Generator().manual_seed(0)
    start = spectral_convergence(magnitude, griffin_lim(magnitude, c, iters=0, generator=g), c).item()
    fast = spectral_convergence(magnitude, griffin_lim(magnitude, c, iters=64, generator=g), c).item()
    plain = spectral_convergence(magnitude, griffin_lim(magnitude, c, iters=64, momentum=0.0, generator=g), c).item()
    assert start > 0.5  # random phases are far from consistent
    assert plain < start / 2 and fast < 0.15 and fast < plain  # momentum converges faster


def test_classifier_shapes_and_errors():
    clf = DigitClassifier()
    assert clf(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="divisible by 8"):
        clf(torch.zeros(2, 1, 30, 32))


def test_train_digit_classifier_learns_a_separable_toy_task_deterministically():
    """Two 'digits' that differ in which mel bands carry energy; random time shifts must not matter."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 2
    x = -torch.ones(64, 1, 32, 32) + 0.1 * torch.randn(64, 1, 32, 32, generator=g)
    x[y == 0, :, :8, 10:20] = 1.0   # class 0: low bands
    x[y == 1, :, 24:, 10:20] = 1.0  # class 1: high bands
    state = torch.random.get_rng_state()
    a = train_digit_classifier(x, y, steps=30, batch_size=16)
    b = train_digit_classifier(x, y, steps=30, batch_size=16)
    assert torch.equal(torch.random.get_rng_state(), state) and not a.training
    with torch.no_grad():
        assert (a(x).argmax(1) == y).float().mean() == 1.0
        assert torch.equal(a(x), b(x))  # same seed, same classifier
    untrained = train_digit_classifier(x, y, steps=0, batch_size=16)
    with torch.no_grad():
        assert (untrained(x).argmax(1) == y).float().mean() < 1.0  # the check above needs the training
    with pytest.raises(ValueError, match="expected images"):
        train_digit_classifier(x[:, 0], y)
