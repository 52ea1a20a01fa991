"""The user's timbre: inferred from the upload by re-synthesis, named by the user, recorded.

Uses the shipped timbre decoder (``checkpoints/decoder_Leader.pt``) and melodies rendered through the
corpus's SoundFont by programs the decoder learned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ensemble.engine import Engine, EngineConfig
from ensemble.errors import EnsembleError
from ensemble.extend import ExtendRequest, extend
from ensemble.features import FeatureConfig, analyze
from ensemble.timbre import AUTO, GUITAR, TimbreConfig, check_timbre, choose_timbre

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
FC = FeatureConfig()


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load(EngineConfig(checkpoints_dir=str(ROOT / "checkpoints")))


def _melody(program: int, seconds: float = 8.0) -> np.ndarray:
    """A stepwise tune around A4 played by a GM program through the corpus's SoundFont, at -20 dBFS RMS."""
    from ensemble.jobs.corpus.build import default_soundfont, render_notes
    from ensemble.jobs.corpus.layout import NoteList

    pitches = [69, 71, 72, 74, 76, 74, 72, 71, 69, 67, 69, 72, 71, 69, 67, 69]
    beat = seconds / len(pitches)
    notes = NoteList.from_rows([(0.05 + i * beat, 0.05 + (i + 0.9) * beat, p, 90) for i, p in enumerate(pitches)])
    y = render_notes(notes, program=program, is_drum=False, n_samples=int(seconds * SR),
                     soundfont=default_soundfont(), sample_rate=SR)
    return (y * 0.1 / np.sqrt(np.mean(y ** 2))).astype(np.float32)


def _choose(engine: Engine, audio: np.ndarray, requested: str = AUTO):
    f = analyze(audio, config=FC, f0_method="yin", with_chroma=False)
    return choose_timbre(engine.timbre_renderer, requested, audio=audio, f0_hz=f.f0_hz, voiced=f.voiced,
                         loudness_db=f.loudness_db, end_sample=len(audio), hop=FC.hop_length, sample_rate=SR)


def test_the_shipped_decoder_plays_at_least_eight_timbres(engine):
    assert len(engine.timbres) >= 8
    assert {"violin", "flute", "trumpet", "piano", "organ", "nylon guitar", "steel guitar"} <= set(engine.timbres)


@pytest.mark.parametrize("program, expected", [(73, "flute"), (56, "trumpet"), (24, "nylon guitar"),
                                               (40, "violin")])
def test_auto_hears_which_instrument_plays(engine, program, expected):
    """A melody played by a learned program is re-synthesised best in that program's timbre."""
    choice = _choose(engine, _melody(program))
    ranked = sorted(choice.distances, key=choice.distances.get)
    print(program, expected, [(n, round(choice.distances[n], 3)) for n in ranked[:3]])
    assert choice.chosen_by == "auto" and choice.name == expected
    assert set(choice.distances) == set(engine.timbres)


@pytest.mark.parametrize("dbfs", [-35.0, -8.0])
def test_the_recording_level_does_not_decide_the_timbre(engine, dbfs):
    """A violin recorded 15 dB quieter (or 12 dB louder) than the decoder's training renderings is still
    heard as the violin: the decoder hears the controls offset to its training level (measured: the
    quiet violin was taken for a flute before the offset)."""
    audio = (_melody(40) * 10 ** ((dbfs + 20.0) / 20)).astype(np.float32)
    choice = _choose(engine, audio)
    assert choice.name == "violin"
    assert choice.level_offset_db == pytest.approx(TimbreConfig().render_level_dbfs - dbfs, abs=0.1)
    assert choice.summary()["level_offset_db"] == pytest.approx(choice.level_offset_db, abs=0.01)


def test_unpitched_input_gets_the_default_timbre_and_says_why(engine, rng):
    noise = (0.05 * rng.standard_normal(6 * SR)).astype(np.float32)
    choice = _choose(engine, noise)
    assert choice.chosen_by == "default" and choice.name == TimbreConfig().default
    assert "pitched playing" in choice.note and choice.distances == {}


def test_the_user_can_name_the_timbre_or_the_guitar(engine):
    audio = _melody(73, seconds=4.0)
    assert _choose(engine, audio, "trumpet").name == "trumpet"
    assert _choose(engine, audio, "trumpet").chosen_by == "user"
    g = _choose(engine, audio, GUITAR)
    assert (g.name, g.index, g.chosen_by) == (GUITAR, None, "user")


def test_without_a_timbre_decoder_the_guitar_plays_and_says_so():
    audio = np.zeros(SR, np.float32)
    c = choose_timbre(None, AUTO, audio=audio, f0_hz=np.zeros(101), voiced=np.zeros(101, bool),
                      loudness_db=np.full(101, -80.0), end_sample=SR, hop=160, sample_rate=SR)
    assert c.name == GUITAR and c.chosen_by == "default" and "no timbre decoder" in c.note


def test_bad_timbre_names_the_field_the_value_and_what_is_allowed(engine):
    with pytest.raises(EnsembleError, match=r"timbre 'tuba'; allowed: auto, guitar, violin"):
        check_timbre("tuba", engine.timbres)
    assert check_timbre(" Flute ", engine.timbres) == "flute"
    with pytest.raises(EnsembleError, match="timbre 3"):
        check_timbre(3, engine.timbres)
    with pytest.raises(EnsembleError, match="timbre 'tuba'"):
        extend(engine, _melody(73, seconds=4.0), ExtendRequest(seconds=8.0, k=1, timbre="tuba"))


def test_extend_renders_in_the_named_timbre_and_records_it(engine):
    """A flute upload continued in the flute timbre sounds nearer the upload (mean-MFCC distance of the
    upload's last 3 s to the continuation's first 3 s, the rendered leader, colour match off so that
    only the timbre differs) than the same continuation in the trumpet timbre; results.json and
    perform.json name the timbre."""
    import librosa

    def mfcc(x):
        return librosa.feature.mfcc(y=x, sr=SR, n_mfcc=20)[1:20].mean(axis=1)

    audio = _melody(73, seconds=8.0)
    dist = {}
    for timbre in ("flute", "trumpet"):
        ext = extend(engine, audio, ExtendRequest(seconds=12.0, k=1, timbre=timbre, followers=("Drums",),
                                                  match_colour=False))
        assert ext.results()["timbre"]["name"] == timbre
        assert ext.results()["timbre"]["chosen_by"] == "user"
        assert ext.performances[0].info["conform"]["timbre"] == timbre
        cont = ext.leaders[0][len(audio):len(audio) + 3 * SR]
        dist[timbre] = float(np.linalg.norm(mfcc(audio[-3 * SR:]) - mfcc(cont)))
    print("mean-MFCC distance across the seam:", dist)
    assert dist["flute"] < dist["trumpet"]
