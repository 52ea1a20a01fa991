"""Continuity across the seam: notes a second and register of the continuation's first seconds
against the input's last (ensemble.conform.note_profile / continuity_cost), and extend keeping, of
a pool, the K candidates that go on playing as the input does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ensemble.audio import load_audio
from ensemble.conform import ContinuityConfig, continuity_cost, note_profile
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
                                          ("register_octave_cost", -1.0)])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(EnsembleError, match=f"continuity {field} = {value}; allowed"):
        ContinuityConfig(**{field: value})


@pytest.fixture(scope="module")
def engine():
    from ensemble.engine import Engine, EngineConfig

    return Engine.load(EngineConfig(checkpoints_dir=str(ROOT / "checkpoints"),
                                    database_dir=str(ROOT / "assets" / "rag"),
                                    drums_dir=str(ROOT / "assets" / "drums")))


def test_extend_keeps_the_k_of_the_pool_that_continue_the_playing(engine):
    """K = 3 of a pool of 9 proposed by the composite: the kept ones have the lowest continuity cost
    of the pool, in ascending order, each records its pool rank and profile (the input's too), the
    ranks shown are 1..3; continuity=False returns the composite's own Top-3."""
    from ensemble.extend import ExtendRequest, extend

    clip = load_audio(sorted((ROOT / "assets" / "examples").glob("*.wav"))[0]).audio[: 8 * 16000]
    base = extend(engine, clip, ExtendRequest(seconds=12.0, k=9, followers=("Drums",), continuity=False))
    kept = extend(engine, clip, ExtendRequest(seconds=12.0, k=3, followers=("Drums",)))
    assert [c.rank for c in base.candidates] == list(range(1, 10))
    assert all(k.pool_rank is None for k in base.continuations)
    pool = {c.chunk: c.rank for c in base.candidates}
    costs = [k.continuity_cost for k in kept.continuations]
    assert [c.rank for c in kept.candidates] == [1, 2, 3] and costs == sorted(costs)
    for c, k in zip(kept.candidates, kept.continuations, strict=True):
        assert pool[c.chunk] == k.pool_rank  # the same candidate the composite ranked there
        want = continuity_cost((k.notes_per_second, k.register_midi),
                               (k.input_notes_per_second, k.input_register_midi))
        assert k.continuity_cost == pytest.approx(want, abs=1e-3)
    # every pool member left out costs at least as much as the dearest kept one
    X = -(-kept.crossfade // engine.config.features.hop_length)
    w = int(3.0 * FPS)
    inp = (kept.continuations[0].input_notes_per_second, kept.continuations[0].input_register_midi)
    for c, k in zip(base.candidates, base.continuations, strict=True):
        if c.chunk not in {x.chunk for x in kept.candidates}:
            cost = continuity_cost(note_profile(k.f0_hz[X:X + w], k.voiced[X:X + w], fps=FPS), inp)
            assert cost >= max(costs) - 1e-3
    assert kept.performances[0].info["conform"]["continuity"]["pool_rank"] == kept.continuations[0].pool_rank
    plain = extend(engine, clip, ExtendRequest(seconds=12.0, k=3, followers=("Drums",), continuity=False))
    assert [c.chunk for c in plain.candidates] == [c.chunk for c in base.candidates[:3]]
