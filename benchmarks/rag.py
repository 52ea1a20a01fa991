"""Benchmark: RAG retrieval at 10k / 100k / 1M chunks, the reference per-candidate loop, and a full
``extend`` (20 s -> 30 s, K = 10, performed) split by stage.

Retrieval = query scoring + Top-K selection (no analysis, no rendering), on synthetic databases with
the real layout (unit-norm 64-d embeddings + 12-d chroma per lookback and segment, seam and RMS
statistics). Up to ``ivf_threshold`` (200k) chunks the faiss index is exact (flat); the 1M database
uses an IVF index (nprobe 16). The reference design's loop (one Python iteration per candidate) is
timed on a sample of candidates and extrapolated linearly. The full extend runs on the shipped
assets with a 20 s clip from ``assets/examples`` (or a synthetic melody).

    python -m benchmarks.rag [--sizes 10000,100000,1000000] [--queries 15] [--no-extend]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from ensemble import rag

ROOT = Path(__file__).resolve().parents[1]


def synthetic_db(n: int, seed: int = 0, dims: int = 64) -> rag.RagDatabase:
    rng = np.random.default_rng(seed)
    cfg = rag.RagConfig()
    L = len(cfg.lookbacks)

    def unit(shape):
        x = rng.standard_normal(shape).astype(np.float32)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def vec(prefix):
        return np.concatenate([unit(prefix + (dims,)), np.abs(unit(prefix + (12,)))], axis=-1)

    per_track = 150
    n_tracks = int(np.ceil(n / per_track))
    track = (np.arange(n) // per_track).astype(np.int32)
    start = ((np.arange(n) % per_track) * 200).astype(np.int32)
    db = rag.RagDatabase(
        root=Path("/nonexistent"), config=cfg, manifest={"version": "synthetic"},
        track_names=[f"Synthetic{i:06d}" for i in range(n_tracks)],
        track_offsets=np.zeros(n_tracks + 1, np.int64), f0=np.zeros(0, np.float32),
        voiced=np.zeros(0, bool), loud=np.zeros(0, np.float32), chunk_track=track, chunk_start=start,
        chunk_remaining=(per_track * 200 - start).astype(np.int32), ctx=vec((L, n)), seg=vec((n,)),
        rms_mean=rng.uniform(0.02, 0.2, n).astype(np.float32),
        rms_std=rng.uniform(0.01, 0.1, n).astype(np.float32),
        seam_pitch=rng.uniform(-1500, 600, n).astype(np.float32),
        seam_loud=rng.uniform(-50, -10, n).astype(np.float32),
        pre_pitch=rng.uniform(-1500, 600, n).astype(np.float32),
        pre_loud=rng.uniform(-50, -10, n).astype(np.float32),
        pca_mean=np.zeros(dims, np.float32), pca_components=np.eye(dims, dtype=np.float32))
    db.build_indexes()
    return db


def random_query(db: rag.RagDatabase, rng: np.random.Generator) -> rag.Query:
    d = db.seg.shape[1] - 12
    e = rng.standard_normal((len(db.config.lookbacks), d)).astype(np.float32)
    c = np.abs(rng.standard_normal((len(db.config.lookbacks), 12))).astype(np.float32)
    vec = np.concatenate([e / np.linalg.norm(e, axis=1, keepdims=True),
                          c / np.linalg.norm(c, axis=1, keepdims=True)], axis=1)
    return rag.Query(vec, db.config.lookbacks, float(rng.uniform(-1200, 0)), float(rng.uniform(-40, -15)),
                     0.1, 0.05, 20.0)


def time_retrieval(db: rag.RagDatabase, n_queries: int, transpose: bool) -> list[float]:
    rng = np.random.default_rng(1)
    times = []
    rag.retrieve(db, random_query(db, rng), 10, transpose=transpose)  # warm-up
    for _ in range(n_queries):
        q = random_query(db, rng)
        t0 = time.perf_counter()
        rag.retrieve(db, q, 10, transpose=transpose)
        times.append(time.perf_counter() - t0)
    return times


def time_reference(db: rag.RagDatabase, sample: int) -> float:
    """Seconds per candidate of the unvectorised loop, measured on a ``sample``-chunk database."""
    small = synthetic_db(sample, seed=3)
    q = random_query(small, np.random.default_rng(2))
    t0 = time.perf_counter()
    rag.reference_retrieve(small, q, 10)
    return (time.perf_counter() - t0) / sample


def time_extend(repeats: int = 5) -> dict | None:
    from ensemble.audio import load_audio
    from ensemble.engine import Engine, EngineConfig
    from ensemble.extend import ExtendRequest, extend

    try:
        t0 = time.perf_counter()
        engine = Engine.load(EngineConfig(checkpoints_dir=str(ROOT / "checkpoints"),
                                          database_dir=str(ROOT / "assets" / "rag"),
                                          drums_dir=str(ROOT / "assets" / "drums")))
        load_s = time.perf_counter() - t0
    except Exception as exc:  # assets not built yet
        print(f"full extend skipped: {exc}")
        return None
    examples = sorted((ROOT / "assets" / "examples").glob("*.wav"),
                      key=lambda p: load_audio(p).seconds, reverse=True)
    if examples:
        audio = load_audio(examples[0]).audio[: 20 * 16000]  # the longest shipped example
        source = examples[0].name
    else:
        from tests.rag_fixtures import melody

        audio, source = melody(np.random.default_rng(0), 20.0, 64, 0.4), "synthetic melody"
    audio = np.pad(audio, (0, max(0, 20 * 16000 - len(audio))))
    extend(engine, audio[: 6 * 16000], ExtendRequest(seconds=9.0, k=1))  # warm-up: numba JIT of librosa
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ext = extend(engine, audio, ExtendRequest(seconds=30.0, k=10))
        total = time.perf_counter() - t0
        runs.append({"total": total, **ext.timings})
    med = statistics.median(r["total"] for r in runs)
    typical = min(runs, key=lambda r: abs(r["total"] - med))
    # the same K continuations performed one call at a time (the unbatched way), against one batch
    conts = [leader[len(audio) - 1600:] for leader in ext.leaders]
    one_by_one, batched = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for c in conts:
            engine.performer.perform(c, seed=0)
        one_by_one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        engine.performer.perform_batch(conts, seed=0, workers=2)
        batched.append(time.perf_counter() - t0)
    return {"engine_load_s": round(load_s, 2), "clip": source, "k": len(ext.candidates),
            "runs": repeats, "extend_total_s_median": round(med, 3),
            "extend_total_s_all": [round(r["total"], 3) for r in runs],
            "stages_s": {k: round(v, 3) for k, v in typical.items()},
            "k_continuations_one_by_one_s_median": round(statistics.median(one_by_one), 3),
            "k_continuations_batched_s_median": round(statistics.median(batched), 3),
            "batched_speedup": round(statistics.median(one_by_one) / statistics.median(batched), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--reference-sample", type=int, default=2000)
    parser.add_argument("--no-extend", action="store_true")
    parser.add_argument("--extend-runs", type=int, default=5)
    args = parser.parse_args()

    per_candidate = time_reference(None, args.reference_sample)
    rows, result = [], {"retrieval_ms_median": {}, "retrieval_transpose_ms_median": {},
                        "reference_loop_ms_extrapolated": {}, "speedup_vs_reference": {}}
    for n in (int(x) for x in args.sizes.split(",")):
        t0 = time.perf_counter()
        db = synthetic_db(n)
        build = time.perf_counter() - t0
        plain = statistics.median(time_retrieval(db, args.queries, False)) * 1000
        trans = statistics.median(time_retrieval(db, max(3, args.queries // 3), True)) * 1000
        ref = per_candidate * n * 1000
        kind = type(db.indexes[0]).__name__
        rows.append((n, kind, build, plain, trans, ref))
        result["retrieval_ms_median"][str(n)] = round(plain, 2)
        result["retrieval_transpose_ms_median"][str(n)] = round(trans, 2)
        result["reference_loop_ms_extrapolated"][str(n)] = round(ref, 1)
        result["speedup_vs_reference"][str(n)] = round(ref / plain, 1)
        del db
    print(f"{'chunks':>9} {'index':<14}{'build s':>8} {'retrieve ms':>12} {'+transpose ms':>14} "
          f"{'reference loop ms':>18} {'ratio':>8}")
    for n, kind, build, plain, trans, ref in rows:
        print(f"{n:>9} {kind:<14}{build:>8.1f} {plain:>12.2f} {trans:>14.2f} {ref:>18.0f} "
              f"{ref / plain:>8.0f}")
    print(f"reference loop: {per_candidate * 1e6:.1f} us per candidate (measured on "
          f"{args.reference_sample} candidates, extrapolated linearly)")
    if not args.no_extend:
        ext = time_extend(args.extend_runs)
        if ext:
            print(f"full extend 20 s -> 30 s, K={ext['k']} ({ext['clip']}), {ext['runs']} runs: "
                  f"{ext['extend_total_s_median']:.2f} s median (all: {ext['extend_total_s_all']}); "
                  f"stages of the median run {ext['stages_s']}")
            print(f"the K continuations' performance: one call each "
                  f"{ext['k_continuations_one_by_one_s_median']:.2f} s vs one batch "
                  f"{ext['k_continuations_batched_s_median']:.2f} s median "
                  f"({ext['batched_speedup']:.2f}x)")
            result["extend"] = ext
    print(json.dumps(result))


if __name__ == "__main__":
    main()
