"""The distributed database build (a real Dask LocalCluster, 2 worker processes) and the IVF index.

- the Dask build writes the same arrays as the single-process build;
- a build killed with SIGKILL after some shards resumes from them and ends with the same database;
- a failing track is named, its finished neighbours kept; bad --workers / --scheduler refused;
- above the threshold the IVF (HNSW quantizer) index is built, its recall measured into the manifest,
  saved, loaded (an older layout refused and rebuilt in place); its bound never undercuts the exact
  composite, and retrieval through it equals scoring everything when it fetches everything -- also
  when coherence lifts a segment far down the relevance order.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from ensemble import rag, rag_index
from ensemble.errors import EnsembleError
from ensemble.jobs.distributed import build_database_distributed, check_workers
from ensemble.jobs.index import Variant, build_database
from ensemble.models.decoder import enable_fast_cpu_inference, make_debug_decoder
from tests.rag_fixtures import melody, write_corpus

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "test")


@pytest.fixture(scope="module")
def decoder():
    enable_fast_cpu_inference()  # as the CLI and every Dask worker do: the same GRU arithmetic
    return make_debug_decoder()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("scale") / "corpus", n_tracks=4, seconds=14.0, seed=3)


@pytest.fixture(scope="module")
def cluster():
    """A real local Dask cluster: 2 worker processes, one thread each (closed at the end)."""
    from distributed import LocalCluster

    c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    yield c
    c.close()


@pytest.fixture(scope="module")
def serial_db(tmp_path_factory, corpus, decoder):
    out = tmp_path_factory.mktemp("serial") / "db"
    build_database(corpus, out, decoder, splits=SPLITS, progress=False, command="test")
    return out


def arrays(db: Path) -> dict[str, np.ndarray]:
    out = {}
    for name in ("chunks.npz", "tracks.npz"):
        with np.load(db / name) as z:
            out.update({f"{name}:{k}": z[k] for k in z.files})
    return out


def assert_same_arrays(a: Path, b: Path) -> None:
    x, y = arrays(a), arrays(b)
    assert sorted(x) == sorted(y)
    for k in x:
        assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, k
        assert np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind == "f"), k


def test_dask_build_equals_single_process_build(tmp_path, corpus, decoder, serial_db, cluster):
    m = build_database_distributed(corpus, tmp_path / "db", decoder, scheduler=cluster.scheduler_address,
                                   splits=SPLITS, progress=False, command="test")
    assert_same_arrays(serial_db, tmp_path / "db")
    assert m["build"]["workers"] == 2 and m["build"]["tracks_computed"] == 4
    assert len(m["build"]["peak_rss_mb_per_worker"]) >= 1
    assert not (tmp_path / ".db.shards").exists()  # shards are removed once merged
    assert rag.RagDatabase.load(tmp_path / "db").n_chunks == m["n_chunks"]


def test_local_cluster_with_variants_equals_serial(tmp_path, corpus, decoder):
    """--workers 2 starts its own LocalCluster; transposed / re-timed copies agree with a serial build."""
    variants = (Variant(0, 1.0), Variant(3, 0.9))
    serial = tmp_path / "serial"
    build_database(corpus, serial, decoder, splits=SPLITS, progress=False, variants=variants)
    m = build_database_distributed(corpus, tmp_path / "db", decoder, workers=2, splits=SPLITS, progress=False,
                                   variants=variants)
    assert_same_arrays(serial, tmp_path / "db")
    names = [str(n) for n in arrays(tmp_path / "db")["tracks.npz:names"]]
    assert "Track00000/Guitar@+3st@x0.9" in names and "Track00000/Guitar" in names
    assert m["variants"]["variants"][1] == {"semitones": 3, "tempo": 0.9}


_KILLABLE = """
import sys
from ensemble.jobs.distributed import build_database_distributed
from ensemble.models.decoder import enable_fast_cpu_inference, make_debug_decoder
if __name__ == "__main__":
    enable_fast_cpu_inference()
    build_database_distributed(sys.argv[1], sys.argv[2], make_debug_decoder(), workers=1,
                               work_dir=sys.argv[3], splits=("train", "test"), progress=False)
"""


def test_killed_build_resumes_and_ends_with_the_same_database(tmp_path, corpus, decoder, serial_db, cluster):
    """SIGKILL the whole build (client and workers) once a shard is on disk; run it again."""
    work = tmp_path / "work"
    script = tmp_path / "build.py"
    script.write_text(_KILLABLE)
    proc = subprocess.Popen([sys.executable, str(script), str(corpus), str(tmp_path / "db"), str(work)],
                            cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not list(work.glob("*/Track*.npz")):
            assert proc.poll() is None, "the build ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client, its cluster and workers: no clean-up runs
        proc.wait()
    shards = sorted(p.name for p in work.glob("*/Track*.npz"))
    assert 1 <= len(shards) < 4, shards
    assert not (tmp_path / "db").exists()  # nothing half-written where the database goes
    m = build_database_distributed(corpus, tmp_path / "db", decoder, scheduler=cluster.scheduler_address,
                                   work_dir=work, splits=SPLITS, progress=False, command="test")
    assert m["build"]["tracks_reused"] == len(shards)
    assert m["build"]["tracks_computed"] == 4 - len(shards)
    assert_same_arrays(serial_db, tmp_path / "db")


def test_a_failing_track_is_named_and_the_others_kept(tmp_path, corpus, decoder, cluster):
    broken = tmp_path / "corpus"
    broken.mkdir()
    for track in sorted(corpus.iterdir()):
        (broken / track.name).symlink_to(track)
    bad = broken / "Track00002"
    bad.unlink()
    (bad / "stems").mkdir(parents=True)
    (bad / "metadata.json").write_text(json.dumps({"split": "train"}))
    (bad / "stems" / "Guitar.flac").write_bytes(b"not a flac file")
    with pytest.raises(EnsembleError, match=r"track 'Track00002' failed .*run the same command again"):
        build_database_distributed(broken, tmp_path / "db", decoder, scheduler=cluster.scheduler_address,
                                   work_dir=tmp_path / "work", splits=SPLITS, progress=False)
    assert not (tmp_path / "db").exists()
    assert not list((tmp_path / "work").glob("*/Track00002.npz"))


@pytest.mark.parametrize("workers", [0, -1, 257, 2.5, True, None])
def test_bad_workers_are_refused(workers):
    with pytest.raises(EnsembleError, match=r"--workers .*allowed: an integer 1\.\.256"):
        check_workers(workers, None)


def test_unreachable_scheduler_is_refused(tmp_path, corpus, decoder):
    with pytest.raises(EnsembleError, match=r"--scheduler 'tcp://127\.0\.0\.1:9' cannot be reached within 2 s"):
        build_database_distributed(corpus, tmp_path / "db", decoder, scheduler="tcp://127.0.0.1:9",
                                   splits=SPLITS, progress=False, connect_timeout_s=2)


def test_cli_refuses_bad_workers_before_loading_anything(capsys):
    from ensemble.cli import main

    assert main(["index", "build", "--workers", "0", "--checkpoints", "/nonexistent"]) == 2
    assert "--workers 0; allowed: an integer 1..256" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the IVF index

@pytest.fixture(scope="module")
def ann_db(tmp_path_factory, decoder):
    """A database above a lowered threshold: built with its IVF index, saved and loaded back."""
    root = tmp_path_factory.mktemp("ann")
    write_corpus(root / "corpus", n_tracks=8, seconds=40.0, seed=1)
    config = rag.RagConfig(chunk_seconds=0.25, ivf_threshold=500)
    m = build_database(root / "corpus", root / "db", decoder, splits=SPLITS, config=config, progress=False,
                       ann=rag_index.AnnConfig(recall_queries=100))
    assert m["n_chunks"] > 500
    return rag.RagDatabase.load(root / "db")


def test_ivf_index_is_built_measured_and_saved(ann_db):
    section = ann_db.manifest["ann"]
    assert ann_db.ann is not None and section["layout"] == rag_index.LAYOUT
    ivf = faiss.extract_index_ivf(ann_db.ann.index)
    assert isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSWFlat)
    assert ivf.nprobe == section["nprobe"] and ivf.d == section["dims"]
    groups = len(rag_index.group_starts(ann_db.chunk_track, section["config"]["group"])) - 1
    assert ivf.ntotal == section["groups"] == groups
    assert section["recall_at_10"]["value"] >= 0.95 and section["reached_target"]
    assert section["files"] == [rag_index.ANN_FILE] and (ann_db.root / rag_index.ANN_FILE).is_file()
    # the recall written down is what the loaded index gives on the same kind of queries
    rng = np.random.default_rng(0)
    vecs = rag_index.group_vectors(ann_db, ann_db.ann.config)
    qs = rng.choice(np.flatnonzero(ann_db.chunk_start > 0), 100, replace=False)
    rows = np.concatenate([rag_index.query_rows(ann_db, rag_index.pseudo_query(ann_db, int(i)), np.array([t]),
                                                alpha=0.8, beta=0.6)[0]
                           for i, t in zip(qs, rng.integers(-6, 7, 100), strict=True)])
    exact = faiss.IndexFlatIP(vecs.shape[1])
    exact.add(vecs)
    scores, _ = exact.search(rows, 10)
    _, found = ann_db.ann.index.search(rows, 10)
    assert rag_index.recall_at(found, vecs, rows, scores) >= 0.9


def test_recall_counts_ties_at_the_kth_place():
    vecs = np.array([[1.0, 0], [1.0, 0], [0.5, 0], [0, 1.0]], np.float32)
    q = np.array([[1.0, 0]], np.float32)
    exact = np.array([[1.0, 1.0]])
    assert rag_index.recall_at(np.array([[1, 0]]), vecs, q, exact, k=2) == 1.0
    assert rag_index.recall_at(np.array([[0, 2]]), vecs, q, exact, k=2) == 0.5


@pytest.mark.parametrize("x,y", [(0.0, 0.0), (150.0, -30.0), (1100.0, 20.0), (-590.0, 600.0)])
def test_harmonic_features_estimate_the_circular_terms(x, y):
    """<h(x), coefficients * h(y)> + a0 follows 2^(-d / half-life) of the circular distance (4 harmonics)."""
    hl, period = 200.0, 1200.0  # the pitch term: 2 semitones, one octave
    a0, a = rag_index._series(hl, period, 4)
    hx = rag_index._harmonics(np.array([x]), period, 4)[0]
    hy = rag_index._harmonics(np.array([y]), period, 4)[0]
    est = a0 + float(np.sum(a * (hx[:4] * hy[:4] + hx[4:8] * hy[4:8])))
    d = abs(x - y) % period
    d = min(d, period - d)
    assert est == pytest.approx(2.0 ** (-d / hl), abs=0.1)
    assert rag_index._harmonics(np.array([np.nan]), period, 4)[0].tolist() == [0.0] * 8 + [1.0]


def test_key_blocks_are_the_key_terms_exactly(ann_db, decoder):
    """The key blocks' inner product (plus the row's constant -c) is w * key fit - c * (1 - key fit)^2
    exactly (the Pearson correlation ``ensemble.rag._key_fit`` computes), for every chunk and shift."""
    cfg, ann = ann_db.config, ann_db.ann.config
    q = rag.analyze_query(melody(np.random.default_rng(5), 12.0, 61, 0.4), ann_db, decoder)
    transposes = np.arange(-6, 7)
    vecs = rag_index.index_vectors(ann_db, ann).astype(np.float64)
    rows, _ = rag_index.query_rows(ann_db, q, transposes, alpha=cfg.alpha, beta=cfg.beta)
    key = slice(ann_db.seg.shape[1], ann_db.seg.shape[1] + 12 + 78)  # after the relevance block
    got = vecs[:, key] @ rows[:, key].T.astype(np.float64) - ann.key_weight
    kf = rag._key_fit(ann_db, q, np.arange(ann_db.n_chunks), transposes)
    want = cfg.beta / 5.0 * kf - ann.key_weight * (1.0 - kf) ** 2
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_group_estimates_the_mean_of_its_chunks(ann_db, decoder):
    """Groups tile the chunks line by line, and a group vector's estimate is its chunks' mean estimate."""
    ann = ann_db.ann.config
    starts = rag_index.group_starts(ann_db.chunk_track, ann.group)
    groups = np.arange(len(starts) - 1)
    assert np.array_equal(rag_index.group_members(starts, groups), np.arange(ann_db.n_chunks))
    assert np.all(ann_db.chunk_track[starts[:-1]] == ann_db.chunk_track[starts[1:] - 1])  # one line each
    assert np.diff(starts).max() == ann.group
    q = rag.analyze_query(melody(np.random.default_rng(6), 12.0, 59, 0.4), ann_db, decoder)
    rows, _ = rag_index.query_rows(ann_db, q, np.arange(-6, 7), alpha=0.8, beta=0.6)
    chunk_est = rag_index.index_vectors(ann_db, ann).astype(np.float64) @ rows.T.astype(np.float64)
    group_est = rag_index.group_vectors(ann_db, ann, block=97).astype(np.float64) @ rows.T.astype(np.float64)
    mean = np.add.reduceat(chunk_est, starts[:-1], axis=0) / np.diff(starts)[:, None]
    np.testing.assert_allclose(group_est, mean, atol=1e-5)


def test_shifts_an_octave_apart_search_the_same_row(ann_db, decoder):
    q = rag.analyze_query(melody(np.random.default_rng(8), 12.0, 63, 0.4), ann_db, decoder)
    rows, const = rag_index.query_rows(ann_db, q, np.array([-6, 6]), alpha=0.8, beta=0.6)
    np.testing.assert_allclose(rows[0], rows[1], atol=1e-5)
    assert const[0] == pytest.approx(const[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_groups_and_shifts_ruled_out_hold_no_chunk_that_can_pass(ann_db, decoder, seed):
    """The group-level key floor and dynamics test drops a group, or a key shift of a group, only where
    no chunk passes the exact key filters (ensemble.rag._key_fit: within the key margin of the chunk's
    best fit and above the floor; dynamics within the tolerance)."""
    cfg = ann_db.config
    q = rag.analyze_query(melody(np.random.default_rng(seed), 12.0, 58 + seed, 0.4), ann_db, decoder)
    transposes = np.arange(-6, 7)
    starts = rag_index._groups(ann_db)
    kept, shifts, fetched = rag_index.possible_chunks(ann_db, q, np.arange(len(starts) - 1), transposes)
    assert fetched == ann_db.n_chunks
    kf = rag._key_fit(ann_db, q, np.arange(ann_db.n_chunks), transposes)
    dyn = np.abs(ann_db.dynamics - q.dynamics) <= cfg.dynamics_tolerance_db
    passes = (kf >= kf.max(axis=1, keepdims=True) - cfg.key_margin) & (kf >= cfg.key_floor) & dyn[:, None]
    allowed = np.zeros_like(passes)
    allowed[kept] = (shifts[:, None] >> np.arange(len(transposes))[None, :]) & 1 == 1
    assert passes.any() and not (passes & ~allowed).any()
    assert len(kept) < ann_db.n_chunks and allowed[kept].sum() < allowed[kept].size  # it does drop some


def _exhaustive_strict(db, q, alpha=0.8, beta=0.6):
    """Per playable chunk: the best strict-pass composite (-inf: none), from the code that scores everything."""
    cfg = db.config
    every = np.arange(db.n_chunks)
    transposes = np.arange(-6, 7)
    stretch = rag._stretch(db, q, every)
    starts = rag.aligned_starts(db, q, every, stretch, 800)
    playable = np.flatnonzero(rag._playable(db, every, 800, stretch, starts))
    register = rag.window_pitch(db, every, 800, stretch, starts)
    s = rag._score_all(db, q, playable, transposes, cfg, alpha, beta, np.ones(4, bool), stretch, starts, register)
    dyn = np.abs(db.dynamics[playable] - q.dynamics) <= cfg.dynamics_tolerance_db
    strict = (s["coh"] >= cfg.coherence_floor) & dyn[:, None] & s["allowed"] & (s["kf"] >= cfg.key_floor)
    best = np.where(strict, s["comp"], -np.inf).max(axis=1)
    bound = rag_index.strict_bound(db, q, playable, transposes, alpha=alpha, beta=beta, mask=np.ones(4, bool),
                                   stretch=stretch[playable], starts=starts[playable], register=register[playable])
    return playable, best, bound, s["rel"].max(axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_strict_bound_never_undercuts_the_exact_composite(ann_db, decoder, seed):
    """What makes the exact stage sound: no chunk's strict composite exceeds its bound, and a chunk
    the bound rules out (-inf) cannot pass the strict pass."""
    q = rag.analyze_query(melody(np.random.default_rng(seed), 12.0, 58 + seed, 0.4), ann_db, decoder)
    _, best, bound, _ = _exhaustive_strict(ann_db, q)
    assert np.isfinite(best).sum() > 0
    assert np.all(best <= bound)
    assert not np.any(np.isfinite(best) & ~np.isfinite(bound))
    assert np.isfinite(bound).sum() < len(bound)  # and it does rule chunks out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_compiled_stage_keeps_every_passing_chunk_aligned_as_the_exact_scores_read_it(ann_db, decoder, seed):
    """What retrieval reads from the compiled stage (bounded_chunks over every group): the stretch,
    aligned start and register of each kept chunk equal to the bit those of ensemble.rag (what the
    exact scores and the exhaustive reference use), every kept chunk playable, and every chunk that
    passes the strict pass kept, under its bound."""
    db = copy.copy(ann_db)  # its lines given tempos (every fourth unknown) and the query a beat grid
    tempo = np.random.default_rng(seed).uniform(70.0, 170.0, len(db.tempo_bpm))
    db.tempo_bpm = np.where(np.arange(len(tempo)) % 4 == 3, np.nan, tempo)
    q = rag.analyze_query(melody(np.random.default_rng(seed), 12.0, 58 + seed, 0.4), db, decoder)
    q = dataclasses.replace(q, tempo_bpm=112.0, beat_s=60.0 / 112.0, beat_phase_s=0.13 * seed)
    playable, best, _, _ = _exhaustive_strict(db, q)
    groups = np.arange(len(rag_index._groups(db)) - 1)
    idx, stretch, starts, register, bound, fetched, examined = rag_index.bounded_chunks(
        db, q, groups, np.arange(-6, 7), alpha=0.8, beta=0.6, mask=np.ones(4, bool), conform=True,
        cont_frames=800)
    ref_stretch = rag._stretch(db, q, idx)
    ref_starts = rag.aligned_starts(db, q, idx, ref_stretch, 800)
    np.testing.assert_array_equal(stretch, ref_stretch)
    np.testing.assert_array_equal(starts, ref_starts)
    np.testing.assert_array_equal(register, rag.window_pitch(db, idx, 800, ref_stretch, ref_starts))
    assert np.any(stretch != 1.0) and np.any(starts != db.chunk_start[idx])  # the query's tempo moved them
    assert rag._playable(db, idx, 800, stretch, starts).all()
    passing = np.isfinite(best)
    assert passing.any() and np.isin(playable[passing], idx).all()
    assert np.all(best[passing] <= bound[np.searchsorted(idx, playable[passing])])
    assert len(idx) < examined <= fetched == db.n_chunks


def test_the_compiled_stage_plays_stored_segments_as_stored_without_conforming(ann_db, decoder):
    q = rag.analyze_query(melody(np.random.default_rng(5), 12.0, 60, 0.4), ann_db, decoder)
    groups = np.arange(len(rag_index._groups(ann_db)) - 1)
    idx, stretch, starts, register, bound, *_ = rag_index.bounded_chunks(
        ann_db, q, groups, np.arange(-6, 7), alpha=0.8, beta=0.6, mask=np.ones(4, bool), conform=False,
        cont_frames=800)
    assert len(idx) and np.all(stretch == 1.0) and np.all(starts == ann_db.chunk_start[idx])
    np.testing.assert_array_equal(register, rag.window_pitch(ann_db, idx, 800, stretch, starts))


def test_preselection_returns_the_exhaustive_topk_when_coherence_lifts_a_low_relevance_segment(ann_db, decoder):
    """Coherence weighs 3x relevance here: a pick far down the relevance order must win. Fetching
    everything and scoring from 1 candidate up (doubling), the certificate holds and the Top-K equals
    the reference loop; pre-selection by relevance alone (the same number of chunks) misses it."""
    alpha, beta, k = 0.3, 0.9, 5
    q = rag.analyze_query(melody(np.random.default_rng(11), 12.0, 60, 0.4), ann_db, decoder)
    playable, best, _, rel = _exhaustive_strict(ann_db, q, alpha, beta)
    ref = rag.reference_retrieve(ann_db, q, k, alpha=alpha, beta=beta)
    assert not any(fb for *_, fb in ref)
    rel_rank = {int(c): r for r, c in enumerate(playable[np.argsort(-rel, kind="stable")])}
    low = [c for c, _, _ in ref if rel_rank[c] >= 10 * k]
    assert low, "no pick sits below the 10K most relevant: the test lost its point"
    ann_db.ann.set_nprobe(faiss.extract_index_ivf(ann_db.ann.index).nlist)
    try:
        stats = {}
        got = rag_index.retrieve_ann(ann_db, q, k, alpha=alpha, beta=beta, transposes=np.arange(-6, 7),
                                     cont_frames=800, mask=np.ones(4, bool), conform=True, fetch=ann_db.n_chunks,
                                     candidates=1, stats=stats)
    finally:
        ann_db.ann.set_nprobe(ann_db.manifest["ann"]["nprobe"])
    assert [(c.chunk, c.transpose, c.fallback) for c in got] == ref
    assert stats["certified"] and stats["scored"] <= stats["possible"] < len(playable)
    by_relevance = set(playable[np.argsort(-rel, kind="stable")][:stats["scored"]].tolist())
    assert not set(low) <= by_relevance


def test_ivf_retrieval_fetching_everything_equals_the_reference_loop(ann_db, decoder):
    q = rag.analyze_query(melody(np.random.default_rng(7), 12.0, 62, 0.4), ann_db, decoder)
    ann_db.ann.set_nprobe(faiss.extract_index_ivf(ann_db.ann.index).nlist)
    try:
        transposes = np.arange(-6, 7)
        stats = {}
        got = rag_index.retrieve_ann(ann_db, q, 5, alpha=0.8, beta=0.6, transposes=transposes, cont_frames=800,
                                     mask=np.ones(4, bool), conform=True, fetch=ann_db.n_chunks, stats=stats)
        ref = rag.reference_retrieve(ann_db, q, 5)
        assert [(c.chunk, c.transpose, c.fallback) for c in got] == ref
        assert stats["scored"] <= stats["fetched"] == ann_db.n_chunks
    finally:
        ann_db.ann.set_nprobe(ann_db.manifest["ann"]["nprobe"])


def test_ivf_retrieval_through_retrieve_is_mostly_exhaustive(ann_db, decoder):
    """The default path (the chosen nprobe, the default fetch) against scoring everything."""
    same = 0
    for seed in range(6):
        q = rag.analyze_query(melody(np.random.default_rng(seed), 12.0, 58 + seed, 0.4), ann_db, decoder)
        got = rag.retrieve(ann_db, q, 5)
        ref = rag.reference_retrieve(ann_db, q, 5)
        same += [(c.chunk, c.transpose, c.fallback) for c in got] == ref
    assert same >= 5


def test_an_index_of_another_layout_is_refused_and_rebuilt(tmp_path, ann_db):
    import shutil

    from ensemble.jobs.index import rebuild_ann

    with pytest.raises(EnsembleError, match=r"layout 'relevance-only'.*rebuild_ann"):
        rag_index.load_ann(ann_db.root, {"files": ["ann_L0.faiss"], "nprobe": 1, "config": {}})
    root = tmp_path / "db"
    shutil.copytree(ann_db.root, root)
    before = arrays(root)
    (root / "ann_L0.faiss").write_bytes(b"an index of the previous layout")
    manifest = rebuild_ann(root, rag_index.AnnConfig(recall_queries=50))
    assert not (root / "ann_L0.faiss").exists() and manifest["ann"]["layout"] == rag_index.LAYOUT
    after = arrays(root)
    assert all(np.array_equal(before[k], after[k], equal_nan=before[k].dtype.kind == "f") for k in before)  # kept
    db = rag.RagDatabase.load(root)
    assert db.ann is not None and json.loads((root / "manifest.json").read_text())["ann"]["files"] == ["ann.faiss"]


def test_shipped_database_stays_exact():
    db = rag.RagDatabase.load(ROOT / "assets" / "rag")
    assert db.ann is None and "ann" not in db.manifest
    assert all(isinstance(i, faiss.IndexFlatIP) for i in db.indexes)


def test_runtime_imports_no_dask():
    code = ("import os, sys\nos.environ['GRADIO_ANALYTICS_ENABLED'] = 'False'\nimport app\n"
            "from ensemble.engine import Engine, EngineConfig\nEngine.load(EngineConfig())\n"
            "import ensemble.rag_index\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)
