"""The colour match (ensemble.colour): a fixed filter that moves a rendering's harmonic balance to a
recording's, measured in dB on known harmonic tones."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble.colour import ColourConfig, apply_filter, colour_match, long_term_spectrum
from ensemble.errors import EnsembleError

SR = 16000


def _tone(f0: float, amps_db: list[float], seconds: float = 4.0) -> np.ndarray:
    """A harmonic tone with harmonic k at amps_db[k-1] dB."""
    t = np.arange(int(seconds * SR)) / SR
    return sum(10 ** (a / 20) * np.sin(2 * np.pi * f0 * (k + 1) * t) for k, a in enumerate(amps_db)) \
        .astype(np.float32) * 0.1


def _harmonic_db(x: np.ndarray, f: float) -> float:
    spec = np.abs(np.fft.rfft(x[SR:3 * SR] * np.hanning(2 * SR)))
    freqs = np.fft.rfftfreq(2 * SR, 1 / SR)
    return 20 * np.log10(spec[np.argmin(np.abs(freqs - f))])


def test_the_filter_gives_a_rendering_the_recording_s_harmonic_balance():
    # the "recording" (a violin-like balance): fundamental loudest; the "resynthesis" (the decoder's
    # guitar): third harmonic 5 dB above the fundamental, as measured on the shipped decoder
    recording = _tone(200.0, [0, -6, -12, -18])
    resynth = _tone(200.0, [-5, -8, 0, -10])
    before = _harmonic_db(resynth, 600) - _harmonic_db(resynth, 200)
    m = colour_match(recording, resynth, sample_rate=SR)
    assert m.applied
    # a different melody in the same register, rendered the same way
    other = _tone(220.0, [-5, -8, 0, -10])
    out = apply_filter(other, m)
    after = _harmonic_db(out, 660) - _harmonic_db(out, 220)
    target = -12.0  # the recording's 3rd-vs-1st balance
    assert before == pytest.approx(5.0, abs=0.5)
    assert abs(after - target) < abs(before - target) - 8.0  # most of the 17 dB difference removed
    assert out.shape == other.shape and out.dtype == np.float32


def test_identical_colours_give_a_flat_filter_and_alignment_is_kept():
    x = _tone(300.0, [0, -3, -6])
    m = colour_match(x, x, sample_rate=SR)
    assert np.max(np.abs(m.gain_db)) < 0.01
    y = apply_filter(x, m)
    assert np.max(np.abs(y - x)) < 1e-3 * np.max(np.abs(x)) * 10  # linear phase, delay compensated


def test_the_gain_is_clipped_and_silence_gives_the_identity():
    cfg = ColourConfig(max_gain_db=6.0)
    m = colour_match(_tone(200.0, [0, -40]), _tone(200.0, [-40, 0]), sample_rate=SR, config=cfg)
    assert m.gain_db.max() <= 6.0 + 1e-9 and m.gain_db.min() >= -6.0 - 1e-9
    silent = np.zeros(SR * 2, np.float32)
    m = colour_match(silent, _tone(200.0, [0]), sample_rate=SR)
    assert not m.applied
    x = _tone(200.0, [0])
    assert np.array_equal(apply_filter(x, m), x)


def test_long_term_spectrum_peaks_at_the_tone():
    freqs, db, n = long_term_spectrum(_tone(500.0, [0]), sample_rate=SR)
    assert n > 20 and abs(freqs[np.argmax(db)] - 500.0) < 40.0


@pytest.mark.parametrize("bad, match", [(np.zeros((2, 10)), "mono"), (np.array([np.nan, 0.0]), "finite")])
def test_bad_audio_names_the_problem(bad, match):
    with pytest.raises(EnsembleError, match=match):
        colour_match(bad, _tone(200.0, [0]), sample_rate=SR)


def test_bad_settings_name_the_field():
    with pytest.raises(EnsembleError, match="n_fft"):
        ColourConfig(n_fft=1000)
    with pytest.raises(EnsembleError, match="max_gain_db"):
        ColourConfig(max_gain_db=-1.0)
    with pytest.raises(EnsembleError, match="average = 'mean'.*'log', 'power'"):
        ColourConfig(average="mean")


def test_a_quiet_passage_counts_for_its_colour_in_the_log_average():
    # 2 s of a bright tone (3rd harmonic +10 dB) loud, then 2 s of a dark one (3rd harmonic -10 dB)
    # 20 dB quieter: both are playing (within 40 dB), so the colour is their middle (0 dB) in dB
    # terms; the power average hears only the loud half (+10 dB)
    bright, dark = _tone(200.0, [0, -60, 10], 2.0), _tone(200.0, [0, -60, -10], 2.0) * 0.1
    x = np.concatenate([bright, dark])

    def third_minus_first(y, cfg):  # dB, against a steady tone whose 3rd harmonic equals its 1st
        out = []
        for z in (y, _tone(200.0, [0, -60, 0], 4.0)):
            freqs, db, _ = long_term_spectrum(z, sample_rate=SR, config=cfg)
            out.append(float(np.interp(600.0, freqs, db) - np.interp(200.0, freqs, db)))
        return out[0] - out[1]

    assert abs(third_minus_first(x, ColourConfig(average="log")) - 0.0) < 1.0
    assert abs(third_minus_first(x, ColourConfig(average="power")) - 10.0) < 1.0
