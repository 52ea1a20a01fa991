"""The held-out query set (:mod:`ensemble.jobs.heldout`) on a tiny build: 3 queries, 3 s + 2 s.

Checks what the continuation benchmark relies on: the files are what a user uploads (44.1 kHz,
stereo, 24-bit), their levels are what the manifest says, no reserved or training collection is
ever opened, no guitar program is used, and a seed gives the same bytes.
"""

from __future__ import annotations

import json
import math
import pathlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ensemble.errors import EnsembleError
from ensemble.jobs import heldout
from ensemble.jobs.corpus.build import music21_corpus_root

TINY = {"n_queries": 3, "seed": 5, "input_seconds": 3.0, "total_seconds": 5.0}
FORBIDDEN = (*heldout.RESERVED_COLLECTIONS, *heldout.TRAINING_COLLECTIONS)


def _touched(path) -> bool:
    parts = Path(path).parts
    return any(name in parts for name in FORBIDDEN)


@pytest.fixture(scope="module")
def spy_build(tmp_path_factory):
    """A tiny build with every parsed score and every read text file recorded."""
    mp = pytest.MonkeyPatch()
    seen: list[str] = []
    parse = heldout._parse_score
    read_text = pathlib.Path.read_text

    def spy_parse(ref):
        seen.append(ref.path)
        return parse(ref)

    def spy_read_text(self, *args, **kwargs):
        seen.append(str(self))
        return read_text(self, *args, **kwargs)

    mp.setattr(heldout, "_parse_score", spy_parse)
    mp.setattr(pathlib.Path, "read_text", spy_read_text)
    try:
        qs = heldout.build_queries(tmp_path_factory.mktemp("hq") / "set", **TINY, command="pytest")
    finally:
        mp.undo()
    return qs, seen


@pytest.fixture(scope="module")
def built(spy_build):
    return spy_build[0]


def _reference_level(audio: np.ndarray, sr: int) -> tuple[float, float]:
    """Plain NumPy restatement of the manifest's level definition (50 ms frames, 40 dB range)."""
    n = int(round(0.05 * sr))
    f = len(audio) // n
    power = np.array([np.mean(audio[i * n:(i + 1) * n] ** 2) for i in range(f)])
    db = 10 * np.log10(np.maximum(power, 1e-30))
    active = (db >= db.max() - 40.0) & (db > -80.0)
    return 10 * math.log10(power[active].mean()), 20 * math.log10(np.abs(audio).max())


def test_every_file_is_a_44k_stereo_24bit_wav_of_the_right_length(built):
    assert len(built.queries) == TINY["n_queries"]
    for q in built.queries:
        for which, seconds in (("input", TINY["input_seconds"]), ("full", TINY["total_seconds"])):
            info = sf.info(built.path(q, which))
            assert (info.samplerate, info.channels, info.subtype, info.format) == (44100, 2, "PCM_24", "WAV")
            assert info.frames == int(round(seconds * 44100))
        assert q["input"] == f"{q['id']}_{q['program']}_{q['source']['collection']}.wav"
        assert q["full"] == q["input"].removesuffix(".wav") + "_full.wav"


def test_the_input_is_the_start_of_the_full_file(built):
    q = built.queries[0]
    inp, _ = sf.read(built.path(q, "input"), dtype="int32")
    full, _ = sf.read(built.path(q, "full"), dtype="int32")
    np.testing.assert_array_equal(inp, full[:len(inp)])


def test_levels_and_peaks_are_what_the_manifest_says(built):
    lo, hi = built.manifest["config"]["levels_dbfs"]
    for q in built.queries:
        for which, rms_key, peak_key in (("full", "rms_dbfs", "peak_dbfs"),
                                         ("input", "input_rms_dbfs", "input_peak_dbfs")):
            audio, sr = sf.read(built.path(q, which), dtype="float64")
            rms_db, peak_db = _reference_level(audio, sr)
            assert abs(rms_db - q[rms_key]) < 0.5, (q["id"], which, rms_db, q[rms_key])
            assert abs(peak_db - q[peak_key]) < 0.05
            assert peak_db < -0.1
        assert abs(q["rms_dbfs"] - q["target_rms_dbfs"]) < 0.5
        assert lo - 0.5 <= q["rms_dbfs"] <= hi + 0.5
        left, right = sf.read(built.path(q, "full"))[0].T
        assert np.any(np.abs(left - right) > 1e-4), "the two channels should differ (panned)"


def test_levels_are_spread_over_the_range(built):
    targets = sorted(q["target_rms_dbfs"] for q in built.queries)
    np.testing.assert_allclose(targets, np.linspace(-35.0, -6.0, len(targets)), atol=0.01)


def test_reserved_and_training_collections_are_never_touched(spy_build):
    qs, seen = spy_build
    assert seen, "the spy saw no file: the test would pass vacuously"
    root = music21_corpus_root().resolve()
    for path in seen:
        p = Path(path).resolve()
        assert not (p.is_relative_to(root) and _touched(p.relative_to(root))), path
    allowed = tuple(heldout.SOURCES)
    for q in qs.queries:
        src = q["source"]["path"]
        assert src.split("/")[0] in allowed and not _touched(src), src
    for entry in qs.manifest["skipped"]:
        assert not _touched(entry["source"])
    text = json.dumps(qs.manifest)
    assert "oneills1850/" not in text and "ryansMammoth/" not in text


@pytest.mark.parametrize("rel", ["oneills1850/oneills.abc", "ryansMammoth/ryan.abc", "bach/bwv66.6.mxl",
                                 "essenFolksong/han1.abc", "nottingham-dataset/reelsa-c.abc",
                                 "beethoven/opus18no1/movement1.mxl"])
def test_check_source_refuses_anything_but_the_held_out_collections(rel):
    with pytest.raises(EnsembleError, match=rel.split("/")[0]):
        heldout.check_source(music21_corpus_root() / rel)


def test_programs_are_never_guitars(built):
    assert not set(heldout.PROGRAMS) & set(heldout.GUITARS)
    assert {p.family for p in heldout.PROGRAMS.values()} == set(heldout.FAMILIES)
    for q in built.queries:
        assert q["program"] not in heldout.GUITARS and q["program"] in heldout.PROGRAMS
    assert len({q["family"] for q in built.queries}) == len(built.queries), "families should rotate"


def test_the_manifest_records_hashes_sources_and_settings(built):
    m = built.manifest
    assert m["command"] == "pytest" and m["seed"] == TINY["seed"]
    assert set(m["files"]) == {q[w] for q in built.queries for w in ("input", "full")}
    heldout.load_queries(built.out_dir)  # every SHA-256 matches
    for q in built.queries:
        assert q["source"]["title"] and q["tempo_bpm"] > 0 and q["key"]
        beats = np.asarray(q["beat_times_s"])
        assert len(beats) >= 2 and np.all(np.diff(beats) > 0)
        assert np.allclose(np.diff(beats), 60.0 / q["tempo_bpm"], atol=2e-3), "the beat is regular"


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not(built, tmp_path):
    again = heldout.build_queries(tmp_path / "again", **TINY, command="pytest")
    assert again.manifest["files"] == built.manifest["files"]
    other = heldout.build_queries(tmp_path / "other", **{**TINY, "seed": TINY["seed"] + 1})
    assert set(other.manifest["files"].values()).isdisjoint(built.manifest["files"].values())


def test_an_existing_set_is_not_overwritten_and_a_failed_build_leaves_nothing(built, tmp_path, monkeypatch):
    with pytest.raises(EnsembleError, match="not empty"):
        heldout.build_queries(built.out_dir, **TINY)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(heldout, "_write_query", boom)
    with pytest.raises(OSError):
        heldout.build_queries(tmp_path / "set", **TINY)
    assert list(tmp_path.iterdir()) == []


def test_load_queries_notices_a_changed_file(built, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in built.out_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    victim = copy / built.queries[0]["input"]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(EnsembleError, match="SHA-256"):
        heldout.load_queries(copy)


@pytest.mark.parametrize("kwargs, field", [({"n_queries": 0}, "n_queries"), ({"seed": -1}, "seed"),
                                           ({"input_seconds": 30.0, "total_seconds": 20.0}, "total_seconds"),
                                           ({"levels_dbfs": (-6.0, 0.0)}, "levels_dbfs"),
                                           ({"sample_rate": 8000}, "sample_rate")])
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(EnsembleError, match=field):
        heldout.HeldoutConfig(**kwargs)
