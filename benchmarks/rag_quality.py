"""RAG quality on BabyBand test tracks: does retrieval find the true continuation, and do its seams
join smoothly?

For every test track whose Guitar stem is long enough: query = the first ``--query-seconds`` (20 s)
of the stem; the database is built from train + test (so the true continuation -- the chunk that
starts at 20.0 s in the same track -- is present). Reports recall@10 and MRR (over the Top-100) of
the true continuation chunk, and the median seam pitch jump (cents) and loudness jump (dB) of the
Top-1 against uniformly random candidates, for three relevance variants (the candidate's preceding
context only, the segment itself only -- the reference design's choice -- and the 50/50 blend) times
three seam rules (``seam_match``: the jump at the join, the distance to the source's own approach,
or the smaller of the two). The configured defaults are marked; the final JSON line holds them all.

    python -m benchmarks.rag_quality [--data data/babyband] [--checkpoints checkpoints]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from ensemble import rag
from ensemble.audio import load_audio
from ensemble.jobs.index import build_database
from ensemble.models.io import load_decoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/babyband")
    parser.add_argument("--checkpoints", default="checkpoints")
    parser.add_argument("--query-seconds", type=float, default=20.0)
    parser.add_argument("--continuation-seconds", type=float, default=10.0)
    parser.add_argument("--split", default="test", choices=("test", "valid"),
                        help="query tracks' split; the database is train + this split. Rules are chosen "
                             "on valid (the shipped assets/rag is train+valid) and reported on test")
    parser.add_argument("--db", help="reuse a train+SPLIT database folder (built if missing)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    decoder, _ = load_decoder(Path(args.checkpoints) / "decoder_Guitar.pt")
    db_dir = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="rag_quality_")) / "db"
    if not (db_dir / "manifest.json").is_file():
        build_database(args.data, db_dir, decoder, splits=("train", args.split), progress=True,
                           command="benchmarks/rag_quality.py")
    db = rag.RagDatabase.load(db_dir)
    if sorted(db.manifest.get("splits", [])) != sorted(["train", args.split]):
        raise SystemExit(f"{db_dir} holds splits {db.manifest.get('splits')}; need train + {args.split}")
    test_tracks = []
    for ti, name in enumerate(db.track_names):
        meta = json.loads((Path(args.data) / name / "metadata.json").read_text())
        frames = db.track_offsets[ti + 1] - db.track_offsets[ti]
        if meta["split"] == args.split and frames / 100 >= args.query_seconds + db.config.min_remaining_seconds:
            test_tracks.append((ti, name))
    if not test_tracks:
        raise SystemExit(f"no {args.split} track is long enough")
    q_frames = int(round(args.query_seconds * 100))
    queries = []
    for ti, name in test_tracks:
        audio = load_audio(Path(args.data) / name / "stems" / "Guitar.flac", max_seconds=3600).audio
        q = rag.analyze_query(audio[: int(args.query_seconds * 16000)], db, decoder)
        truth = np.flatnonzero((db.chunk_track == ti) & (db.chunk_start == q_frames))
        queries.append((name, q, int(truth[0]) if len(truth) else -1))

    pool = np.flatnonzero(db.chunk_remaining >= int(args.continuation_seconds * 100))
    rng = np.random.default_rng(args.seed)
    random_picks = [rng.choice(pool, 20, replace=False) for _ in queries]
    rnd_pj, rnd_lj = [], []
    for (_, q, _), pick in zip(queries, random_picks, strict=True):
        pj = np.abs(db.seam_pitch[pick] - q.seam_pitch)
        rnd_pj += pj[~np.isnan(pj)].tolist()
        rnd_lj += np.abs(db.seam_loud[pick] - q.seam_loud).tolist()
    rnd_pj_med, rnd_lj_med = float(np.median(rnd_pj)), float(np.median(rnd_lj))

    relevance = {"context": 1.0, "segment": 0.0, "blend": 0.5}
    seams = [(p, ld) for p in ("join", "approach", "either") for ld in ("join", "either")]
    rows, result = [], {"split": args.split, "queries": len(queries), "db_chunks": db.n_chunks,
                        "random_pitch_jump_cents_median": round(rnd_pj_med, 1),
                        "random_loudness_jump_db_median": round(rnd_lj_med, 2), "variants": {}}
    for label, lam in relevance.items():
        for pitch_rule, loud_rule in seams:
            vdb = replace(db, config=replace(db.config, context_weight=lam, seam_match=pitch_rule,
                                             loudness_match=loud_rule))
            hits, rr, top_pj, top_lj, truth_fb = 0, [], [], [], 0
            for _, q, truth in queries:
                cands = rag.retrieve(vdb, q, 100, continuation_seconds=args.continuation_seconds)
                chunks = [c.chunk for c in cands]
                rank = chunks.index(truth) + 1 if truth in chunks else None
                hits += rank is not None and rank <= 10
                rr.append(1.0 / rank if rank else 0.0)
                truth_fb += bool(rank) and cands[rank - 1].fallback
                top = cands[0]
                if top.seam_pitch_jump_cents is not None and not np.isnan(top.seam_pitch_jump_cents):
                    top_pj.append(abs(top.seam_pitch_jump_cents))
                top_lj.append(abs(top.seam_loudness_jump_db))
            pj_med = float(np.median(top_pj)) if top_pj else None
            lj_med = float(np.median(top_lj))
            res = {"recall_at_10": round(hits / len(queries), 3), "mrr": round(float(np.mean(rr)), 3),
                   "truth_in_fallback_pass": truth_fb,
                   "top1_pitch_jump_cents_median": round(pj_med, 1) if pj_med is not None else None,
                   "top1_loudness_jump_db_median": round(lj_med, 2),
                   "pitch_jump_ratio_random_over_top1": round(rnd_pj_med / max(pj_med, 1.0), 1)
                   if pj_med is not None else None,
                   "loudness_jump_ratio_random_over_top1": round(rnd_lj_med / max(lj_med, 0.1), 1)}
            name = f"{label}/{pitch_rule}/{loud_rule}"
            result["variants"][name] = res
            rows.append((name, res))
    lam_name = {v: k for k, v in relevance.items()}.get(db.config.context_weight, "blend")
    default = f"{lam_name}/{db.config.seam_match}/{db.config.loudness_match}"
    result["default_variant"] = default
    result["default"] = result["variants"].get(default)
    print(f"{len(queries)} {args.split} queries of {args.query_seconds:g} s; "
          f"database {db.n_chunks} chunks (train+{args.split}); random candidates: |dp| {rnd_pj_med:.0f} c, "
          f"|dL| {rnd_lj_med:.2f} dB (medians)")
    print(f"{'relevance/pitch/loud':<24}{'recall@10':>10}{'MRR':>7}{'top1 |dp| c':>13}{'ratio':>7}"
          f"{'top1 |dL| dB':>14}{'ratio':>7}")
    for name, r in rows:
        mark = "  <- default" if name == default else ""
        print(f"{name:<24}{r['recall_at_10']:>10.3f}{r['mrr']:>7.3f}"
              f"{str(r['top1_pitch_jump_cents_median']):>13}{str(r['pitch_jump_ratio_random_over_top1']):>7}"
              f"{r['top1_loudness_jump_db_median']:>14.2f}{r['loudness_jump_ratio_random_over_top1']:>7}{mark}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
