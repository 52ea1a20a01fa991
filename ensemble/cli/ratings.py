"""``python -m ensemble ratings summary PATH [--json]``: the listening-test statistics of a ratings log.

Prints the tables of :func:`ensemble.ratings.stats.format_summary` (Kendall tau between composite and human
rank with its bootstrap CI, which composite rank listeners put first, mean human rank per composite
rank) and then one JSON line with the same numbers; ``--json`` prints only the JSON line.

``python -m ensemble ratings fit LOG... --out WEIGHTS.json``: fit the composite's weights to the logged
rankings (Plackett-Luce, :mod:`ensemble.ratings.fit`), evaluate them on held-out raters, print the
tables and write the weights file (atomically, only once everything is computed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ensemble.errors import EnsembleError
from ensemble.ratings.log import read_ratings
from ensemble.ratings.stats import SummaryConfig, format_summary, summarize, summary_json

__all__ = ["register", "run_summary", "run_fit", "EnsembleError"]


def register(subparsers: argparse._SubParsersAction) -> None:
    ratings = subparsers.add_parser("ratings", help="listening-test ratings log: summary statistics")
    rsub = ratings.add_subparsers(dest="what", metavar="COMMAND", required=True)
    summary = rsub.add_parser(
        "summary", help="agreement between composite rank and listeners' rank",
        description="Read a ratings log (ratings.csv) and print Kendall tau per submission with its "
                    "mean and bootstrap CI, the histogram of the composite rank listeners put first, "
                    "and the mean human rank per composite rank; then one JSON line.")
    summary.add_argument("path", metavar="PATH", help="the ratings log, e.g. ratings/ratings.csv")
    summary.add_argument("--json", action="store_true", help="print only the JSON line")
    summary.add_argument("--bootstrap", type=int, default=SummaryConfig.n_bootstrap, metavar="N",
                         help=f"bootstrap resamples per interval (default {SummaryConfig.n_bootstrap})")
    summary.add_argument("--seed", type=int, default=SummaryConfig.seed,
                         help=f"bootstrap seed (default {SummaryConfig.seed})")
    summary.set_defaults(func=run_summary)

    from ensemble.ratings.fit import SUBSCORES, FitConfig

    fit = rsub.add_parser(
        "fit", help="fit the composite's weights to the logged rankings (Plackett-Luce)",
        description="Fit a linear utility over the sub-scores each logged candidate carries to the "
                    "listeners' rankings (L2-regularised Plackett-Luce), report held-out Kendall tau on "
                    "raters left out (beside the hand-set composite and each sub-score, intervals "
                    "resampling raters) and a learning curve, and write the weights file.")
    fit.add_argument("logs", nargs="+", metavar="LOG", help="ratings logs (ratings.csv), older ones too")
    fit.add_argument("--out", required=True, metavar="WEIGHTS.json", help="the weights file to write")
    fit.add_argument("--l2", type=float, default=FitConfig.l2, help=f"L2 penalty (default {FitConfig.l2:g})")
    fit.add_argument("--folds", type=int, default=FitConfig.n_folds,
                     help=f"folds leaving raters out (default {FitConfig.n_folds})")
    fit.add_argument("--bootstrap", type=int, default=FitConfig.n_bootstrap, metavar="N",
                     help=f"rater resamples per interval (default {FitConfig.n_bootstrap})")
    fit.add_argument("--seed", type=int, default=FitConfig.seed, help=f"seed (default {FitConfig.seed})")
    fit.add_argument("--subscores", metavar="A,B",
                     help=f"fit only these sub-scores (default: all the log carries; known: {','.join(SUBSCORES)})")
    fit.add_argument("--no-learning-curve", action="store_true", help="skip the learning curve")
    fit.add_argument("--json", action="store_true", help="print only the JSON line")
    fit.set_defaults(func=run_fit)


def run_summary(args: argparse.Namespace) -> int:
    """Print the summary of the log at ``args.path``; a missing or corrupt log raises EnsembleError."""
    config = SummaryConfig(n_bootstrap=args.bootstrap, seed=args.seed)
    summary = summarize(read_ratings(args.path), config)
    if not args.json:
        print(f"ratings log {args.path}")
        print(format_summary(summary))
    print(summary_json(summary))
    return 0


def run_fit(args: argparse.Namespace) -> int:
    """Fit, print the tables (unless ``--json``) and one JSON line, then write ``--out``."""
    from ensemble.ratings.fit import FitConfig, fit_log, format_fit, read_logs, write_weights

    out = Path(args.out)
    if out.is_dir():
        raise EnsembleError(f"--out {str(out)!r} is a folder; give the weights file's name, e.g. weights.json")
    subscores = None
    if args.subscores:
        subscores = tuple(s.strip() for s in args.subscores.split(",") if s.strip())
    config = FitConfig(l2=args.l2, n_folds=args.folds, n_bootstrap=args.bootstrap, seed=args.seed,
                       subscores=subscores)
    frame, sources = read_logs(args.logs)
    document = fit_log(frame, config, sources=sources, learning_curve=not args.no_learning_curve)
    try:
        write_weights(out, document)
    except OSError as exc:
        raise EnsembleError(f"cannot write the weights file {str(out)!r}: {exc}") from exc
    if not args.json:
        print(format_fit(document))
        print(f"\nwrote {out}")
    print(json.dumps({k: document[k] for k in ("version", "subscores", "weights", "subscores_left_out", "data",
                                               "held_out")}, allow_nan=False, separators=(",", ":")))
    return 0
