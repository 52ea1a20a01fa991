"""``python -m ensemble ratings summary PATH [--json]``: the listening-test statistics of a ratings log.

Prints the tables of :func:`ensemble.ratings.stats.format_summary` (Kendall tau between composite and human
rank with its bootstrap CI, which composite rank listeners put first, mean human rank per composite
rank) and then one JSON line with the same numbers; ``--json`` prints only the JSON line.
"""

from __future__ import annotations

import argparse

from ensemble.errors import EnsembleError
from ensemble.ratings.log import read_ratings
from ensemble.ratings.stats import SummaryConfig, format_summary, summarize, summary_json

__all__ = ["register", "run_summary", "EnsembleError"]


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


def run_summary(args: argparse.Namespace) -> int:
    """Print the summary of the log at ``args.path``; a missing or corrupt log raises EnsembleError."""
    config = SummaryConfig(n_bootstrap=args.bootstrap, seed=args.seed)
    summary = summarize(read_ratings(args.path), config)
    if not args.json:
        print(f"ratings log {args.path}")
        print(format_summary(summary))
    print(summary_json(summary))
    return 0
