"""``perform INPUT --out DIR`` (a band arrangement of a clip) and ``drums build`` (the shipped asset)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace

from ensemble.errors import EnsembleError


def _command_line() -> str:
    return "python -m ensemble " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _gains(text: str | None) -> dict[str, float]:
    """"bass=-3,keys=-6" -> {"bass_gain_db": -3.0, "keys_gain_db": -6.0}."""
    out: dict[str, float] = {}
    if not text:
        return out
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in ("leader", "bass", "drums", "keys"):
            raise EnsembleError(f"gain {item!r}: allowed NAME=DB with NAME in leader, bass, drums, keys")
        try:
            out[f"{name}_gain_db"] = float(value)
        except ValueError:
            raise EnsembleError(f"gain {item!r}: {value!r} is not a number of dB") from None
    return out


def _perform(args: argparse.Namespace) -> int:
    from ensemble.audio import load_audio
    from ensemble.perform import PerformConfig, Performer, write_performance

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = PerformConfig(followers=args.followers, checkpoints_dir=args.checkpoints,
                           drum_db=args.drum_db, seed=args.seed, harmony_model=args.harmony)
    config = replace(config, **_gains(args.gains))
    # read and check the input before loading anything: a bad input fails fast, writes nothing
    loaded = load_audio(args.input, min_seconds=config.min_seconds, max_seconds=config.max_seconds)
    performer = Performer.load(config)
    performance = performer.perform(loaded.audio)
    extra = {"input": {"path": args.input, "source_sample_rate": loaded.source_sample_rate,
                       "source_channels": loaded.source_channels},
             "command": _command_line()}
    out = write_performance(performance, args.out, extra=extra)
    info = performance.info
    if not args.quiet:
        print(f"wrote {out}/mix.wav, stems/{{{','.join(performance.stems)}}}.wav, perform.json")
        print(f"tempo {info['tempo_bpm']} BPM ({info['beat_source']}), key "
              f"{(info['key'] or {}).get('name', '-')}, drums "
              f"{(info['drums'] or {}).get('segment', {}).get('track', '-')}, "
              f"mix peak {info['mix_peak_dbfs']} dBFS, {info['timings_s']['total']:.2f} s")
        for note in info["notes"]:
            print(f"note: {note}")
    print(json.dumps({"out": str(out), "seconds": info["seconds"], "tempo_bpm": info["tempo_bpm"],
                      "key": (info["key"] or {}).get("name"), "mix_peak_dbfs": info["mix_peak_dbfs"],
                      "notes": info["notes"], "timings_s": info["timings_s"]}))
    return 0


def _drums_build(args: argparse.Namespace) -> int:
    from ensemble.jobs.drum_assets import AssetBuildConfig, build_assets

    config = AssetBuildConfig(max_loops_per_track=args.max_loops_per_track, seed=args.seed,
                              ogg_quality=args.ogg_quality)
    manifest = build_assets(args.data, args.out, config=config, command=_command_line(),
                            progress=not args.quiet)
    total = sum(f["bytes"] for f in manifest["files"].values())
    print(json.dumps({"out": args.out, "n_loops": manifest["n_loops"],
                      "loop_seconds": manifest["loops"]["seconds"],
                      "harmony_units": manifest["harmony"]["units"], "bytes": total,
                      "files": {k: v["bytes"] for k, v in manifest["files"].items()}}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("perform", help="arrange bass, drums and keys around a clip",
                              description="Perform a band arrangement (bass + drums + keys) around "
                              "a leader clip; writes DIR/mix.wav, DIR/stems/*.wav, DIR/perform.json.")
    p.add_argument("input", metavar="INPUT", help="leader audio file (WAV/FLAC/OGG/MP3), 2 s to 10 min")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--followers", default="bass,drums,keys",
                   help="comma-separated subset of bass,drums,keys (default all)")
    p.add_argument("--seed", type=int, default=0, help="seed (decoder noise, drum variety)")
    p.add_argument("--checkpoints", default="checkpoints",
                   help="folder with decoder_Bass.pt, decoder_Keys.pt, arranger.pt")
    p.add_argument("--drum-db", default="assets/drums", help="drum database folder")
    p.add_argument("--harmony", default="auto", choices=("auto", "rules", "learned"),
                   help="harmony model (auto: the learned one shipped with the drum database)")
    p.add_argument("--gains", help="mix gains in dB, e.g. bass=-3,keys=-6")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 is steadier on a "
                   "busy machine)")
    p.add_argument("--quiet", action="store_true", help="print only the JSON line")
    p.set_defaults(func=_perform)

    d = subparsers.add_parser("drums", help="build the drum database (and learned harmony model)")
    dsub = d.add_subparsers(dest="what", metavar="COMMAND", required=True)
    b = dsub.add_parser("build", help="cut drum loops and fit the harmony model from a corpus's "
                        "train split")
    b.add_argument("--data", default="data/babyband", help="corpus folder (default data/babyband)")
    b.add_argument("--out", default="assets/drums", help="asset folder (default assets/drums)")
    b.add_argument("--max-loops-per-track", type=int, default=4)
    b.add_argument("--ogg-quality", type=float, default=0.5,
                   help="Vorbis compression level 0 (best) .. 1 (smallest)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_drums_build)
