"""``python -m ensemble study prepare STUDY.yaml --out DIR`` and ``study report DIR``.

A few lines dispatching: the rendering is the offline job :mod:`ensemble.jobs.study_prepare` (imported
only when the command runs); the report is :func:`ensemble.study.analysis.report_from_logs` of the
released logs alone (:func:`ensemble.study.store.released_logs`), its tables
(:func:`ensemble.study.analysis.report_tables`) and the figures of :mod:`ensemble.figures.study` --
what the app's Results tab shows for a study.
"""

from __future__ import annotations

import argparse
import shlex
import sys

__all__ = ["register"]


def _prepare(args: argparse.Namespace) -> int:
    from ensemble.engine import Engine, EngineConfig
    from ensemble.jobs.study_prepare import prepare_study
    from ensemble.study.spec import load_spec

    load_spec(args.study)  # a bad study file is refused before the models load
    command = "python -m ensemble " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    engine = Engine.load(EngineConfig(checkpoints_dir=args.checkpoints, database_dir=args.database,
                                      drums_dir=args.drums))
    out = prepare_study(args.study, args.out, engine, overwrite=args.overwrite, command=command,
                        on_message=lambda m: print(m, file=sys.stderr))
    print(out)
    return 0


def _report(args: argparse.Namespace) -> int:
    import csv
    import io
    from pathlib import Path

    from ensemble.figures.report import write_figure
    from ensemble.figures.study import screening_figure, strengths_figure
    from ensemble.files import atomic_write_text
    from ensemble.ratings.stats import SummaryConfig, summary_json
    from ensemble.study.analysis import format_report, report_from_logs, report_tables
    from ensemble.study.store import released_logs

    folder = Path(args.folder)
    ratings, listening = released_logs(folder)  # the released logs alone: no manifest, no study file
    report = report_from_logs(ratings, listening, config=SummaryConfig(n_bootstrap=args.bootstrap, seed=args.seed),
                              include_flagged=args.include_flagged)
    text = format_report(report)
    out = Path(args.out) if args.out else folder / "report"
    atomic_write_text(out / "report.txt", text + "\n")
    atomic_write_text(out / "report.json", summary_json(report) + "\n")
    for name, (header, rows) in report_tables(report).items():
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([header, *rows])
        atomic_write_text(out / f"{name}.csv", buf.getvalue())
    write_figure(strengths_figure(report), out / "strengths.png")
    write_figure(screening_figure(report), out / "screening.png")
    print(text)
    print(summary_json(report))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``study`` group: ``prepare`` and ``report``."""
    from ensemble.engine import EngineConfig
    from ensemble.ratings.stats import SummaryConfig

    study = subparsers.add_parser("study", help="listening studies: render one, report one",
                                  description="A listening study: a YAML file names the stimuli, conditions "
                                  "and controls; `prepare` renders every round once; the app serves it at "
                                  "?study=NAME; `report` analyses its logs.")
    sub = study.add_subparsers(dest="study_command", metavar="COMMAND")
    study.set_defaults(func=lambda args: (study.print_help(), 2)[1])
    d = EngineConfig()
    p = sub.add_parser("prepare", help="render every round of STUDY.yaml into a study folder",
                       description="Render each stimulus's candidates (per condition), the hidden reference "
                       "and the low anchor once through the engine, loudness-matched, with manifest.json. "
                       "The folder appears complete or not at all.")
    p.add_argument("study", metavar="STUDY.yaml")
    p.add_argument("--out", required=True, help="the study folder to create (under the app's studies root, "
                   "named as the study, to serve it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p.add_argument("--checkpoints", default=d.checkpoints_dir)
    p.add_argument("--database", default=d.database_dir)
    p.add_argument("--drums", default=d.drums_dir)
    p.set_defaults(func=_prepare)
    r = sub.add_parser("report", help="screening, strengths, agreement and tau of a study's logs",
                       description="Rebuild the study's Results (tables and figures) from its released logs "
                       "alone (DIR/logs/ratings.csv and listening.csv, or DIR/ratings.csv and listening.csv): "
                       "writes report.txt, report.json, one CSV per table (screening, strengths, agreement, "
                       "tau, listening), strengths.png and screening.png into DIR/report (or --out) and "
                       "prints the tables and one JSON line.")
    r.add_argument("folder", metavar="DIR")
    r.add_argument("--out", default=None, help="where the report goes (default: DIR/report)")
    r.add_argument("--include-flagged", action="store_true", help="keep raters that screening flags")
    r.add_argument("--bootstrap", type=int, default=SummaryConfig.n_bootstrap, metavar="N")
    r.add_argument("--seed", type=int, default=SummaryConfig.seed)
    r.set_defaults(func=_report)
