"""``python -m ensemble heldout build --out DIR``: render the held-out query set.

Thin argparse front over :mod:`ensemble.jobs.heldout` (imported only when the command runs, so
building the parser loads no offline job); every check and message lives in the library.
"""

from __future__ import annotations

import argparse
import shlex
import sys

__all__ = ["register"]


def _build(args: argparse.Namespace) -> int:
    from ensemble.jobs.heldout import build_queries

    command = "python -m ensemble " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    qs = build_queries(args.out, n_queries=args.n, seed=args.seed, input_seconds=args.input_seconds,
                       total_seconds=args.total_seconds, classical=not args.no_classical,
                       soundfont=args.soundfont, command=command, overwrite=args.overwrite,
                       on_message=None if args.quiet else lambda m: print(m, file=sys.stderr))
    for q in qs.queries:
        print(f"{q['id']} {q['program']:>3} {q['program_name']:<22} {q['rms_dbfs']:>7.2f} dBFS "
              f"(peak {q['peak_dbfs']:>6.2f}) {q['tempo_bpm']:>6.1f} BPM {q['key']:<9} "
              f"{q['source']['path']}{'' if q['source']['tune'] is None else '#' + str(q['source']['tune'])}")
    print(f"{len(qs.queries)} queries in {qs.out_dir} ({qs.manifest['build_seconds']:.1f} s)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``heldout`` group and its ``build`` subcommand."""
    heldout = subparsers.add_parser("heldout", help="render the held-out query set (benchmarks)",
                                    description="Held-out queries: melodies and instruments the "
                                    "project never trains on, rendered like user uploads.")
    sub = heldout.add_subparsers(dest="heldout_command", metavar="COMMAND")
    heldout.set_defaults(func=lambda args: (heldout.print_help(), 2)[1])
    p = sub.add_parser("build", help="render qNN_*.wav, qNN_*_full.wav and manifest.json",
                       description="Render airdsAirs/miscFolk tunes (and quartet first violins) "
                       "through GM strings, flutes, reeds, brass, piano and organ at 44.1 kHz "
                       "stereo, 24-bit, -35..-6 dBFS. The folder appears complete or not at all.")
    p.add_argument("--out", default="data/heldout", help="folder to create (default data/heldout)")
    p.add_argument("--n", type=int, default=24, help="number of queries (default 24)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input-seconds", type=float, default=20.0, help="length of the upload (default 20)")
    p.add_argument("--total-seconds", type=float, default=30.0,
                   help="length of the _full file: upload + true continuation (default 30)")
    p.add_argument("--no-classical", action="store_true", help="folk tunes only (no quartet violins)")
    p.add_argument("--soundfont", default=None, help="a .sf2 file (default: TimGM6mb.sf2 of pretty_midi)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing set")
    p.add_argument("--quiet", action="store_true", help="do not list skipped sources")
    p.set_defaults(func=_build)
