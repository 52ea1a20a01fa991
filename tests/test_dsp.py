"""The differentiable synth, filters, crossfades and limiter against NumPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

from ensemble import dsp
from ensemble.errors import EnsembleError

SR, HOP = 16000, 160


def constant(value, n_frames, width=1):
    return torch.full((1, n_frames, width), float(value), dtype=torch.float64)


def test_harmonic_peaks_at_multiples_of_f0(rng):
    f0, K, T = 261.63, 20, 100  # 1 s of C4
    amps = torch.tensor(rng.uniform(0.2, 1.0, (1, 1, K))).expand(1, T, K) / K
    audio = dsp.harmonic_synthesis(constant(f0, T), amps, sample_rate=SR, hop_length=HOP)[0]
    spectrum = np.abs(np.fft.rfft(audio.numpy() * np.hanning(len(audio))))
    bin_hz = SR / len(audio)
    peaks, _ = scipy.signal.find_peaks(spectrum, height=spectrum.max() * 1e-2)
    expected = np.array([k * f0 for k in range(1, K + 1) if k * f0 < SR / 2])
    assert len(peaks) == len(expected)
    assert np.all(np.abs(peaks * bin_hz - expected) <= bin_hz)


@pytest.mark.parametrize("sample_rate", [16000, 22050])
def test_no_energy_above_nyquist(sample_rate):
    """Render the *continuous* signal our controls describe at 4x the rate: nothing above Nyquist."""
    T, K = 200, 60
    f0 = torch.linspace(150.0, 1800.0, T, dtype=torch.float64).reshape(1, T, 1)  # glide
    dist = dsp.remove_above_nyquist(torch.ones(1, T, K, dtype=torch.float64), f0,
                                    sample_rate=sample_rate)
    # oversampled oracle: same controls, 4x sample rate and hop
    over = dsp.naive_harmonic_synthesis(f0, dist / K, sample_rate=4 * sample_rate,
                                        hop_length=4 * HOP)[0].numpy()
    freqs, psd = scipy.signal.welch(over, fs=4 * sample_rate, nperseg=8192, window="blackmanharris")
    above = psd[freqs >= sample_rate / 2].sum() / psd.sum()
    assert 10 * np.log10(above + 1e-300) < -60.0
    # without the mask most of the energy of this glide would be above Nyquist
    raw = dsp.naive_harmonic_synthesis(f0, torch.ones(1, T, K, dtype=torch.float64) / K,
                                       sample_rate=4 * sample_rate, hop_length=4 * HOP)[0].numpy()
    _, psd_raw = scipy.signal.welch(raw, fs=4 * sample_rate, nperseg=8192, window="blackmanharris")
    assert psd_raw[freqs >= sample_rate / 2].sum() / psd_raw.sum() > 0.1


def test_pruned_equals_unpruned(rng):
    T, K = 250, 100
    f0 = torch.tensor(rng.uniform(80, 900, (1, T, 1)))
    f0[:, 100:130] = 0.0  # an unvoiced stretch
    dist = dsp.remove_above_nyquist(torch.tensor(rng.uniform(0, 1, (1, T, K))), f0,
                                    sample_rate=SR).float()
    a = dsp.harmonic_synthesis(f0.float(), dist / K, sample_rate=SR, hop_length=HOP, prune=True)
    b = dsp.harmonic_synthesis(f0.float(), dist / K, sample_rate=SR, hop_length=HOP, prune=False)
    assert torch.max(torch.abs(a - b)) < 1e-5


def test_matches_naive_reference(rng):
    T, K = 120, 30
    f0 = torch.tensor(np.linspace(100, 400, T)).reshape(1, T, 1)
    amps = torch.tensor(rng.uniform(0, 1, (1, T, K))) / K
    amps = dsp.remove_above_nyquist(amps, f0, sample_rate=SR)
    fast = dsp.harmonic_synthesis(f0, amps, sample_rate=SR, hop_length=HOP)
    ref = dsp.naive_harmonic_synthesis(f0, amps, sample_rate=SR, hop_length=HOP)
    assert torch.max(torch.abs(fast - ref)) < 1e-6


def test_gradients_reach_every_control():
    T, K = 20, 8
    f0 = torch.full((1, T, 1), 220.0, requires_grad=True)
    amps = torch.full((1, T, K), 0.1, requires_grad=True)
    mags = torch.full((1, T, 17), 0.1, requires_grad=True)
    audio = dsp.harmonic_synthesis(f0, amps, sample_rate=SR, hop_length=HOP)
    audio = audio + dsp.filtered_noise(mags, hop_length=HOP, generator=torch.Generator().manual_seed(0))
    (audio ** 2).sum().backward()
    for t in (f0, amps, mags):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_ten_minute_phase_does_not_drift():
    T = 600 * 100  # 10 minutes of frames
    f0 = 440.0
    phase = dsp.accumulate_phase(torch.full((1, T, 1), f0, dtype=torch.float32), sample_rate=SR,
                                 hop_length=HOP)[0].double().numpy()
    n = np.arange(len(phase))
    exact = np.remainder(2 * np.pi * f0 * n / SR, 2 * np.pi)
    err = np.angle(np.exp(1j * (phase - exact)))
    assert np.max(np.abs(err)) < 1e-3  # radians: < 0.06 degrees after 10 minutes


def test_unvoiced_frames_are_silent():
    T = 50
    f0 = torch.zeros(1, T, 1)
    controls = dsp.HarmonicSynth(SR, HOP, 10, scale_fn=False).get_controls(
        torch.ones(1, T, 1), torch.ones(1, T, 10), f0)
    audio = dsp.HarmonicSynth(SR, HOP, 10, scale_fn=False).get_signal(controls)
    assert torch.all(audio == 0)


def test_harmonic_controls_normalise_and_mask():
    T, K = 10, 50
    f0 = torch.full((1, T, 1), 1000.0)
    c = dsp.HarmonicSynth(SR, HOP, K).get_controls(torch.zeros(1, T, 1), torch.zeros(1, T, K), f0)
    assert torch.allclose(c["harmonic_distribution"].sum(-1), torch.ones(1, T))
    assert torch.all(c["harmonic_distribution"][..., 7:] == 0)  # 8 kHz and above


def band_energies(audio, n_bands):
    _, psd = scipy.signal.welch(audio, nperseg=2 * (n_bands - 1))
    return psd


def test_filtered_noise_follows_band_shape():
    M, T = 65, 400
    k = np.arange(M)
    shape = 0.05 + np.exp(-((k - 15) / 5.0) ** 2) + 0.5 * np.exp(-((k - 45) / 4.0) ** 2)
    mags = torch.tensor(shape, dtype=torch.float32).expand(1, T, M).contiguous()
    gen = torch.Generator().manual_seed(7)
    audio = dsp.filtered_noise(mags, hop_length=HOP, generator=gen)[0].numpy()
    measured = band_energies(audio, M)
    corr = np.corrcoef(measured, shape ** 2)[0, 1]
    assert corr >= 0.9
    # the band shape really shapes the spectrum: a flat filter of the same mean does not match
    flat = dsp.filtered_noise(torch.full((1, T, M), float(shape.mean())), hop_length=HOP,
                              generator=torch.Generator().manual_seed(7))[0].numpy()
    assert np.corrcoef(band_energies(flat, M), shape ** 2)[0, 1] < 0.5


def test_filtered_noise_changes_over_time():
    M, T = 65, 200
    mags = torch.zeros(1, T, M)
    mags[:, :100, :10] = 1.0  # low band first
    mags[:, 100:, 50:] = 1.0  # then high band
    audio = dsp.filtered_noise(mags, hop_length=HOP, generator=torch.Generator().manual_seed(1))
    first, second = audio[0, : 90 * HOP].numpy(), audio[0, 110 * HOP:].numpy()
    f, p1 = scipy.signal.welch(first, fs=SR, nperseg=256)
    _, p2 = scipy.signal.welch(second, fs=SR, nperseg=256)
    assert (f * p1).sum() / p1.sum() < 2000 < (f * p2).sum() / p2.sum()


def test_noise_is_seeded():
    mags = torch.ones(1, 20, 9)
    a = dsp.filtered_noise(mags, hop_length=HOP, generator=torch.Generator().manual_seed(3))
    b = dsp.filtered_noise(mags, hop_length=HOP, generator=torch.Generator().manual_seed(3))
    c = dsp.filtered_noise(mags, hop_length=HOP, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def level_db(x, win=800):
    frames = x[: len(x) // win * win].reshape(-1, win)
    return 10 * np.log10((frames ** 2).mean(axis=1))


def test_equal_power_crossfade_has_no_dip_for_uncorrelated_signals(rng):
    a, b = rng.standard_normal((2, 3 * SR)) * 0.1
    joined = dsp.crossfade(a, b, SR, kind="equal_power")
    db = level_db(joined)
    assert np.min(db) > np.median(db) - 1.0
    # the linear fade, right for correlated signals, dips ~3 dB here: the measure can fail
    lin = level_db(dsp.crossfade(a, b, SR, kind="linear"))
    assert np.min(lin) < np.median(lin) - 2.0


def test_linear_crossfade_keeps_a_correlated_signal_unchanged():
    tone = np.sin(2 * np.pi * 220 * np.arange(SR) / SR)
    joined = dsp.crossfade(tone[:9000], tone[8000:], 1000, kind="linear")
    assert np.allclose(joined, tone, atol=1e-6)


def test_crossfade_torch_and_errors():
    a, b = torch.ones(100), torch.zeros(100)
    out = dsp.crossfade(a, b, 10)
    assert isinstance(out, torch.Tensor) and out.shape == (190,)
    with pytest.raises(EnsembleError, match="longer than an input"):
        dsp.crossfade(a, b, 101)
    with pytest.raises(EnsembleError, match="kind"):
        dsp.crossfade(a, b, 10, kind="cubic")


def test_soft_limiter_keeps_peaks_below_0_dbfs(rng):
    x = rng.standard_normal(SR) * 2.0  # heavily over full scale
    y = dsp.soft_limit(x)
    assert 20 * np.log10(np.max(np.abs(y))) <= -0.3 + 1e-9
    quiet = x * 0.1
    small = np.abs(quiet) < 10 ** (-6 / 20)
    assert np.array_equal(dsp.soft_limit(quiet)[small], quiet[small])  # transparent below threshold
    t = torch.tensor(x)
    assert torch.max(torch.abs(dsp.soft_limit(t))) < 1.0


def test_shapes_are_checked():
    with pytest.raises(EnsembleError, match=r"\[B, T, 1\]"):
        dsp.harmonic_synthesis(torch.zeros(1, 10), torch.zeros(1, 10, 5), sample_rate=SR,
                               hop_length=HOP)


def test_exp_sigmoid_range():
    y = dsp.exp_sigmoid(torch.linspace(-20, 20, 100))
    assert y.min() > 0 and y.max() <= 2.0 + 1e-6
    assert math.isclose(float(dsp.exp_sigmoid(torch.tensor(0.0))), 2 * 0.5 ** math.log(10) + 1e-7,
                        rel_tol=1e-5)
