"""RAG retrieval: exactness against the reference loop, filters, fallback, transposition, bad input."""

from __future__ import annotations

import math

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
    """coherence = mean of the key fit (clipped to [0, 1]), exp(-ln2/2 * semitones), exp(-ln2/6 * dB),
    the tempo term (0.5 with no tempo) and the register term exp(-ln2/7 * semitones between the
    played window's mean pitch and the input's last 8 s). The pitch penalty is the jump at the join, the loudness
    penalty the smaller of the join's and the distance to the source's approach, measured at the
    (beat-aligned) start the candidate is played from, after its shift (key + octaves); loudness
    relative to each side's own level."""
    assert (db.config.seam_match, db.config.loudness_match) == ("join", "either")
    for c in rag.retrieve(db, query, 5):
        start = np.array([c.source_start_seconds * db.fps])
        e_p, e_l, a_p, a_l = (float(x[0]) for x in rag._entry(db, np.array([c.chunk]), start))
        pp = abs(e_p + 100 * c.transpose - query.seam_pitch)
        lp = _penalty(e_l - query.seam_loud, a_l - query.seam_loud)
        p = 0.5 if math.isnan(pp) else math.exp(-math.log(2) / 2 * pp / 100)
        loud = 0.5 if math.isnan(lp) else math.exp(-math.log(2) / 6 * lp)
        key = min(max(c.key_fit, 0.0), 1.0)
        cont = int(round(db.config.segment_seconds * db.fps))
        w = float(rag.window_pitch(db, np.array([c.chunk]), cont, np.array([c.stretch]), start)[0])
        rp = abs(w + 100 * c.transpose - query.register_pitch)
        reg = 0.5 if math.isnan(rp) else math.exp(-math.log(2) / 7 * rp / 100)
        assert c.coherence == pytest.approx((p + loud + 0.5 + key + reg) / 5, abs=2e-3)
        assert c.seam_pitch_jump_cents == pytest.approx(e_p + 100 * c.transpose - query.seam_pitch, abs=0.05)
        if not c.fallback:
            assert c.key_fit >= db.config.key_floor


def test_seam_match_is_validated():
    with pytest.raises(EnsembleError, match="seam_match"):
        rag.RagConfig(seam_match="nearest")


def test_retrieval_is_invariant_to_recording_level(db, decoder):
    """The same melody recorded 29 dB apart (-35 vs -6 dBFS peak) retrieves the same Top-K, strict
    pass included: levels are compared relative to each side's own."""
    y = melody(np.random.default_rng(5), 12.0, 60, 0.4)
    y = y / np.max(np.abs(y))
    quiet = rag.analyze_query(y * 10 ** (-35 / 20), db, decoder)
    loud = rag.analyze_query(y * 10 ** (-6 / 20), db, decoder)
    assert quiet.level == pytest.approx(loud.level - 29.0, abs=0.5)
    a, b = rag.retrieve(db, quiet, 5), rag.retrieve(db, loud, 5)
    assert [(c.chunk, c.transpose, c.fallback) for c in a] == [(c.chunk, c.transpose, c.fallback) for c in b]


def test_candidates_are_shifted_into_the_inputs_key(db, decoder):
    """A query in C and the same query 3 semitones up (Eb): every candidate's key fit is within the
    margin of its best, and the Eb query's candidates are shifted 3 semitones further (mod 12)."""
    qc = rag.analyze_query(melody(np.random.default_rng(5), 12.0, 60, 0.4), db, decoder)
    qe = rag.analyze_query(melody(np.random.default_rng(5), 12.0, 63, 0.4), db, decoder)
    assert np.corrcoef(np.roll(qc.profile, 3), qe.profile)[0, 1] > 0.99  # YIN voicing differs a little
    for c in rag.retrieve(db, qc, 5):
        fits = rag._key_fit(db, qc, np.array([c.chunk]), np.arange(-6, 7))[0]
        t = (c.transpose + 6) % 12 - 6
        assert fits[t + 6] >= fits.max() - db.config.key_margin - 1e-9
    shifts_c = {c.chunk: c.transpose for c in rag.retrieve(db, qc, 10)}
    shifts_e = {c.chunk: c.transpose for c in rag.retrieve(db, qe, 10)}
    common = set(shifts_c) & set(shifts_e)
    assert common
    assert all((shifts_e[k] - shifts_c[k] - 3) % 12 == 0 for k in common)


def test_candidates_are_playable_to_their_end(db, query):
    """No candidate runs into the silence after its line ends: the line is voiced within
    end_voiced_seconds of where the continuation's window ends."""
    cont = 10.0
    for c in rag.retrieve(db, query, 10, continuation_seconds=cont):
        f0, voiced, _ = db.track_features(int(db.chunk_track[c.chunk]))
        end = int(round((c.source_start_seconds + cont / c.stretch) * db.fps))
        assert end <= len(voiced)
        assert voiced[end - int(db.config.end_voiced_seconds * db.fps):end].any()


def test_random_ranking_is_seeded_and_playable(db, query):
    a = rag.retrieve(db, query, 5, ranking="random", seed=1)
    b = rag.retrieve(db, query, 5, ranking="random", seed=1)
    c = rag.retrieve(db, query, 5, ranking="random", seed=2)
    assert [x.chunk for x in a] == [x.chunk for x in b] != [x.chunk for x in c]
    plain = rag.retrieve(db, query, 5, ranking="random", seed=1, conform=False)
    assert all(x.transpose == 0 and x.stretch == 1.0 for x in plain)
    with pytest.raises(EnsembleError, match="ranking 'best'"):
        rag.retrieve(db, query, 5, ranking="best")


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
    with pytest.raises(EnsembleError, match="no tracks"):
        build_database(tmp_path / "empty", tmp_path / "db", decoder, progress=False)
    assert not (tmp_path / "db").exists()


def test_segment_audio_needs_a_database_with_audio(tmp_path, db, decoder):
    """The shipped layout keeps controls only; --keep-audio keeps the monophonic lines' audio."""
    import soundfile as sf

    with pytest.raises(EnsembleError, match="keeps no audio"):
        rag.segment_audio(db, 5, 16000)
    write_corpus(tmp_path / "corpus", n_tracks=2, seconds=20.0, seed=3)
    build_database(tmp_path / "corpus", tmp_path / "db", decoder, splits=("train", "test"),
                   progress=False, keep_audio=True)
    small = rag.RagDatabase.load(tmp_path / "db")
    assert small.has_audio
    chunk = 3
    seg = rag.segment_audio(small, chunk, 16000)
    track = small.track_names[small.chunk_track[chunk]].split("/")[0]
    stem, _ = sf.read(tmp_path / "corpus" / track / "stems" / "Guitar.flac", dtype="float32")
    start = int(small.chunk_start[chunk]) * 160
    ref = stem[start:start + 16000]
    # Ogg Vorbis is lossy: compare levels and correlation, not samples
    assert np.corrcoef(seg, ref)[0, 1] > 0.95
    assert 20 * np.log10(np.std(seg) / np.std(ref)) == pytest.approx(0.0, abs=1.0)
