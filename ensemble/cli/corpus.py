"""``python -m ensemble corpus ...``: build BabyBand, import Slakh/BabySlakh and URMP, derived sets, stats.

Thin argparse front over :mod:`ensemble.jobs.corpus`; every check and message lives in the library.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _warn(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _build(args: argparse.Namespace) -> int:
    from ensemble.jobs.corpus import BuildConfig, build_corpus

    config = BuildConfig(minutes=args.minutes, seed=args.seed, soundfont=args.soundfont)
    report = build_corpus(args.out, config, workers=args.workers, progress=not args.quiet,
                          on_message=_warn)
    splits = ", ".join(f"{k} {v:.1f}" for k, v in report.minutes_per_split.items())
    print(f"BabyBand in {report.out_dir}: {len(report.tracks_built) + len(report.tracks_reused)} "
          f"tracks ({len(report.tracks_built)} built, {len(report.tracks_reused)} already there), "
          f"{report.minutes:.1f} min of multitrack audio ({splits}); "
          f"{len(report.skipped)} sources skipped; {report.seconds:.1f} s")
    return 0


def _import_slakh(args: argparse.Namespace) -> int:
    from ensemble.jobs.corpus.importers import ImportConfig, import_slakh

    report = import_slakh(args.path, args.out, ImportConfig(seed=args.seed, f0_method=args.f0),
                          on_message=_warn, progress=not args.quiet)
    print(report.summary())
    return 0


def _import_urmp(args: argparse.Namespace) -> int:
    from ensemble.jobs.corpus.importers import ImportConfig, import_urmp

    report = import_urmp(args.path, args.out, ImportConfig(seed=args.seed, f0_method=args.f0),
                         on_message=_warn, progress=not args.quiet)
    print(report.summary())
    return 0


def _stats(args: argparse.Namespace) -> int:
    from ensemble.jobs.corpus.stats import corpus_stats, format_stats, plot_stats

    stats = corpus_stats(args.dir, on_message=_warn)
    print(format_stats(stats))
    if args.plot:
        path = plot_stats(stats, args.plot)
        print(f"plot written to {path}")
    return 0


def _timbres(args: argparse.Namespace) -> int:
    from ensemble.jobs.timbres import TimbreCorpusConfig, build_timbre_corpus

    config = TimbreCorpusConfig(tracks=(("train", args.train), ("valid", args.valid), ("test", args.test)),
                                max_seconds=args.seconds, seed=args.seed, held_out=not args.no_held_out)
    manifest = build_timbre_corpus(args.source, args.out, config, soundfont=args.soundfont,
                                   command=" ".join(["python -m ensemble", *sys.argv[1:]]), say=_warn)
    print(f"timbre corpus in {args.out}: {len(manifest['tracks'])} renderings, "
          f"{len(manifest['skipped'])} skipped, {manifest['build_seconds']:.0f} s")
    return 0


def _keys_voices(args: argparse.Namespace) -> int:
    from ensemble.jobs.voices import VoiceCorpusConfig, build_voice_corpus

    config = VoiceCorpusConfig(tracks=(("train", args.train), ("valid", args.valid), ("test", args.test)),
                               max_seconds=args.seconds)
    manifest = build_voice_corpus(args.source, args.out, config, soundfont=args.soundfont,
                                  command=" ".join(["python -m ensemble", *sys.argv[1:]]), say=_warn)
    counts = "; ".join(f"{split}: " + ", ".join(f"{k} {v}" for k, v in sorted(per.items()))
                       for split, per in manifest["counts"].items())
    print(f"Keys voice corpus in {args.out}: {len(manifest['tracks'])} voices from "
          f"{manifest['source_tracks']} tracks ({counts}), {len(manifest['skipped'])} skipped, "
          f"{manifest['build_seconds']:.0f} s")
    return 0


def _rendering_args(p: argparse.ArgumentParser, what: str) -> None:
    """The source, output, tracks per split and length of a corpus re-rendering (timbres, keys-voices)."""
    p.add_argument("--source", required=True, help="a BabyBand build (e.g. data/babyband_xl)")
    p.add_argument("--out", required=True, help="output folder")
    for split, n in (("train", 40), ("valid", 6), ("test", 8)):
        p.add_argument(f"--{split}", type=int, default=n, help=f"source tracks of the {split} split (default {n})")
    p.add_argument("--seconds", type=_positive_float, default=40.0, help=f"length of each {what} (default 40)")
    p.add_argument("--soundfont", default=None, help="a .sf2 file (default: TimGM6mb.sf2 of pretty_midi)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``corpus`` group and its subcommands."""
    corpus = subparsers.add_parser("corpus", help="build, import and inspect multitrack corpora",
                                   description="Build, import and inspect multitrack corpora.")
    sub = corpus.add_subparsers(dest="corpus_command", metavar="COMMAND")
    corpus.set_defaults(func=lambda args: (corpus.print_help(), 2)[1])

    p = sub.add_parser("build", help="render the BabyBand corpus from music21's scores",
                       description="Arrange Bach chorales, Essen folksongs and Nottingham reels for "
                       "Guitar/Bass/Keys/Drums and render them with TimGM6mb.sf2 at 16 kHz. "
                       "Resumable: finished tracks in --out are kept.")
    p.add_argument("--out", required=True, help="corpus folder (created; resumed if it exists)")
    p.add_argument("--minutes", type=_positive_float, default=60.0,
                   help="minutes of multitrack audio to build (default 60)")
    p.add_argument("--seed", type=int, default=0, help="seed for pieces, splits and arrangements")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: os.cpu_count())")
    p.add_argument("--soundfont", default=None, help="a .sf2 file (default: TimGM6mb.sf2 of pretty_midi)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_build)

    for name, fn, what in (("import-slakh", _import_slakh,
                            "a Slakh2100/BabySlakh track folder or a folder of them"),
                           ("import-urmp", _import_urmp,
                            "a URMP piece folder (NN_Title_inst_inst) or the folder of pieces")):
        p = sub.add_parser(name, help=f"convert {what} into the corpus layout",
                           description=f"Convert {what} into the corpus layout (16 kHz stems, "
                           "features.npz, metadata.json). Finished tracks are skipped.")
        p.add_argument("path", help=what)
        p.add_argument("--out", required=True, help="output corpus folder")
        p.add_argument("--seed", type=int, default=0, help="seed for splits when the source has none")
        p.add_argument("--f0", choices=("pyin", "yin"), default="pyin",
                       help="tracker for stems without MIDI/annotations (default pyin; yin is fast)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=fn)

    p = sub.add_parser("timbres", help="render BabyBand melodies through many GM programs",
                       description="The timbre-contrast set: each source track's Guitar melody rendered "
                       "by every trained (and held-out) program, in the corpus layout (stem 'Leader'). "
                       "Resumable: finished renderings are kept.")
    _rendering_args(p, "rendering")
    p.add_argument("--seed", type=int, default=0, help="seed of the levels")
    p.add_argument("--no-held-out", action="store_true", help="skip the held-out programs")
    p.set_defaults(func=_timbres)

    p = sub.add_parser("keys-voices", help="render each BabyBand Keys voice on its own",
                       description="Split each source track's Keys part into monophonic voices (voice 0 "
                       "= the top note of each chord) and render every voice alone with the track's "
                       "Keys program and gain, in the corpus layout (stem 'Keys'). Resumable.")
    _rendering_args(p, "voice")
    p.set_defaults(func=_keys_voices)

    p = sub.add_parser("stats", help="minutes, pitch ranges and loudness of a corpus",
                       description="Minutes per stem and split, pitch range per stem and a loudness "
                       "histogram, as text tables.")
    p.add_argument("dir", help="corpus folder")
    p.add_argument("--plot", default=None, help="also write a PNG summary here")
    p.set_defaults(func=_stats)
