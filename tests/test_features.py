"""Feature extraction against signals with known pitch and level."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble import features as fe
from ensemble.errors import EnsembleError
from ensemble.music import cents_between
from tests.conftest import SR, f0_at_frames, sine_from_f0


def median_cents_error(f0, voiced, truth_per_sample, hop):
    truth = f0_at_frames(truth_per_sample, len(f0), hop)
    assert voiced.sum() > 0.5 * len(f0) * 0.5, "too few voiced frames to judge"
    return float(np.median(np.abs(cents_between(f0[voiced], truth[voiced]))))


def _track(method, audio, config):
    if method == "pyin":
        f0, voiced, _ = fe.f0_pyin(audio, config=config)
    else:
        f0, voiced = fe.f0_yin(audio, config=config)
    return f0, voiced


@pytest.mark.parametrize("method", ["pyin", "yin"])
def test_steady_tone_within_10_cents(method, steady_tone, config):
    audio, f = steady_tone
    f0, voiced = _track(method, audio, config)
    assert voiced.mean() > 0.9
    assert median_cents_error(f0, voiced, f, config.hop_length) < 10.0


@pytest.mark.parametrize("method", ["pyin", "yin"])
def test_vibrato_tone_within_15_cents(method, vibrato_tone, config):
    audio, f = vibrato_tone
    f0, voiced = _track(method, audio, config)
    assert median_cents_error(f0, voiced, f, config.hop_length) < 15.0


@pytest.mark.parametrize("method", ["pyin", "yin"])
def test_silence_between_tones_is_unvoiced(method, tone_silence_tone, config):
    audio, _ = tone_silence_tone
    f0, voiced = _track(method, audio, config)
    times = fe.frame_times(len(f0), config)
    middle = (times > 1.1) & (times < 1.9)
    tones = ((times > 0.1) & (times < 0.9)) | ((times > 2.1) & (times < 2.9))
    assert not voiced[middle].any()
    assert np.all(f0[middle] == 0.0)
    assert voiced[tones].mean() > 0.95


def test_yin_agrees_with_pyin_on_a_melody(config):
    # a C-major scale, 0.25 s per note, as a plucked-ish decaying tone with harmonics
    notes = [60, 62, 64, 65, 67, 69, 71, 72]
    f = np.repeat([440.0 * 2 ** ((n - 69) / 12) for n in notes], SR // 4).astype(np.float64)
    env = np.tile(np.exp(-np.arange(SR // 4) / (0.15 * SR)), len(notes))
    audio = (sine_from_f0(f) + sine_from_f0(2 * f, amplitude=0.25)) * env
    f_p, v_p, _ = fe.f0_pyin(audio, config=config)
    f_y, v_y = fe.f0_yin(audio, config=config)
    both = v_p & v_y
    assert both.sum() > 0.7 * v_p.sum()
    agree = np.abs(cents_between(f_y[both], f_p[both])) < 50.0
    assert agree.mean() > 0.95


def test_noise_is_mostly_unvoiced_for_yin(rng, config):
    noise = (0.3 * rng.standard_normal(2 * SR)).astype(np.float32)
    _, voiced = fe.f0_yin(noise, config=config)
    assert voiced.mean() < 0.2


@pytest.mark.parametrize("n_samples", [1, 159, 160, 161, 1000, 16000, 16001, 33333])
def test_all_features_share_one_frame_count(n_samples, rng, config):
    audio = (0.1 * rng.standard_normal(n_samples)).astype(np.float32)
    feats = fe.analyze(audio, config=config)
    n = fe.n_frames(n_samples, config)
    assert n == 1 + n_samples // config.hop_length
    assert feats.f0_hz.shape == feats.voiced.shape == (n,)
    assert feats.loudness_db.shape == feats.rms.shape == feats.onset.shape == (n,)
    assert feats.chroma.shape == (12, n)


def test_frame_rate_default_is_100_per_second(config):
    assert config.frame_rate == 100.0


def test_loudness_tracks_level_in_db(config):
    f = np.full(SR, 1000.0)
    loud = fe.loudness_db(sine_from_f0(f, amplitude=1.0), config=config)
    quiet = fe.loudness_db(sine_from_f0(f, amplitude=0.5), config=config)
    mid = slice(10, -10)
    assert abs(np.median(loud[mid])) < 0.5  # full-scale 1 kHz reads 0 dB
    assert np.median(loud[mid] - quiet[mid]) == pytest.approx(20 * np.log10(2), abs=0.1)


def test_loudness_is_a_weighted(config):
    low = fe.loudness_db(sine_from_f0(np.full(SR, 100.0), amplitude=1.0), config=config)
    # A-weighting at 100 Hz is about -19 dB
    assert np.median(low[10:-10]) == pytest.approx(-19.1, abs=1.0)


def test_silence_loudness_is_the_floor(config):
    loud = fe.loudness_db(np.zeros(SR, np.float32), config=config)
    assert np.all(loud == config.loudness_floor_db)


def test_chroma_of_a_tone_peaks_on_its_pitch_class(config):
    a4 = sine_from_f0(np.full(SR, 440.0))
    c = fe.chroma(a4, config=config)
    assert np.argmax(c.mean(axis=1)) == 9  # A


def test_rms_of_a_sine_is_amplitude_over_root_two(config):
    r = fe.rms(sine_from_f0(np.full(SR, 500.0), amplitude=0.4), config=config)
    assert np.median(r) == pytest.approx(0.4 / np.sqrt(2), rel=0.01)


@pytest.mark.parametrize("bad", [np.zeros((2, 100)), np.array([]), np.array([0.0, np.nan])])
def test_bad_feature_input_raises(bad, config):
    with pytest.raises(EnsembleError):
        fe.analyze(bad, config=config)


def test_bad_config_raises():
    with pytest.raises(EnsembleError, match="fmax"):
        fe.FeatureConfig(fmax=9000.0)
    with pytest.raises(EnsembleError, match="frame_length"):
        fe.FeatureConfig(fmin=20.0)
