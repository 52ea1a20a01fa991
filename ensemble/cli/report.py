"""``python -m ensemble report FILE [--seam-at SECONDS] --out DIR``: a clip's report card.

Writes ``DIR/report.png`` (waveform, melody, dynamics, scores) and ``DIR/metrics.json`` (scores,
seam metrics with ``--seam-at``, and the settings that made them), each atomically.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ensemble import __version__
from ensemble.audio import load_audio
from ensemble.errors import EnsembleError
from ensemble.figures.report import figure_png, report_card
from ensemble.files import atomic_write_bytes
from ensemble.metrics import MetricsConfig, analyze_clip, clip_scores, split_at_seam

__all__ = ["register", "run_report"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="report card of a clip: report.png + metrics.json",
        description="Analyse a clip (f0 by pYIN, RMS dynamics) and write report.png and "
                    "metrics.json. With --seam-at, [0, SECONDS) is the input and the rest its "
                    "continuation, and the pitch/loudness jumps across the seam are reported.")
    parser.add_argument("file", metavar="FILE", help="audio file (WAV, FLAC, OGG, MP3)")
    parser.add_argument("--seam-at", type=float, default=None, metavar="SECONDS",
                        help="seam time in seconds, strictly inside the clip")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--f0", choices=["pyin", "yin", "crepe"], default="pyin",
                        help="f0 tracker: pyin (reference, default), yin (fast), crepe (needs "
                             "torchcrepe)")
    parser.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    """Analyse ``args.file`` and write the report card and metrics into ``args.out``."""
    config = MetricsConfig()
    loaded = load_audio(args.file, sample_rate=config.features.sample_rate, allow_silent=True)
    analysis = analyze_clip(loaded, config=config, f0_method=args.f0, cache=None)
    name = Path(args.file).name
    if args.seam_at is not None:
        if not 0.0 < args.seam_at < analysis.duration_s:
            raise EnsembleError(f"--seam-at {args.seam_at:g} s is not inside the clip; allowed: "
                                f"0 < SECONDS < {analysis.duration_s:.3f}")
        clip = split_at_seam(analysis, args.seam_at, config=config)
        scores, seam = clip.scores, clip.seam
    else:
        clip, scores, seam = analysis, clip_scores(analysis, config=config), None
    png = figure_png(report_card(clip, config=config, title=f"Report card: {name}"))

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise EnsembleError(f"--out {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "file": str(args.file),
        "sha256": analysis.sha256,
        "silent": bool(loaded.silent),
        "f0_method": analysis.f0_method,
        "has_pitch": analysis.has_pitch,
        "scores": scores.to_dict(),
        "seam": seam.to_dict() if seam is not None else None,
        "config": config.to_dict(),
        "ensemble_version": __version__,
    }
    # mode=None: owner-only 0o600, as this command has always written them
    atomic_write_bytes(out / "metrics.json", (json.dumps(metrics, indent=2, allow_nan=False) + "\n").encode(),
                       mode=None)
    atomic_write_bytes(out / "report.png", png, mode=None)

    def show(x: float | None, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    print(f"{name}: {scores.duration_s:.2f} s, energy {scores.energy_rms:.4f} RMS "
          f"({show(scores.energy_dbfs, '.1f')} dBFS), dynamics {show(scores.dynamics_db, '.1f')} dB, "
          f"melodic complexity {show(scores.melodic_complexity, '.3f')}, "
          f"voiced {scores.voiced_ratio:.0%}" + ("" if analysis.has_pitch else " (no pitch detected)"))
    if seam is not None:
        jump = (f"{seam.pitch_jump_cents:+.0f} cents" if seam.pitch_jump_cents is not None
                else f"n/a ({seam.pitch_note})")
        print(f"seam at {seam.seam_s:.2f} s: pitch jump {jump}, "
              f"loudness jump {seam.loudness_jump_db:+.1f} dB")
    print(f"wrote {out / 'report.png'} and {out / 'metrics.json'}")
    return 0
