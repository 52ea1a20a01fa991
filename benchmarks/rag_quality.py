"""RAG quality on BabyBand test tracks: does retrieval find the true continuation, and do its seams
join smoothly?

For every test track whose Guitar stem is long enough: query = the first ``--query-seconds`` (20 s)
of the stem; the database is built from train + test (so the true continuation -- the chunk that
starts at 20.0 s in the same track -- is present). Reports recall@10 and MRR (over the Top-100) of
the true continuation chunk, and the median seam pitch jump (cents) and loudness jump (dB) of the
Top-1 against uniformly random candidates, for three relevance variants: the candidate's preceding
context only, the segment itself only (the reference design's choice), and the 50/50 blend.

    python benchmarks/rag_quality.py [--data data/babyband] [--checkpoints checkpoints]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402

from ensemble import rag  # noqa: E402
from ensemble.audio import load_audio  # noqa: E402
from ensemble.models.io import load_decoder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/babyband")
    parser.add_argument("--checkpoints", default="checkpoints")
    parser.add_argument("--query-seconds", type=float, default=20.0)
    parser.add_argument("--continuation-seconds", type=float, default=10.0)
    parser.add_argument("--db", help="reuse a train+test database folder (built if missing)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    decoder, _ = load_decoder(Path(args.checkpoints) / "decoder_Guitar.pt")
    db_dir = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="rag_quality_")) / "db"
    if not (db_dir / "manifest.json").is_file():
        rag.build_database(args.data, db_dir, decoder, splits=("train", "test"), progress=True,
                           command="benchmarks/rag_quality.py")
    db = rag.RagDatabase.load(db_dir)
    test_tracks = []
    for ti, name in enumerate(db.track_names):
        meta = json.loads((Path(args.data) / name / "metadata.json").read_text())
        frames = db.track_offsets[ti + 1] - db.track_offsets[ti]
        if meta["split"] == "test" and frames / 100 >= args.query_seconds + db.config.min_remaining_seconds:
            test_tracks.append((ti, name))
    if not test_tracks:
        raise SystemExit("no test track is long enough")
    q_frames = int(round(args.query_seconds * 100))
    queries = []
    for ti, name in test_tracks:
        audio = load_audio(Path(args.data) / name / "stems" / "Guitar.flac", max_seconds=3600).audio
        q = rag.analyze_query(audio[: int(args.query_seconds * 16000)], db, decoder)
        truth = np.flatnonzero((db.chunk_track == ti) & (db.chunk_start == q_frames))
        queries.append((name, q, int(truth[0]) if len(truth) else -1))

    rng = np.random.default_rng(args.seed)
    variants = {"context": 1.0, "segment": 0.0, "blend": 0.5}
    rows, result = [], {"test_queries": len(queries), "db_chunks": db.n_chunks, "variants": {}}
    for label, lam in variants.items():
        vdb = replace(db, config=replace(db.config, context_weight=lam))
        hits, rr, top_pj, top_lj, rnd_pj, rnd_lj = 0, [], [], [], [], []
        for _, q, truth in queries:
            cands = rag.retrieve(vdb, q, 100, continuation_seconds=args.continuation_seconds)
            chunks = [c.chunk for c in cands]
            rank = chunks.index(truth) + 1 if truth in chunks else None
            hits += rank is not None and rank <= 10
            rr.append(1.0 / rank if rank else 0.0)
            top = cands[0]
            if top.seam_pitch_jump_cents is not None and not np.isnan(top.seam_pitch_jump_cents):
                top_pj.append(abs(top.seam_pitch_jump_cents))
            top_lj.append(abs(top.seam_loudness_jump_db))
            pool = np.flatnonzero(db.chunk_remaining >= int(args.continuation_seconds * 100))
            pick = rng.choice(pool, 20, replace=False)
            pj = np.abs(db.seam_pitch[pick] - q.seam_pitch)
            rnd_pj += pj[~np.isnan(pj)].tolist()
            rnd_lj += np.abs(db.seam_loud[pick] - q.seam_loud).tolist()
        res = {"recall_at_10": round(hits / len(queries), 3), "mrr": round(float(np.mean(rr)), 3),
               "top1_pitch_jump_cents_median": round(float(np.median(top_pj)), 1) if top_pj else None,
               "random_pitch_jump_cents_median": round(float(np.median(rnd_pj)), 1),
               "top1_loudness_jump_db_median": round(float(np.median(top_lj)), 2),
               "random_loudness_jump_db_median": round(float(np.median(rnd_lj)), 2)}
        res["pitch_jump_ratio_random_over_top1"] = (
            round(res["random_pitch_jump_cents_median"] / max(res["top1_pitch_jump_cents_median"], 1.0), 1)
            if res["top1_pitch_jump_cents_median"] is not None else None)
        res["loudness_jump_ratio_random_over_top1"] = round(
            res["random_loudness_jump_db_median"] / max(res["top1_loudness_jump_db_median"], 0.1), 1)
        result["variants"][label] = res
        rows.append((label, res))
    print(f"{len(queries)} test queries of {args.query_seconds:g} s; "
          f"database {db.n_chunks} chunks (train+test)")
    print(f"{'relevance':<10}{'recall@10':>10}{'MRR':>7}{'top1 |dp| c':>13}{'rand |dp| c':>13}"
          f"{'top1 |dL| dB':>14}{'rand |dL| dB':>14}")
    for label, r in rows:
        print(f"{label:<10}{r['recall_at_10']:>10.3f}{r['mrr']:>7.3f}{str(r['top1_pitch_jump_cents_median']):>13}"
              f"{r['random_pitch_jump_cents_median']:>13.1f}{r['top1_loudness_jump_db_median']:>14.2f}"
              f"{r['random_loudness_jump_db_median']:>14.2f}")
    best = max(result["variants"], key=lambda k: (result["variants"][k]["mrr"], k == "blend"))
    result["best_variant"] = best
    print(json.dumps(result))


if __name__ == "__main__":
    main()
