"""Benchmark: RAG retrieval at 10k / 100k / 1M chunks, the reference per-candidate loop, and a full
``extend`` (20 s -> 30 s, K = 10, performed) split by stage.

Retrieval = query scoring + Top-K selection (no analysis, no rendering), on synthetic databases with
the real layout (unit-norm 32-d embeddings + 12-d pitch-class profiles per lookback and segment,
per-frame controls, tempo per line, dynamics and level per chunk), at every key shift (-6..+6). Up to
``ivf_threshold`` (200k) chunks the faiss index is exact (flat); the 1M database uses an IVF index
(nprobe 16). The reference design's loop (one Python iteration per candidate) is
timed on a sample of candidates and extrapolated linearly. The full extend runs on the shipped
assets with a 20 s clip from ``assets/examples`` (or a synthetic melody); with ``--v1-dir`` the
previous version (a git worktree of it) is timed on the same clip in the same run.

    python -m benchmarks.rag [--sizes 10000,100000,1000000] [--queries 15] [--no-extend] [--v1-dir DIR]
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


def synthetic_db(n: int, seed: int = 0, dims: int = 32) -> rag.RagDatabase:
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
    frames = per_track * 200 + 400
    track = (np.arange(n) // per_track).astype(np.int32)
    start = ((np.arange(n) % per_track) * 200).astype(np.int32)
    n_frames = n_tracks * frames
    voiced = rng.random(n_frames) < 0.8
    db = rag.RagDatabase(
        root=Path("/nonexistent"), config=cfg, manifest={"version": "synthetic"},
        track_names=[f"Synthetic{i:06d}/Guitar" for i in range(n_tracks)],
        track_offsets=np.arange(n_tracks + 1, dtype=np.int64) * frames,
        tempo_bpm=rng.uniform(60, 160, n_tracks),
        f0=np.where(voiced, rng.uniform(200, 800, n_frames), 0).astype(np.float32), voiced=voiced,
        loud=rng.uniform(-50, -10, n_frames).astype(np.float32), chunk_track=track, chunk_start=start,
        chunk_remaining=(frames - start).astype(np.int32), ctx=vec((L, n)), seg=vec((n,)),
        dynamics=rng.uniform(1, 8, n).astype(np.float32), level=rng.uniform(-35, -15, n).astype(np.float32),
        seam_pitch=rng.uniform(-1500, 600, n).astype(np.float32),
        seam_loud=rng.uniform(-10, 3, n).astype(np.float32),
        pre_pitch=rng.uniform(-1500, 600, n).astype(np.float32),
        pre_loud=rng.uniform(-10, 3, n).astype(np.float32),
        pca_mean=np.zeros(dims, np.float32), pca_components=np.eye(dims, dtype=np.float32))
    db.cum_voiced = np.concatenate([[0], np.cumsum(db.voiced, dtype=np.int64)])
    db.cum_cents = np.concatenate([[0.0], np.cumsum(np.where(voiced, rng.uniform(-1500, 600, n_frames), 0.0))])
    db.cum_loud = np.concatenate([[0.0], np.cumsum(db.loud, dtype=np.float64)])
    db.build_indexes()
    return db


def random_query(db: rag.RagDatabase, rng: np.random.Generator) -> rag.Query:
    d = db.seg.shape[1] - 12
    e = rng.standard_normal((len(db.config.lookbacks), d)).astype(np.float32)
    c = np.abs(rng.standard_normal((len(db.config.lookbacks), 12))).astype(np.float32)
    vec = np.concatenate([e / np.linalg.norm(e, axis=1, keepdims=True),
                          c / np.linalg.norm(c, axis=1, keepdims=True)], axis=1)
    return rag.Query(vec, db.config.lookbacks, seam_pitch=float(rng.uniform(-1200, 0)),
                     seam_loud=float(rng.uniform(-6, 3)), level=-25.0, dynamics=4.0,
                     profile=np.abs(rng.standard_normal(12)), tempo_bpm=float(rng.uniform(60, 160)),
                     seconds=20.0, voiced_fraction=0.8, beat_s=0.5, beat_phase_s=float(rng.uniform(0, 0.5)))


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
    rag.reference_retrieve(small, q, 10, transpose=False)
    return (time.perf_counter() - t0) / sample


V1_EXTEND = """
import json, statistics, sys, time
import numpy as np
from ensemble.audio import load_audio
from ensemble.engine import Engine, EngineConfig
from ensemble.extend import ExtendRequest, extend
engine = Engine.load(EngineConfig())
audio = load_audio(sys.argv[1]).audio[: 20 * 16000]
extend(engine, audio[: 6 * 16000], ExtendRequest(seconds=9.0, k=1))
runs = []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter()
    extend(engine, audio, ExtendRequest(seconds=30.0, k=10))
    runs.append(time.perf_counter() - t0)
print(json.dumps(runs))
"""


def time_v1(v1_dir: str, clip: Path, repeats: int) -> list[float] | None:
    """The previous version's extend of the same clip, timed in its own worktree."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", V1_EXTEND, str(clip), str(repeats)], cwd=v1_dir,
                          capture_output=True, text=True, env={**__import__("os").environ,
                                                               "GRADIO_ANALYTICS_ENABLED": "False"})
    if done.returncode != 0:
        print(f"v1 extend failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    return {"engine_load_s": round(load_s, 2), "clip": source, "k": len(ext.candidates),
            "runs": repeats, "extend_total_s_median": round(med, 3),
            "extend_total_s_all": [round(r["total"], 3) for r in runs],
            "stages_s": {k: round(v, 3) for k, v in typical.items()},
            "clip_path": str(examples[0]) if examples else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--reference-sample", type=int, default=2000)
    parser.add_argument("--no-extend", action="store_true")
    parser.add_argument("--extend-runs", type=int, default=5)
    parser.add_argument("--v1-dir", help="a git worktree of the previous version: time its extend too")
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
            result["extend"] = ext
            if args.v1_dir and ext.get("clip_path"):
                v1 = time_v1(args.v1_dir, Path(ext["clip_path"]), args.extend_runs)
                if v1:
                    m1 = statistics.median(v1)
                    print(f"previous version (v1, {args.v1_dir}), same clip: {m1:.2f} s median "
                          f"(all: {[round(x, 2) for x in v1]}); ratio v1 / now "
                          f"{m1 / ext['extend_total_s_median']:.2f}")
                    result["extend_v1"] = {"extend_total_s_median": round(m1, 3),
                                           "extend_total_s_all": [round(x, 3) for x in v1]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
