"""Continuity across the seam: notes a second and register of the continuation's first seconds
against the input's last (ensemble.conform.note_profile / continuity_cost), and extend keeping, of
a pool, the K candidates that go on playing as the input does."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ensemble.audio import load_audio
from ensemble.conform import (
    ContinuityConfig,
    active_chroma,
    chroma_template,
    continuity_cost,
    expected_chroma,
    key_correlation,
    key_reference,
    note_profile,
    opening_sound_db,
    pitch_class_profile,
)
from ensemble.errors import EnsembleError

FPS = 100.0
ROOT = Path(__file__).resolve().parents[1]


def _f0(midi: np.ndarray) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, np.float64) - 69.0) / 12.0)


def test_notes_a_second_of_a_scale_with_vibrato_and_of_repeated_notes():
    t = np.arange(300) / FPS
    # 3 s: six 0.5 s notes of a scale, each with a violin's vibrato (+-0.5 semitone at 6 Hz)
    scale = np.repeat([60, 62, 64, 65, 67, 69], 50) + 0.5 * np.sin(2 * np.pi * 6 * t)
    rate, register = note_profile(_f0(scale), np.ones(300, bool), fps=FPS)
    assert rate == pytest.approx(2.0) and register == pytest.approx(64.5, abs=0.05)
    # one pitch struck three times (unvoiced gaps between): 3 notes in 3 s
    voiced = np.ones(300, bool)
    voiced[100:103] = voiced[200:203] = False
    assert note_profile(_f0(np.full(300, 72.0)), voiced, fps=FPS) == pytest.approx((1.0, 72.0))
    # a pitch tracker's 2-frame glitch at each onset (an octave up) starts no note of its own
    glitchy = np.repeat([60.0, 64.0, 67.0], 100)
    glitchy[[100, 101, 200, 201]] = 79.0
    assert note_profile(_f0(glitchy), np.ones(300, bool), fps=FPS)[0] == pytest.approx(1.0)
    # nothing voiced
    rate, register = note_profile(_f0(scale), np.zeros(300, bool), fps=FPS)
    assert rate == 0.0 and np.isnan(register)


def test_the_cost_counts_doublings_of_the_note_rate_and_octaves_of_register():
    assert continuity_cost((4.0, 70.0), (4.0, 70.0)) == 0.0
    assert continuity_cost((1.5, 70.0), (3.5, 70.0)) == pytest.approx(1.0)  # (1.5+.5) vs (3.5+.5): half
    assert continuity_cost((4.0, 58.0), (4.0, 70.0)) == pytest.approx(1.0)  # an octave down
    assert continuity_cost((4.0, 64.0), (4.0, 70.0), ContinuityConfig(register_octave_cost=2.0)) == \
        pytest.approx(1.0)
    assert continuity_cost((3.5, float("nan")), (1.5, 70.0)) == pytest.approx(1.0)  # no register: rate only


@pytest.mark.parametrize("field, value", [("pool", 0), ("max_pool", 101), ("window_seconds", 0.1),
                                          ("min_note_frames", 0), ("new_note_semitones", 7.0),
                                          ("register_octave_cost", -1.0), ("sound_cost_per_db", 11.0),
                                          ("sound_band_hz", (1000.0, 1500.0)), ("key_cost", -0.5)])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(EnsembleError, match=re.escape(f"continuity {field} = {value}; allowed")):
        ContinuityConfig(**{field: value})


def _scale_controls(tonic_midi: int, *, vibrato_cents: float = 30.0, frames_per_note: int = 25):
    """A major scale's seven notes from ``tonic_midi``, each held ``frames_per_note`` frames with a
    +-``vibrato_cents`` 5 Hz vibrato, then a frame of silence; loudness -20 dB."""
    steps = [0, 2, 4, 5, 7, 9, 11]
    t = np.arange(frames_per_note) / FPS
    f0, voiced = [], []
    for s in steps:
        cents = 100.0 * (tonic_midi + s - 69) + vibrato_cents * np.sin(2 * np.pi * 5.0 * t)
        f0 += [*(440.0 * 2.0 ** (cents / 1200.0)), 0.0]
        voiced += [True] * frames_per_note + [False]
    return np.array(f0), np.array(voiced), np.full(len(f0), -20.0)


def test_pitch_classes_of_a_scale_with_vibrato_and_of_quiet_or_unvoiced_frames():
    """C major from C4 with +-30 cents of vibrato: 25 frames on each of its seven pitch classes and none
    elsewhere; frames more than 40 dB below the loudest and unvoiced ones do not count."""
    f0, voiced, loud = _scale_controls(60)
    prof = pitch_class_profile(f0, voiced, loud)
    assert prof.tolist() == [25, 0, 25, 0, 25, 25, 0, 25, 0, 25, 0, 25]
    quiet = loud.copy()
    quiet[:26] = -61.0  # the C 41 dB below the rest
    assert pitch_class_profile(f0, voiced, quiet)[0] == 0 and pitch_class_profile(f0, voiced, quiet).sum() == 150
    assert pitch_class_profile(f0, np.zeros_like(voiced), loud).sum() == 0


def test_key_correlation_of_near_and_far_keys():
    """Equal time on each scale degree: r = (12 m - 49) / 35 for m shared pitch classes -- the same
    key 1, the key a fifth up (G major, 6 shared) 23/35, the farthest (F# major, 2 shared) -25/35;
    a flat profile (nothing voiced) is undefined, and the cost then adds nothing."""
    c = pitch_class_profile(*_scale_controls(60))
    assert key_correlation(c, pitch_class_profile(*_scale_controls(72))) == pytest.approx(1.0)
    assert key_correlation(c, pitch_class_profile(*_scale_controls(67))) == pytest.approx(23 / 35)
    assert key_correlation(c, pitch_class_profile(*_scale_controls(66))) == pytest.approx(-25 / 35)
    assert np.isnan(key_correlation(c, np.zeros(12)))
    cfg = ContinuityConfig(key_cost=2.0)
    assert continuity_cost((4.0, 70.0), (4.0, 70.0), cfg, key_r=23 / 35) == pytest.approx(2.0 * 12 / 35)
    assert continuity_cost((4.0, 70.0), (4.0, 70.0), cfg, key_r=float("nan")) == 0.0
    assert continuity_cost((4.0, 70.0), (4.0, 70.0), ContinuityConfig(key_cost=0.0), key_r=-1.0) == 0.0


def test_an_instruments_chroma_of_one_note_is_read_from_its_playing_and_moved_to_each_note():
    """A tone with harmonics at 1/h amplitude, played as a C major scale through the project's
    chromagram: the template read from it peaks at the root, and the fifth (the 3rd and 6th
    harmonics, +1902 cents) stands above every pitch class but the root's neighbours (the
    chromagram's own filters spread a steady C's energy ~0.15 onto B and C#). The scale's expected
    chroma from its notes alone correlates with its own measured chroma at >= 0.95, and G major's
    (the same notes a fifth up) less."""
    from ensemble.features import FeatureConfig, chroma

    cfg = FeatureConfig()
    f0, voiced, loud = _scale_controls(60, vibrato_cents=0.0, frames_per_note=150)
    hop, sr = cfg.hop_length, cfg.sample_rate
    f_s = np.repeat(f0, hop)
    phase = 2 * np.pi * np.cumsum(f_s) / sr
    x = sum(np.sin(h * phase) / h for h in range(1, 9)) * np.repeat(voiced, hop)
    c = chroma(x.astype(np.float32), config=cfg)[:, : len(f0)]
    t = chroma_template(c, f0, voiced, loud)
    assert int(np.argmax(t)) == 0 and t[0] == pytest.approx(1.0, abs=0.05)
    assert t[7] > 0.08 and t[7] > max(t[k] for k in range(12) if k not in (11, 0, 1, 7))
    measured = active_chroma(c[:, voiced], loud[voiced])
    prof = pitch_class_profile(f0, voiced, loud)
    assert key_correlation(expected_chroma(prof, t), measured) >= 0.95
    g = pitch_class_profile(*_scale_controls(67))
    assert key_correlation(expected_chroma(g, t), measured) < key_correlation(expected_chroma(prof, t), measured) - 0.2
    # a note's template moved to its pitch class, exactly
    assert np.allclose(expected_chroma(np.eye(12)[5] * 3.0, t), np.roll(t, 5))
    assert chroma_template(c, f0, np.zeros_like(voiced), loud) is None


def _boost(x: np.ndarray, above_hz: float, gain_db: float, sr: int = 16000) -> np.ndarray:
    """``x`` with every component at or above ``above_hz`` raised by ``gain_db`` (an exact shelf)."""
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1.0 / sr) >= above_hz] *= 10.0 ** (gain_db / 20.0)
    return np.fft.irfft(spec, len(x))


def test_the_opening_sound_distance_is_the_colour_difference_in_db_not_the_level():
    """Two draws of white noise: ~0 dB apart, whatever their level; a +12 dB shelf above 2 kHz on one
    differs on 11 of the 42 1/6-octave points of 60-7000 Hz: RMS 12 x sqrt(p(1-p)) = 5.3 dB after the
    mean is removed, and a +6 dB shelf half that; a silent side has no colour (NaN)."""
    sr, rng = 16000, np.random.default_rng(0)
    a, b = 0.1 * rng.standard_normal(3 * sr), 0.1 * rng.standard_normal(3 * sr)
    same = opening_sound_db(a, b, sample_rate=sr)
    assert same < 0.6
    assert opening_sound_db(0.25 * a, b, sample_rate=sr) == pytest.approx(same, abs=0.01)  # -12 dB level
    shelf12 = opening_sound_db(_boost(a, 2000.0, 12.0), b, sample_rate=sr)
    shelf6 = opening_sound_db(_boost(a, 2000.0, 6.0), b, sample_rate=sr)
    assert shelf12 == pytest.approx(5.3, abs=0.6) and shelf6 == pytest.approx(2.65, abs=0.5)
    assert np.isnan(opening_sound_db(np.zeros(3 * sr), b, sample_rate=sr))
    # the cost adds sound_cost_per_db per dB; NaN or None adds nothing
    cfg = ContinuityConfig(sound_cost_per_db=0.5)
    assert continuity_cost((4.0, 70.0), (4.0, 70.0), cfg, sound_db=4.0) == pytest.approx(2.0)
    assert continuity_cost((4.0, 70.0), (4.0, 70.0), cfg, sound_db=float("nan")) == 0.0


@pytest.fixture(scope="module")
def engine():
    from ensemble.engine import Engine, EngineConfig

    return Engine.load(EngineConfig(checkpoints_dir=str(ROOT / "checkpoints"),
                                    database_dir=str(ROOT / "assets" / "rag"),
                                    drums_dir=str(ROOT / "assets" / "drums")))


def test_extend_keeps_the_k_of_the_pool_that_continue_the_playing(engine):
    """K = 2 of a pool of 10 proposed by the composite: the kept ones have the lowest continuity cost
    of the pool (notes, register, the sound of their rendered openings and the key of their notes), in
    ascending order, each records its pool rank, profile (the input's too), opening's sound distance and
    key correlation, the ranks shown
    are 1..2; continuity=False returns the composite's own Top-3."""
    from ensemble.extend import ExtendRequest, extend

    clip = load_audio(sorted((ROOT / "assets" / "examples").glob("*.wav"))[0]).audio[: 8 * 16000]
    base = extend(engine, clip, ExtendRequest(seconds=12.0, k=10, followers=("Drums",), continuity=False))
    kept = extend(engine, clip, ExtendRequest(seconds=12.0, k=2, followers=("Drums",)))
    assert [c.rank for c in base.candidates] == list(range(1, 11))
    assert all(k.pool_rank is None for k in base.continuations)
    pool = {c.chunk: c.rank for c in base.candidates}
    costs = [k.continuity_cost for k in kept.continuations]
    assert [c.rank for c in kept.candidates] == [1, 2] and costs == sorted(costs)
    for c, k in zip(kept.candidates, kept.continuations, strict=True):
        assert pool[c.chunk] == k.pool_rank  # the same candidate the composite ranked there
        assert k.opening_sound_db is not None and 0.0 <= k.opening_sound_db < 30.0  # the openings were heard
        assert k.key_correlation is not None and -1.0 <= k.key_correlation <= 1.0
        want = continuity_cost((k.notes_per_second, k.register_midi),
                               (k.input_notes_per_second, k.input_register_midi), sound_db=k.opening_sound_db,
                               key_r=k.key_correlation)
        assert k.continuity_cost == pytest.approx(want, abs=1e-3)
    # every pool member left out costs at least as much as the dearest kept one: its opening heard
    # the same way (rendered in the round's timbre against the input's own last seconds)
    from ensemble.extend import _opening_sounds

    X = -(-kept.crossfade // engine.config.features.hop_length)
    w = int(3.0 * FPS)
    inp = (kept.continuations[0].input_notes_per_second, kept.continuations[0].input_register_midi)
    a = engine.performer.plan_input(clip, seed=0).analysis.features
    end = (len(clip) - kept.crossfade) // engine.config.features.hop_length
    sounds = _opening_sounds(engine, base.continuations, (a.f0_hz, a.voiced, a.loudness_db), end, X,
                             kept.timbre, 0, engine.config.continuity)
    key = key_reference(a.f0_hz[:end], a.voiced[:end], a.loudness_db[:end], a.chroma[:, :end])
    keys = [key.correlation(k.f0_hz[X:], k.voiced[X:], k.loudness_db[X:]) for k in base.continuations]
    kept_chunks = {x.chunk for x in kept.candidates}
    for c, k, sound, key_r in zip(base.candidates, base.continuations, sounds, keys, strict=True):
        if c.chunk in kept_chunks:
            mine = next(y for x, y in zip(kept.candidates, kept.continuations, strict=True) if x.chunk == c.chunk)
            assert sound == pytest.approx(mine.opening_sound_db, abs=0.01)
            assert key_r == pytest.approx(mine.key_correlation, abs=1e-3)
        elif not c.fallback:  # retrieval's fallback pass comes after every strict candidate
            cost = continuity_cost(note_profile(k.f0_hz[X:X + w], k.voiced[X:X + w], fps=FPS), inp, sound_db=sound,
                                   key_r=key_r)
            assert cost >= max(costs) - 0.05
    # the pool's cheapest candidate, were it from the fallback pass, gives way to the strict ones
    from dataclasses import replace

    from ensemble.extend import _by_continuity

    best = min(range(len(base.candidates)), key=lambda i: continuity_cost(note_profile(
        base.continuations[i].f0_hz[X:X + w], base.continuations[i].voiced[X:X + w], fps=FPS), inp,
        sound_db=sounds[i], key_r=keys[i]))
    marked = [replace(c, fallback=i == best) for i, c in enumerate(base.candidates)]
    args = (a, end, X, 2, FPS, engine.config.continuity)
    chunks = [c.chunk for c in _by_continuity(marked, base.continuations, *args, sounds)[0]]
    assert base.candidates[best].chunk not in chunks and len(chunks) == 2
    unmarked = [replace(c, fallback=False) for c in base.candidates]
    assert _by_continuity(unmarked, base.continuations, *args, sounds)[0][0].chunk == base.candidates[best].chunk
    assert kept.performances[0].info["conform"]["continuity"]["pool_rank"] == kept.continuations[0].pool_rank
    plain = extend(engine, clip, ExtendRequest(seconds=12.0, k=3, followers=("Drums",), continuity=False))
    assert [c.chunk for c in plain.candidates] == [c.chunk for c in base.candidates[:3]]
