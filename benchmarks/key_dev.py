"""Benchmark (development split): choosing the continuity rule's key weight.

The continuation benchmark (:mod:`benchmarks.continuation`) reports its untouched queries q06-q23
and all 24; its queries q00-q05 are the development split it names (listened to while v2 was
built). The key weight (:attr:`ensemble.conform.ContinuityConfig.key_cost`) is chosen here, on
**q00-q05 only** (the script refuses any other query). Each variant is a set of
:class:`ensemble.conform.ContinuityConfig` fields overriding the engine's; every query is extended
20 s -> 30 s as the continuation benchmark asks (K = ``--k``, ``--seed``, ``timbre="auto"``; Drums
only, which leaves the leader as it is) and each candidate's leader is measured with that
benchmark's own functions: key continuity (:func:`benchmarks.continuation.key_continuity`) and the
leader level step. Prints per variant the median key continuity, the share >= 0.8, the median
|level step| and the median extend time, and a final JSON line (also written to ``--json-out``).

    python -m benchmarks.key_dev --variants '{"base": {}, "key 1": {"key_cost": 1.0}}' \\
        [--queries q00,q01,...] [--k 10] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_QUERIES = tuple(f"q{i:02d}" for i in range(6))


def _summary(rows: list[dict], variants: list[str]) -> dict:
    out = {}
    for name in variants:
        r = [x for x in rows if x["variant"] == name]
        kc = [x["key_continuity"] for x in r if x["key_continuity"] is not None]
        steps = [abs(x["level_step_db"]) for x in r if x["level_step_db"] is not None]
        walls = [x["extend_s"] for x in r if x["rank"] == 1]
        out[name] = {"key_continuity_median": round(statistics.median(kc), 4) if kc else None,
                     "share_ge_0_8": round(sum(v >= 0.8 for v in kc) / len(r), 3) if r else None,
                     "rank1_key_continuity_median": round(statistics.median(
                         [x["key_continuity"] for x in r if x["rank"] == 1 and x["key_continuity"] is not None]
                         or [float("nan")]), 4),
                     "level_step_abs_db_median": round(statistics.median(steps), 3) if steps else None,
                     "extend_s_median": round(statistics.median(walls), 3) if walls else None, "n": len(r)}
    return out


def _print(summary: dict) -> None:
    print(f"{'variant':<14} {'key med':>8} {'>= 0.8':>7} {'rank 1':>7} {'|step| dB':>9} {'extend s':>9}")
    for name, m in summary.items():
        print(f"{name:<14} {m['key_continuity_median']!s:>8} {m['share_ge_0_8']!s:>7} "
              f"{m['rank1_key_continuity_median']!s:>7} {m['level_step_abs_db_median']!s:>9} "
              f"{m['extend_s_median']!s:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", default=str(ROOT / "data" / "heldout"))
    parser.add_argument("--queries", default=",".join(DEV_QUERIES), help="comma-separated ids among q00-q05")
    parser.add_argument("--variants", default='{"base": {}}',
                        help="JSON object: variant name -> ContinuityConfig fields to override")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", default=str(ROOT / "benchmarks" / "results" / "key_dev.json"))
    args = parser.parse_args()


    qids = [q.strip() for q in args.queries.split(",") if q.strip()]
    bad = [q for q in qids if q not in DEV_QUERIES]
    if bad or not qids:
        parser.error(f"--queries {args.queries!r}: allowed: ids among {', '.join(DEV_QUERIES)} (the "
                     "continuation benchmark's development split)")

    from benchmarks.continuation import SR, key_continuity, level_step_db
    from benchmarks.timbre_dev import continuity_variants, write_variants_result
    from ensemble.audio import load_audio
    from ensemble.extend import ExtendRequest, extend
    from ensemble.jobs.heldout import load_queries

    t_run = time.perf_counter()
    variants, engine, configs = continuity_variants(parser, args.variants)
    base = engine.config
    held = load_queries(args.heldout)
    queries = [q for q in held.queries if q["id"] in set(qids)]
    rows = []
    for q in queries:
        clip = load_audio(held.path(q), sample_rate=SR, allow_silent=False)
        for name, cfg in configs.items():
            engine.config = cfg
            t = time.perf_counter()
            ext = extend(engine, clip.audio, ExtendRequest(seconds=q["total_seconds"], k=args.k, seed=args.seed,
                                                           followers=("Drums",), timbre="auto"))
            wall = time.perf_counter() - t
            xf = ext.crossfade / ext.sample_rate
            seam = ext.seam_seconds + xf / 2
            for rank, lead in enumerate(ext.leaders, start=1):
                rows.append({"query": q["id"], "variant": name, "rank": rank,
                             "key_continuity": key_continuity(lead, seam, xf),
                             "level_step_db": level_step_db(lead, seam, xf), "extend_s": round(wall, 3)})
        engine.config = base
        print(q["id"], json.dumps(_summary([x for x in rows if x["query"] == q["id"]], list(configs))), flush=True)
    summary = _summary(rows, list(configs))
    _print(summary)
    write_variants_result("key_dev", args, variants=variants, queries=qids, versions=engine.versions,
                          summary=summary, wall_s=time.perf_counter() - t_run, rows=rows)


if __name__ == "__main__":
    main()
