"""Benchmark: fitting the composite's weights to rankings (Plackett-Luce), with simulated raters.

Candidates are real: the Top-10 of extend runs on the project's 24 held-out queries, read (never
written) from ``data/continuation/v2/q*/results.json`` (``python -m benchmarks.continuation`` writes
them; ``--candidates`` chooses other runs): each candidate's relevance, coherence, hand-set composite
and seam jumps measured on the rendered audio.
A simulated ranking shows K = 5 of one query's candidates to a rater:

* a **PL rater** ranks by a known utility ``u = w_true . z`` (``z``: the sub-scores standardised over
  the pool, seam jumps as |semitones| and |dB|, undefined ones at the mean) plus Gumbel noise, i.e. a
  draw from the Plackett-Luce model;
* a **noise rater** ranks at random.

Each rater gives ``--per-rater`` rankings, so folds that leave raters out hold several rankings each.
For each scenario and seed the table gives the cosine similarity of the fitted weights to the true
ones (both in the fit's standardised units), the held-out Kendall tau of the fitted utility and of the
hand-set composite with intervals resampling raters, and the gain's interval. Then the fit time of
2,000 rankings (one fit, standardisation included; median of ``--repeats`` runs) and of the whole
``fit_log`` (fit + 5 folds + bootstrap + learning curve).

Acceptance (issue 17): >= 200 rankings of K = 5: cosine >= 0.95 and held-out tau above the hand-set
composite's; noise raters: the gain's interval includes 0; the fit of 2,000 rankings < 10 s.

    python -m benchmarks.fit [--seeds 5] [--repeats 5]

Prints a table and a final JSON line; writes ``benchmarks/results/fit.json``.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble.files import write_json_atomic
from ensemble.ratings.fit import RANKABLE, SUBSCORES, FitConfig, fit_log, fit_weights, rankings_from_frame

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "fit.json"
# the known utility of the PL raters, per pool standard deviation (higher = better)
TRUE_WEIGHTS = {"relevance": 0.6, "coherence": 1.0, "seam_pitch_jump": -0.8, "seam_loudness_jump": -0.5}


def load_candidates(pattern: str) -> list[pd.DataFrame]:
    """One frame per query (its candidates' log columns) from every results.json matching ``pattern``."""
    queries = []
    for path in sorted(glob.glob(str(ROOT / pattern))):
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue  # a run being rewritten right now: skip it
        cands = doc.get("candidates") or []
        if len(cands) < 5:
            continue
        queries.append(pd.DataFrame({
            "query": str(Path(path).parent.relative_to(ROOT)),
            "relevance": [c["relevance"] for c in cands],
            "coherence": [c["coherence"] for c in cands],
            "composite": [c["composite"] for c in cands],
            "seam_pitch_jump_cents": [np.nan if c["seam_pitch_jump_cents"] is None else c["seam_pitch_jump_cents"]
                                      for c in cands],
            "seam_loudness_jump_db": [np.nan if c["seam_loudness_jump_db"] is None else c["seam_loudness_jump_db"]
                                      for c in cands],
        }))
    return queries


def pool_z(queries: list[pd.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each RANKABLE feature over the whole pool."""
    pool = pd.concat(queries)
    feats = np.stack([SUBSCORES[n].feature(pool[SUBSCORES[n].column].to_numpy(float)) for n in RANKABLE], 1)
    return np.nanmean(feats, 0), np.nanstd(feats, 0)


def simulate(queries: list[pd.DataFrame], n_rankings: int, *, per_rater: int, k: int, rater: str, seed: int,
             mean: np.ndarray, std: np.ndarray) -> pd.DataFrame:
    """A ratings table of ``n_rankings`` simulated submissions (the columns the fit reads)."""
    rng = np.random.default_rng(seed)
    w = np.array([TRUE_WEIGHTS[n] for n in RANKABLE])
    rows = []
    for r in range(n_rankings):
        q = queries[rng.integers(len(queries))]
        pick = q.iloc[np.sort(rng.choice(len(q), size=k, replace=False))]
        feats = np.stack([SUBSCORES[n].feature(pick[SUBSCORES[n].column].to_numpy(float)) for n in RANKABLE], 1)
        z = np.nan_to_num((feats - mean) / std)
        u = z @ w + rng.gumbel(size=k) if rater == "pl" else rng.gumbel(size=k)
        human = np.empty(k, int)
        human[np.argsort(-u)] = np.arange(1, k + 1)
        comp_rank = np.empty(k, int)
        comp_rank[np.argsort(-pick["composite"].to_numpy())] = np.arange(1, k + 1)
        for i in range(k):
            rows.append({"submission_id": f"s{r:05d}", "rater_id": f"{rater}{r // per_rater:04d}", "k": k,
                         "shown_position": i + 1, "composite_rank": int(comp_rank[i]), "human_rank": int(human[i]),
                         **{c: pick.iloc[i][c] for c in ("composite", "relevance", "coherence",
                                                         "seam_pitch_jump_cents", "seam_loudness_jump_db")}})
    return pd.DataFrame(rows)


def cosine(doc: dict) -> float:
    """Cosine of the fitted weights and the true ones, both per the fit's standard deviation."""
    names = doc["subscores"]
    # true weights are per pool std; per the fit's std: w_raw * std_fit, with w_raw = w_pool / std_pool
    fitted = np.array([doc["weights"][n] for n in names])
    true = np.array([TRUE_WEIGHTS[n] / doc["pool_std"][n] * doc["std"][n] for n in names])
    return float(fitted @ true / np.linalg.norm(fitted) / np.linalg.norm(true))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates", default="data/continuation/v2/q*/results.json",
                    help="results.json files of extend runs (glob, relative to the checkout)")
    ap.add_argument("--sizes", default="200,500,2000", help="rankings per scenario")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per scenario")
    ap.add_argument("--per-rater", type=int, default=5, help="rankings per simulated rater")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5, help="timing repeats of the 2,000-ranking fit")
    ap.add_argument("--l2", type=float, default=FitConfig.l2)
    args = ap.parse_args()

    queries = load_candidates(args.candidates)
    if len(queries) < 5:
        raise SystemExit(f"only {len(queries)} results.json with >= 5 candidates match {args.candidates!r}; "
                         "run `python -m benchmarks.continuation` first")
    mean, std = pool_z(queries)
    pool_std = dict(zip(RANKABLE, map(float, std), strict=True))
    n_cands = sum(len(q) for q in queries)
    print(f"candidates: {n_cands} from {len(queries)} queries ({args.candidates}); K = {args.k}, "
          f"{args.per_rater} rankings per rater, L2 {args.l2:g}")
    print(f"true weights per pool std: {TRUE_WEIGHTS}")
    config = FitConfig(l2=args.l2)
    runs = []
    header = ("rater", "rankings", "seed", "cosine", "tau fitted [95% CI]", "tau hand-set [95% CI]",
              "gain [95% CI]", "0 in gain CI", "fit_log s")
    print("  ".join(header))
    for rater in ("pl", "noise"):
        for n in (int(x) for x in args.sizes.split(",")):
            for seed in range(args.seeds):
                frame = simulate(queries, n, per_rater=args.per_rater, k=args.k, rater=rater,
                                 seed=1000 * seed + n, mean=mean, std=std)
                t = time.perf_counter()
                doc = fit_log(frame, config)
                seconds = time.perf_counter() - t
                doc["pool_std"] = pool_std
                h = doc["held_out"]
                tf, th, g = h["tau"]["fitted"], h["tau"]["hand-set composite"], h["gain_over_hand_set"]
                run = {"rater": rater, "n_rankings": n, "seed": seed,
                       "cosine": cosine(doc) if rater == "pl" else None,
                       "weights": doc["weights"], "tau_fitted": tf, "tau_hand_set": th, "gain": g,
                       "gain_ci_includes_0": g["ci_low"] <= 0.0 <= g["ci_high"],
                       "learning_curve": h["learning_curve"], "fit_log_seconds": round(seconds, 3)}
                runs.append(run)
                cos = "-" if run["cosine"] is None else f"{run['cosine']:.4f}"
                print(f"{rater:5s}  {n:8d}  {seed:4d}  {cos:6s}  "
                      f"{tf['mean']:+.3f} [{tf['ci_low']:+.3f}, {tf['ci_high']:+.3f}]  "
                      f"{th['mean']:+.3f} [{th['ci_low']:+.3f}, {th['ci_high']:+.3f}]  "
                      f"{g['mean']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}]  "
                      f"{'yes' if run['gain_ci_includes_0'] else 'no':3s}  {seconds:.2f}")

    # the fit itself, 2,000 rankings: rankings_from_frame + standardise + L-BFGS
    frame = simulate(queries, 2000, per_rater=args.per_rater, k=args.k, rater="pl", seed=7, mean=mean, std=std)
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        fit_weights(rankings_from_frame(frame), config)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    fit_log(frame, config)
    full = time.perf_counter() - t
    print(f"fit of 2000 rankings (K = {args.k}): median {statistics.median(times):.3f} s over {args.repeats} "
          f"(min {min(times):.3f}); fit_log with 5 folds, bootstrap and learning curve {full:.2f} s")

    pl = [r for r in runs if r["rater"] == "pl" and r["n_rankings"] >= 200]
    noise = [r for r in runs if r["rater"] == "noise"]
    acceptance = {
        "min_cosine_pl_ge200": min(r["cosine"] for r in pl),
        "cosine_ge_0.95_all": all(r["cosine"] >= 0.95 for r in pl),
        "fitted_tau_beats_hand_set_all": all(r["tau_fitted"]["mean"] > r["tau_hand_set"]["mean"] for r in pl),
        "gain_ci_excludes_0_pl_all": all(not r["gain_ci_includes_0"] for r in pl),
        "noise_gain_ci_includes_0": sum(r["gain_ci_includes_0"] for r in noise),
        "noise_runs": len(noise),
        "fit_2000_median_s": round(statistics.median(times), 4),
        "fit_2000_lt_10s": statistics.median(times) < 10.0,
    }
    print("acceptance:", json.dumps(acceptance))
    result = {"benchmark": "fit", "candidates": {"pattern": args.candidates, "queries": len(queries),
                                                 "n": n_cands, "pool_std": pool_std},
              "true_weights": TRUE_WEIGHTS, "k": args.k, "per_rater": args.per_rater, "l2": args.l2,
              "runs": runs, "fit_2000_seconds": [round(x, 4) for x in times],
              "fit_log_2000_seconds": round(full, 3), "acceptance": acceptance}
    write_json_atomic(RESULTS, result)
    print(json.dumps({"benchmark": "fit", **acceptance}))


if __name__ == "__main__":
    main()
