"""load_audio / save_wav: formats, integer widths, channels, rates, and every bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ensemble.audio import SILENCE_DBFS, load_audio, save_wav, to_float32
from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig, f0_yin
from tests.conftest import SR, sine_from_f0


def tone(seconds=1.0, f=440.0, sr=SR, amplitude=0.5):
    return sine_from_f0(np.full(int(seconds * sr), f), sr=sr, amplitude=amplitude)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "FLOAT"),
                                         ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", None),
                                         ("WAV", "PCM_U8")])
def test_reads_common_formats(tmp_path, fmt, subtype):
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, tone(), SR, format=fmt, subtype=subtype)
    clip = load_audio(path)
    assert clip.audio.dtype == np.float32 and clip.sample_rate == SR
    assert abs(clip.seconds - 1.0) < 0.1
    level = np.sqrt(np.mean(clip.audio[2000:-2000] ** 2)) * np.sqrt(2)
    assert 20 * np.log10(level / 0.5) == pytest.approx(0.0, abs=0.5)  # level kept within 0.5 dB


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.float64])
def test_integer_widths_are_scaled(dtype):
    x = tone(amplitude=0.5)
    if np.dtype(dtype).kind == "i":
        arr = np.round(x * (2.0 ** (8 * np.dtype(dtype).itemsize - 1))).astype(dtype)
    elif np.dtype(dtype).kind == "u":
        arr = np.round((x + 1.0) * 128).clip(0, 255).astype(dtype)
    else:
        arr = x.astype(dtype)
    clip = load_audio((SR, arr))
    assert np.max(np.abs(clip.audio)) == pytest.approx(0.5, abs=0.01)


def test_stereo_is_downmixed_both_layouts():
    left, right = tone(f=440.0), tone(f=440.0, amplitude=0.25)
    for arr in (np.stack([left, right], axis=1), np.stack([left, right], axis=0)):
        clip = load_audio((SR, arr))
        assert clip.source_channels == 2
        assert np.max(np.abs(clip.audio)) == pytest.approx(0.375, abs=0.01)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 11025])
def test_odd_rates_are_resampled_keeping_pitch(rate):
    clip = load_audio((rate, tone(seconds=1.0, f=440.0, sr=rate)))
    assert clip.sample_rate == SR and clip.source_sample_rate == rate
    assert abs(len(clip.audio) - SR) <= 2
    f0, voiced = f0_yin(clip.audio, config=FeatureConfig())
    assert np.median(np.abs(1200 * np.log2(f0[voiced] / 440.0))) < 5.0


def test_silence_is_flagged_or_refused():
    clip = load_audio((SR, np.zeros(SR, np.float32)))
    assert clip.silent
    assert not load_audio((SR, tone())).silent
    with pytest.raises(EnsembleError, match="silent"):
        load_audio((SR, np.full(SR, 10 ** ((SILENCE_DBFS - 5) / 20), np.float32)), allow_silent=False)


def test_missing_file(tmp_path):
    with pytest.raises(EnsembleError, match="does not exist"):
        load_audio(tmp_path / "nope.wav")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(EnsembleError, match="empty"):
        load_audio(path)


def test_text_file_is_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are not samples\n" * 100)
    with pytest.raises(EnsembleError, match="not a readable audio file"):
        load_audio(path)


def test_zero_length_audio(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, np.float32), SR)
    with pytest.raises(EnsembleError, match="zero length"):
        load_audio(path)
    with pytest.raises(EnsembleError, match="zero length"):
        load_audio((SR, np.zeros(0, np.int16)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = tone()
    x[100] = bad
    with pytest.raises(EnsembleError, match="NaN or Inf"):
        load_audio((SR, x))
    path = tmp_path / "nan.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    with pytest.raises(EnsembleError, match="NaN or Inf"):
        load_audio(path)


def test_too_long_and_too_short(tmp_path):
    with pytest.raises(EnsembleError, match="at most 2 s"):
        load_audio((SR, tone(seconds=3.0)), max_seconds=2.0)
    path = tmp_path / "long.flac"
    sf.write(path, tone(seconds=3.0), SR)
    with pytest.raises(EnsembleError, match="at most 2 s"):
        load_audio(path, max_seconds=2.0)
    with pytest.raises(EnsembleError, match="at least 2 s"):
        load_audio((SR, tone(seconds=1.0)), min_seconds=2.0)


@pytest.mark.parametrize("source", [None, 123, (SR,), (0, np.zeros(10)), (SR, np.zeros((3, 3, 3))),
                                    (SR, np.zeros(10, dtype=complex)), (SR, np.zeros(10, bool)),
                                    (True, np.zeros(10))])
def test_bad_sources(source):
    with pytest.raises(EnsembleError):
        load_audio(source)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=4096), suffix=st.sampled_from([".wav", ".flac", ".mp3",
                                                                            ".ogg", ".bin"]))
def test_random_bytes_raise_ensemble_error(tmp_path, data, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    with pytest.raises(EnsembleError):
        load_audio(path)


def test_save_wav_is_pcm16_and_round_trips(tmp_path):
    x = tone(amplitude=0.5)
    path = save_wav(tmp_path / "out" / "clip.wav", x)
    info = sf.info(path)
    assert info.subtype == "PCM_16" and info.samplerate == SR
    back = load_audio(path).audio
    assert np.max(np.abs(back - x)) < 2.0 / 32768
    assert [p.name for p in path.parent.iterdir()] == ["clip.wav"]  # no temp files left


def test_save_wav_refuses_nan_and_writes_nothing(tmp_path):
    x = tone()
    x[5] = np.nan
    with pytest.raises(EnsembleError, match="NaN"):
        save_wav(tmp_path / "bad.wav", x)
    assert list(tmp_path.iterdir()) == []


def test_to_float32_uint8_centre():
    assert to_float32(np.array([128], np.uint8))[0] == 0.0


# ------------------------------------------------------------------------------------------ originals


def test_keep_original_round_trips_a_44k_stereo_24bit_file_sample_exactly(tmp_path):
    rate, n = 44100, 44100 * 2 + 17
    t = np.arange(n) / rate
    left = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    right = 0.25 * np.sin(2 * np.pi * 660.0 * t + 0.3)  # the channels differ
    stereo = np.stack([left, right], axis=1)
    path = tmp_path / "take.wav"
    sf.write(path, stereo, rate, subtype="PCM_24")
    clip = load_audio(path, keep_original=True)
    assert clip.original.shape == (n, 2) and clip.original.dtype == np.float32
    assert (clip.source_sample_rate, clip.source_channels, clip.source_subtype) == (rate, 2, "PCM_24")
    assert np.max(np.abs(clip.original - stereo)) <= 1.0 / 2 ** 23  # 24-bit quantisation
    assert clip.output_subtype == "PCM_24"
    # written back at its own rate, channels and bit depth: the same samples exactly
    back = save_wav(tmp_path / "back.wav", clip.original, rate, subtype="PCM_24")
    info = sf.info(back)
    assert (info.samplerate, info.channels, info.subtype) == (rate, 2, "PCM_24")
    data, _ = sf.read(back, dtype="float32")
    assert np.array_equal(data, clip.original)
    # the 16 kHz mono analysis copy is unchanged by keep_original
    assert np.array_equal(load_audio(path).audio, clip.audio) and load_audio(path).original is None


def test_keep_original_of_arrays_keeps_channels_in_either_layout_and_clips():
    left, right = tone(f=440.0), tone(f=550.0, amplitude=0.25)
    left[10] = 1.5  # over full scale: clipped like the mono copy
    for arr in (np.stack([left, right], axis=1), np.stack([left, right], axis=0)):
        clip = load_audio((SR, arr), keep_original=True)
        assert clip.original.shape == (len(left), 2)
        assert clip.original[10, 0] == 1.0
        assert np.array_equal(clip.original[:, 1], right)
    pcm = np.round(tone() * 32767).astype(np.int16)
    clip = load_audio((SR, pcm), keep_original=True)
    assert clip.original.shape == (len(pcm), 1) and clip.source_subtype == "PCM_16"
    assert clip.output_subtype == "PCM_16"


def test_keep_original_applies_the_same_checks(tmp_path):
    x = np.stack([tone(), tone()], axis=1)
    x[100, 1] = np.nan  # one channel only
    with pytest.raises(EnsembleError, match="NaN or Inf"):
        load_audio((SR, x), keep_original=True)
    with pytest.raises(EnsembleError, match="at most 2 s"):
        load_audio((SR, tone(seconds=3.0)), max_seconds=2.0, keep_original=True)


@pytest.mark.parametrize("rate, channels, subtype", [(44100, 2, "PCM_24"), (48000, 1, "PCM_16"),
                                                     (22050, 3, "FLOAT")])
def test_save_wav_any_rate_channels_and_subtype(tmp_path, rate, channels, subtype):
    x = np.stack([tone(f=300.0 * (c + 1), sr=rate, amplitude=0.4) for c in range(channels)], axis=1)
    path = save_wav(tmp_path / "x.wav", x, rate, subtype=subtype)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (rate, channels, subtype)
    back, _ = sf.read(path, dtype="float32", always_2d=True)
    step = {"PCM_16": 1 / 2 ** 15, "PCM_24": 1 / 2 ** 23, "FLOAT": 1e-7}[subtype]
    assert np.max(np.abs(back - x)) <= step


@pytest.mark.parametrize("kwargs, reason", [({"subtype": "PCM_8"}, "WAV subtype 'PCM_8' is not supported"),
                                            ({"sample_rate": 500}, "outside the allowed")])
def test_save_wav_bad_settings_write_nothing(tmp_path, kwargs, reason):
    with pytest.raises(EnsembleError, match=reason):
        save_wav(tmp_path / "bad.wav", tone(), **kwargs)
    with pytest.raises(EnsembleError, match="at most 32 channels"):
        save_wav(tmp_path / "bad.wav", np.zeros((2, 1000), np.float32))
    assert list(tmp_path.iterdir()) == []
