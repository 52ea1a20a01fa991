"""``train decoder|arranger`` and ``eval decoder|arranger``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from ensemble.errors import EnsembleError


def _command_line() -> str:
    return "python -m ensemble " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _train_config(args: argparse.Namespace, **defaults):
    import torch

    from ensemble.jobs.training import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(**defaults)
    overrides = {k: getattr(args, k) for k in ("steps", "batch_size", "window_seconds", "learning_rate",
                                               "seed", "max_minutes") if getattr(args, k) is not None}
    if getattr(args, "fft_sizes", None):
        overrides["fft_sizes"] = tuple(int(x) for x in args.fft_sizes.split(","))
    return replace(cfg, **overrides)


def _train_decoder(args: argparse.Namespace) -> int:
    from ensemble.jobs.training import train_decoder
    from ensemble.models.decoder import DecoderConfig

    timbres = tuple(t.strip() for t in (args.timbres or "").split(",") if t.strip())
    model_cfg = DecoderConfig(instrument=args.instrument, hidden=args.hidden, timbres=timbres)
    meta = train_decoder(args.data, args.instrument, args.out, model_config=model_cfg,
                         train_config=_train_config(args), command=_command_line(),
                         progress=not args.quiet)
    print(json.dumps({k: meta[k] for k in ("name", "steps", "complete", "wall_seconds")}))
    return 0


def _train_arranger(args: argparse.Namespace) -> int:
    from ensemble.jobs.training import train_arranger
    from ensemble.models.arranger import ArrangerConfig

    inputs = tuple(x.strip() for x in args.inputs.split(",") if x.strip())
    cfg = _train_config(args, steps=1500, window_seconds=10.0, learning_rate=5e-4, lr_final=5e-5)
    # the model predicts long clips in windows of the length it was trained on
    model_cfg = ArrangerConfig(inputs=inputs, window_seconds=cfg.window_seconds,
                               overlap_seconds=min(2.0, cfg.window_seconds / 4))
    meta = train_arranger(args.data, args.out, model_config=model_cfg, train_config=cfg,
                          command=_command_line(), progress=not args.quiet, name=args.name)
    print(json.dumps({k: meta[k] for k in ("name", "steps", "complete", "wall_seconds")}))
    return 0


def _print_table(rows: list[tuple], header: tuple) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


def _eval_decoder(args: argparse.Namespace) -> int:
    from ensemble.jobs.training import evaluate_decoder
    from ensemble.models.io import decoder_file

    ckpt = Path(args.checkpoints) / decoder_file(args.instrument)
    res = evaluate_decoder(args.data, ckpt, figure=args.figure, progress=not args.quiet)
    rows = [(name, res["mrstft"][name], res["f0_error_cents_median"].get(name, "-"))
            for name in ("trained", "untrained", "additive_baseline")]
    rows.append(("target (pYIN on the real audio)", "-", res["f0_error_cents_median"].get("target", "-")))
    print(f"decoder {res['instrument']} on the test split: {res['windows']} windows of "
          f"{res['window_seconds']} s")
    _print_table(rows, ("model", "MR-STFT loss", "median |f0 err| (cents)"))
    if res.get("timbres"):
        trows = []
        for name, r in res["timbres"].items():
            m = r["mrstft"]
            gain = 1.0 - m["trained"] / m["additive_baseline"]
            trows.append((name, r["windows"], m["trained"], m["additive_baseline"], f"{100 * gain:.1f} %",
                          r["f0_error_cents_median"].get("trained", "-")))
        print("per timbre:")
        _print_table(trows, ("timbre", "windows", "MR-STFT trained", "additive baseline", "better by",
                             "median |f0 err| (cents)"))
    _write_json(args.json_out, res)
    print(json.dumps(res))
    return 0


def _eval_arranger(args: argparse.Namespace) -> int:
    from ensemble.jobs.training import evaluate_arranger

    ckpt = Path(args.checkpoints) / f"{args.name}.pt"
    res = evaluate_arranger(args.data, ckpt, split=args.split)
    followers = list(next(iter(res["mse_per_follower"].values())))
    rows = [(k, res["mse"][k], *(res["mse_per_follower"][k][f] for f in followers)) for k in res["mse"]]
    print(f"arranger ({','.join(res['inputs'])}) on the {res['split']} split: {res['test_tracks']} tracks, "
          "MSE of normalised loudness")
    _print_table(rows, ("model", "MSE all", *followers))
    _write_json(args.json_out, res)
    print(json.dumps(res))
    return 0


def _write_json(path: str | None, obj: dict) -> None:
    if path:
        from ensemble.files import atomic_write_text

        atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data/babyband", help="corpus directory (default data/babyband)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _train_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--out", default="checkpoints", help="output directory (default checkpoints/)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--window-seconds", type=float)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--max-minutes", type=float, help="wall-time budget; resume by running again")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest when jobs share the cores)")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a decoder or the arranger")
    tsub = train.add_subparsers(dest="what", metavar="MODEL", required=True)
    d = tsub.add_parser("decoder", help="train an instrument decoder")
    d.add_argument("--instrument", required=True)
    d.add_argument("--hidden", type=int, default=256)
    d.add_argument("--fft-sizes", help="MR-STFT sizes, e.g. 2048,1024,512,256,128,64 (larger resolve bass)")
    d.add_argument("--timbres", help="train one decoder conditioned on these timbres of a timbre corpus "
                   "(`corpus timbres`), comma-separated, e.g. 'violin,flute' (default: one timbre)")
    _train_args(d)
    d.set_defaults(func=_train_decoder)
    a = tsub.add_parser("arranger", help="train the arranger")
    a.add_argument("--inputs", default="loudness,onset,f0,voiced",
                   help="leader features, comma-separated subset of loudness,onset,f0,voiced")
    a.add_argument("--name", default="arranger", help="checkpoint name (default arranger)")
    _train_args(a)
    a.set_defaults(func=_train_arranger)

    ev = subparsers.add_parser("eval", help="evaluate a decoder or the arranger on the test split")
    esub = ev.add_subparsers(dest="what", metavar="MODEL", required=True)
    d = esub.add_parser("decoder", help="evaluate an instrument decoder")
    d.add_argument("--instrument", required=True)
    d.add_argument("--checkpoints", default="checkpoints")
    d.add_argument("--figure", help="write a target-vs-resynthesis spectrogram PNG here")
    d.add_argument("--json-out", help="also write the result JSON here")
    _common(d)
    d.set_defaults(func=_eval_decoder)
    a = esub.add_parser("arranger", help="evaluate the arranger")
    a.add_argument("--checkpoints", default="checkpoints")
    a.add_argument("--name", default="arranger")
    a.add_argument("--split", default="test", choices=("test", "valid"),
                   help="tracks to score (choose settings on valid, report test)")
    a.add_argument("--json-out", help="also write the result JSON here")
    _common(a)
    a.set_defaults(func=_eval_arranger)


__all__ = ["register", "EnsembleError"]
