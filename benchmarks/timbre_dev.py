"""Benchmark (development split): choosing the continuity rule's settings for the timbre issue.

The timbre benchmark (:mod:`benchmarks.timbre`) reports on the even-numbered held-out queries; the
settings it reports were chosen here, on the **odd-numbered** ones only (the script refuses an
even query). Each variant is a set of :class:`ensemble.conform.ContinuityConfig` fields overriding
the engine's; every (query, program) upload of the timbre set is extended 20 s -> 30 s (K = ``--k``,
Drums only, ``timbre="auto"``) under each variant, and the timbre position of every candidate is
measured exactly as :mod:`benchmarks.timbre` measures it (its functions). Prints per variant the
median position on trained and held-out programs, of rank 1, and the median extend time, and a
final JSON line (also written to ``--json-out``, with every row).

    python -m benchmarks.timbre_dev --variants '{"base": {"sound_cost_per_db": 0}, ...}' \\
        [--queries q01,q03,...] [--k 3] [--json-out PATH]
    python -m benchmarks.timbre_dev --merge a.json b.json --json-out PATH   # runs over parts of the queries
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEV_QUERIES = tuple(f"q{i:02d}" for i in range(1, 24, 2))


def continuity_variants(parser: argparse.ArgumentParser, text: str):
    """``--variants`` (a JSON object: name -> ContinuityConfig fields) read and applied to the shipped
    engine -> (variants, engine, {name: EngineConfig}); a bad one ends with the parser's message."""
    from ensemble.engine import Engine, EngineConfig
    from ensemble.errors import EnsembleError

    try:
        variants = json.loads(text)
        assert isinstance(variants, dict) and variants and all(isinstance(v, dict) for v in variants.values())
    except (ValueError, AssertionError):
        parser.error(f"--variants {text!r}: allowed: a JSON object of name -> {{field: value}}")
    engine = Engine.load(EngineConfig(checkpoints_dir=str(ROOT / "checkpoints"),
                                      database_dir=str(ROOT / "assets" / "rag"),
                                      drums_dir=str(ROOT / "assets" / "drums")))
    base = engine.config
    try:
        configs = {name: replace(base, continuity=replace(base.continuity, **ov)) for name, ov in variants.items()}
    except (TypeError, EnsembleError) as e:
        parser.error(f"--variants: {e}")
    return variants, engine, configs


def write_variants_result(module: str, args: argparse.Namespace, *, variants: dict, queries: list[str],
                          versions: dict, summary: dict, wall_s: float, rows: list[dict]) -> None:
    """A variants run's JSON (its command, settings, summary and every row) written to
    ``args.json_out``; its summary printed as the final JSON line."""
    from ensemble.files import write_json_atomic

    result = {"command": f"python -m benchmarks.{module} " + " ".join(
                  f"--{k.replace('_', '-')} {v!r}" for k, v in vars(args).items() if v not in ("", None)),
              "variants": variants, "k": args.k, "seed": args.seed, "queries": queries, "versions": versions,
              "summary": summary, "wall_s": round(wall_s, 1), "rows": rows}
    write_json_atomic(args.json_out, result)
    print(json.dumps({k: result[k] for k in ("queries", "variants", "summary", "wall_s")}))


def _summary(rows: list[dict], variants: list[str]) -> dict:
    out = {}
    for name in variants:
        r = [x for x in rows if x["variant"] == name]
        med = {}
        for label, keep in (("trained", True), ("held_out", False)):
            ps = [x["position"] for x in r if x["trained"] == keep and x["position"] is not None]
            med[label] = round(statistics.median(ps), 4) if ps else None
            med[f"{label}_n"] = len(ps)
        top = [x["position"] for x in r if x["rank"] == 1 and x["position"] is not None]
        med["rank1"] = round(statistics.median(top), 4) if top else None
        walls = [x["extend_s"] for x in r if x["rank"] == 1]
        med["extend_s_median"] = round(statistics.median(walls), 3) if walls else None
        out[name] = med
    return out


def _print(summary: dict) -> None:
    print(f"{'variant':<12} {'trained':>8} {'held-out':>9} {'rank 1':>7} {'extend s':>9}")
    for name, m in summary.items():
        print(f"{name:<12} {m['trained']!s:>8} {m['held_out']!s:>9} {m['rank1']!s:>7} {m['extend_s_median']!s:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", default=str(ROOT / "data" / "heldout"))
    parser.add_argument("--queries", default=",".join(DEV_QUERIES), help="comma-separated odd query ids")
    parser.add_argument("--variants", default='{"base": {}}',
                        help="JSON object: variant name -> ContinuityConfig fields to override")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--merge", nargs="+", help="merge these runs' JSON (same variants) instead of running")
    parser.add_argument("--json-out", default=str(ROOT / "benchmarks" / "results" / "timbre_dev.json"))
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from ensemble.files import write_json_atomic

    if args.merge:
        runs = [json.loads(Path(p).read_text()) for p in args.merge]
        names = runs[0]["variants"]
        if any(r["variants"] != names for r in runs):
            parser.error("--merge: the runs do not share their variants")
        rows = [x for r in runs for x in r["rows"]]
        result = {**runs[0], "commands": [r["command"] for r in runs], "queries": sorted({x["query"] for x in rows}),
                  "rows": rows, "summary": _summary(rows, list(names)),
                  "wall_s": round(sum(r["wall_s"] for r in runs), 1)}
        result.pop("command", None)
        _print(result["summary"])
        write_json_atomic(args.json_out, result)
        print(json.dumps({k: result[k] for k in ("queries", "variants", "summary", "wall_s")}))
        return

    qids = [q.strip() for q in args.queries.split(",") if q.strip()]
    even = [q for q in qids if not (q[1:].isdigit() and int(q[1:]) % 2 == 1)]
    if even or not qids:
        parser.error(f"--queries {args.queries!r}: the development split is the odd-numbered queries only "
                     f"(q01, q03, ..., q23); {even} would be tuning on the reported split")

    from benchmarks.timbre import SR, WINDOW_S, distance, mfcc_mean, position, query_anchors
    from ensemble.extend import ExtendRequest, extend
    from ensemble.jobs.corpus.build import default_soundfont
    from ensemble.jobs.heldout import load_queries
    from ensemble.jobs.timbres import HELD_OUT, TRAINED

    t_run = time.perf_counter()
    variants, engine, configs = continuity_variants(parser, args.variants)
    base = engine.config
    queries = [q for q in load_queries(args.heldout).queries if q["id"] in set(qids)]
    programs = [*TRAINED, *HELD_OUT]
    trained = {p.name for p in TRAINED}
    sf2 = default_soundfont()
    rows = []
    for q in queries:
        n_in, w = int(round(q["input_seconds"] * SR)), int(WINDOW_S * SR)
        full, tail, anchor_d = query_anchors(q, programs, sf2)
        for p in programs:
            d_self, others = anchor_d[p.program]
            d_other = float(np.median(others))
            for name, cfg in configs.items():
                engine.config = cfg
                t = time.perf_counter()
                ext = extend(engine, full[p.program][:n_in], ExtendRequest(
                    seconds=q["total_seconds"], k=args.k, seed=args.seed, followers=("Drums",), timbre="auto"))
                wall = time.perf_counter() - t
                for rank, lead in enumerate(ext.leaders, start=1):
                    d = distance(tail[p.program], mfcc_mean(lead[n_in:n_in + w]))
                    rows.append({"query": q["id"], "program": p.program, "program_timbre": p.name,
                                 "trained": p.name in trained, "variant": name, "rank": rank,
                                 "timbre": ext.timbre.name, "position": position(d, d_self, d_other),
                                 "extend_s": round(wall, 3)})
        engine.config = base
        print(q["id"], json.dumps(_summary([x for x in rows if x["query"] == q["id"]], list(configs))), flush=True)
    summary = _summary(rows, list(configs))
    _print(summary)
    write_variants_result("timbre_dev", args, variants=variants, queries=qids, versions=engine.versions,
                          summary=summary, wall_s=time.perf_counter() - t_run, rows=rows)


if __name__ == "__main__":
    main()
