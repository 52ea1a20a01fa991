"""RAG retrieval: exactness against the reference loop, filters, fallback, transposition, bad input."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from ensemble import rag
from ensemble.errors import EnsembleError
from ensemble.jobs.index import build_database
from ensemble.models.decoder import make_debug_decoder
from tests.rag_fixtures import melody, write_corpus


@pytest.fixture(scope="module")
def decoder():
    return make_debug_decoder()


@pytest.fixture(scope="module")
def db(tmp_path_factory, decoder):
    root = tmp_path_factory.mktemp("rag")
    write_corpus(root / "corpus", n_tracks=6, seconds=30.0, seed=0)
    build_database(root / "corpus", root / "db", decoder, splits=("train", "test"),
                       progress=False, command="test")
    return rag.RagDatabase.load(root / "db")


@pytest.fixture(scope="module")
def query(db, decoder):
    return rag.analyze_query(melody(np.random.default_rng(5), 12.0, 60, 0.4), db, decoder)


def test_database_layout(db):
    assert db.n_chunks > 50
    dims = min(db.config.embed_dims, db.pca_components.shape[1])  # PCA cannot exceed the GRU width
    assert db.ctx.shape == (4, db.n_chunks, dims + 12)
    assert np.all(np.diff(db.chunk_start[db.chunk_track == 0]) == 200)  # 2.0 s base chunks
    assert db.manifest["command"] == "test" and db.manifest["n_tracks"] == 6
    # vectors are unit-norm per part, so relevance lies in [-1, 1]
    assert np.allclose(np.linalg.norm(db.seg[:, :-12], axis=1), 1.0, atol=1e-2)


@pytest.mark.parametrize("k,transpose,alpha,beta", [(1, False, 0.8, 0.6), (3, False, 0.8, 0.6),
                                                    (10, False, 0.8, 0.6), (5, True, 0.8, 0.6),
                                                    (10, True, 0.2, 1.0), (8, False, 1.0, 0.0)])
def test_topk_equals_exhaustive_reference_loop(db, query, k, transpose, alpha, beta):
    got = rag.retrieve(db, query, k, transpose=transpose, alpha=alpha, beta=beta)
    ref = rag.reference_retrieve(db, query, k, transpose=transpose, alpha=alpha, beta=beta)
    assert [(c.chunk, c.transpose, c.fallback) for c in got] == ref
    assert len(got) == k


def test_lookback_subset_matches_reference(db, query):
    mask = np.array([False, True, False, True])
    got = rag.retrieve(db, query, 6, lookback_mask=mask)
    assert [(c.chunk, c.transpose, c.fallback) for c in got] == rag.reference_retrieve(
        db, query, 6, lookback_mask=mask)
    assert {c.lookback for c in got} <= {7.5, 8.5}


def test_candidates_are_distinct_and_non_overlapping(db, query):
    got = rag.retrieve(db, query, 10, continuation_seconds=8.0)
    seen = {}
    for c in got:
        for start in seen.get(c.track, []):
            assert abs(start - c.start_seconds) >= 8.0
        seen.setdefault(c.track, []).append(c.start_seconds)
    assert len({c.chunk for c in got}) == len(got)


def test_strict_pass_respects_floor_and_fallback_is_flagged(db, query):
    got = rag.retrieve(db, query, 10)
    for c in got:
        if not c.fallback:
            assert c.coherence >= db.config.coherence_floor
            assert math.isclose(c.composite, 0.8 * c.relevance + 0.6 * c.coherence, abs_tol=1e-4)
        else:
            assert math.isclose(c.composite, 0.95 * c.relevance + 0.05 * c.coherence, abs_tol=1e-4)
    # strict entries come before fallback entries, each group sorted by its composite
    flags = [c.fallback for c in got]
    assert flags == sorted(flags)


def _penalty(join: float, approach: float) -> float:
    known = [abs(x) for x in (join, approach) if x is not None and not math.isnan(x)]
    return min(known) if known else float("nan")


def test_coherence_units(db, query):
    """coherence = mean(exp(-a*semitones), exp(-b*dB)) with 2 st and 6 dB half-lives; by default the
    pitch penalty is the distance from the user's last note to the source's approach, the loudness
    penalty the smaller of the jump at the join and the distance to the approach."""
    assert (db.config.seam_match, db.config.loudness_match) == ("approach", "either")
    for c in rag.retrieve(db, query, 5):
        pp = abs(db.pre_pitch[c.chunk] + 100 * c.transpose - query.seam_pitch)
        lp = _penalty(c.seam_loudness_jump_db, db.pre_loud[c.chunk] - query.seam_loud)
        p = 0.5 if math.isnan(pp) else math.exp(-math.log(2) / 2 * pp / 100)
        loud = 0.5 if math.isnan(lp) else math.exp(-math.log(2) / 6 * lp)
        assert c.coherence == pytest.approx(0.5 * (p + loud), abs=2e-3)


def _two_note_track(tmp_path, decoder, seam_match):
    """One track: A3 for 10 s, then D4 (+5 semitones). The query is its first 10 s (ends on A3)."""
    t = np.arange(20 * 16000) / 16000
    f = np.where(t < 10.0, 220.0, 220.0 * 2 ** (5 / 12))
    y = (0.3 * np.sin(2 * np.pi * np.cumsum(f) / 16000)).astype(np.float32)
    root = tmp_path / seam_match
    (root / "c" / "Track00000" / "stems").mkdir(parents=True)
    import soundfile as sf

    sf.write(root / "c" / "Track00000" / "stems" / "Guitar.flac", y, 16000)
    (root / "c" / "Track00000" / "metadata.json").write_text(json.dumps({"split": "train"}))
    build_database(root / "c", root / "db", decoder, splits=("train",), progress=False,
                       config=rag.RagConfig(seam_match=seam_match, min_remaining_seconds=2.0))
    small = rag.RagDatabase.load(root / "db")
    q = rag.analyze_query(y[: 10 * 16000], small, decoder)
    truth = int(np.flatnonzero(small.chunk_start == 1000)[0])  # the chunk at 10.0 s: the new note
    return small, q, truth


@pytest.mark.parametrize("seam_match", ["join", "approach", "either"])
def test_seam_match_the_sources_own_move_is_coherent(tmp_path, decoder, seam_match):
    """The true continuation starts on a new note 5 semitones up. Judged at the join it is a 500-cent
    jump (pitch term exp(-ln2/2 * 5) = 0.18); judged by the source's approach (it was played right
    after the same A3) it is the source's own move, pitch term 1."""
    small, q, truth = _two_note_track(tmp_path, decoder, seam_match)
    small = replace(small, config=replace(small.config, loudness_match=seam_match))
    c, _, _ = rag._coherence(small, q, np.array([truth]), np.array([0]), small.config)
    pitch_jump = small.seam_pitch[truth] - q.seam_pitch
    assert pitch_jump == pytest.approx(500, abs=15)  # cents, measured by YIN on both sides
    join_db = small.seam_loud[truth] - q.seam_loud
    approach_db = small.pre_loud[truth] - q.seam_loud  # ~0: the same A3 was playing
    loud_db = {"join": abs(join_db), "approach": abs(approach_db),
               "either": _penalty(join_db, approach_db)}[seam_match]
    loud_term = math.exp(-math.log(2) / 6 * loud_db)
    want_pitch = math.exp(-math.log(2) / 2 * 5) if seam_match == "join" else 1.0
    assert float(c[0, 0]) == pytest.approx(0.5 * (want_pitch + loud_term), abs=0.02)


def test_seam_match_is_validated():
    with pytest.raises(EnsembleError, match="seam_match"):
        rag.RagConfig(seam_match="nearest")


def test_transpose_finds_a_shifted_copy(tmp_path, decoder):
    """A database holding only a copy of the query's tune shifted up 3 semitones: with transposition
    the winner is that copy played 3 semitones down, joining mid-note with a near-zero pitch jump.
    Relevance is chroma-only here so the test checks the transposition mechanics (chroma roll,
    seam shift), not the untrained debug GRU."""
    import soundfile as sf

    y = melody(np.random.default_rng(11), 24.0, 60, 4.0)  # 4 s notes: 10 s is mid-note
    shifted = melody(np.random.default_rng(11), 24.0, 63, 4.0)  # the same tune 3 semitones up
    root = tmp_path / "c" / "Track00000"
    (root / "stems").mkdir(parents=True)
    sf.write(root / "stems" / "Guitar.flac", shifted, 16000)
    (root / "metadata.json").write_text(json.dumps({"split": "train"}))
    build_database(tmp_path / "c", tmp_path / "db", decoder, splits=("train",), progress=False,
                       config=rag.RagConfig(chroma_weight=1.0))
    small = rag.RagDatabase.load(tmp_path / "db")
    q = rag.analyze_query(y[: 10 * 16000], small, decoder)
    best = rag.retrieve(small, q, 1, transpose=True)[0]
    assert (best.transpose, best.start_seconds) == (-3, 10.0)
    assert abs(best.seam_pitch_jump_cents) < 30
    plain = rag.retrieve(small, q, 1, transpose=False)[0]
    assert plain.relevance < best.relevance


def test_short_input_is_used_whole_with_a_note(db, decoder):
    q = rag.analyze_query(melody(np.random.default_rng(1), 3.0, 62, 0.3), db, decoder)
    assert q.lookbacks_used == (3.0, 3.0, 3.0, 3.0)
    assert any("shorter than the smallest lookback" in n for n in q.notes)
    assert len(rag.retrieve(db, q, 3)) == 3


def test_bad_inputs(db, decoder, query):
    with pytest.raises(EnsembleError, match="at least 2 s"):
        rag.analyze_query(np.zeros(16000, np.float32) + 0.1, db, decoder)
    with pytest.raises(EnsembleError, match="silent"):
        rag.analyze_query(np.zeros(5 * 16000, np.float32), db, decoder)
    with pytest.raises(EnsembleError, match="k = 0"):
        rag.retrieve(db, query, 0)
    with pytest.raises(EnsembleError, match="alpha"):
        rag.retrieve(db, query, 3, alpha=float("nan"))


def test_corrupt_or_missing_database(tmp_path, db):
    with pytest.raises(EnsembleError, match="no manifest.json"):
        rag.RagDatabase.load(tmp_path / "nothing")
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(db.root, copy)
    data = (copy / "chunks.npz").read_bytes()
    (copy / "chunks.npz").write_bytes(data[:-100] + b"\0" * 100)
    with pytest.raises(EnsembleError, match="sha256"):
        rag.RagDatabase.load(copy)


def test_empty_corpus_is_refused(tmp_path, decoder):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EnsembleError, match="no 'Guitar' stems"):
        build_database(tmp_path / "empty", tmp_path / "db", decoder, progress=False)
    assert not (tmp_path / "db").exists()


def test_segment_audio_matches_the_stem(db):
    import soundfile as sf

    chunk = 5
    seg = rag.segment_audio(db, chunk, 16000)
    track = db.track_names[db.chunk_track[chunk]]
    corpus = db.manifest["data_dir"]
    stem, _ = sf.read(f"{corpus}/{track}/stems/Guitar.flac", dtype="float32")
    start = int(db.chunk_start[chunk]) * 160
    ref = stem[start:start + 16000]
    # Ogg Vorbis is lossy: compare levels and correlation, not samples
    assert np.corrcoef(seg, ref)[0, 1] > 0.95
    assert 20 * np.log10(np.std(seg) / np.std(ref)) == pytest.approx(0.0, abs=1.0)
