"""Statistics of a corpus folder: minutes per stem and split, pitch ranges, loudness histograms.

Works on anything in the layout of :mod:`.layout` (a BabyBand build or an import). Pitch ranges
come from the voiced frames of each stem's ground-truth f0; the loudness histogram counts the
frames of each stem above the silence floor (``SILENCE_DB``), in 10 dB bins.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ensemble.errors import EnsembleError
from ensemble.files import atomic_write
from ensemble.jobs.corpus.layout import SPLITS, TRACK_PATTERN, is_complete_track
from ensemble.music import hz_to_midi

__all__ = ["SILENCE_DB", "LOUDNESS_EDGES", "CorpusStats", "corpus_stats", "format_stats",
           "plot_stats"]

SILENCE_DB = -90.0
# bin edges, dB: (-90, -70], (-70, -60], ... (-10, 0], (0, +inf)
LOUDNESS_EDGES = np.array([SILENCE_DB, -70, -60, -50, -40, -30, -20, -10, 0, np.inf])
_NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


@dataclass
class CorpusStats:
    """Aggregates over every complete track of a corpus folder.

    Attributes:
        root: the folder.
        n_tracks: complete tracks read.
        minutes: {stem: {split: minutes}} -- track duration counted for every stem the track has.
        active_minutes: {stem: minutes} where the stem sounds (voiced or a note/hit sounding).
        split_minutes: {split: minutes} of multitrack audio.
        pitch: {stem: (lowest, highest, mean) MIDI of voiced f0 frames} (absent for unpitched stems).
        loudness_counts: {stem: [len(LOUDNESS_EDGES) - 1] frame counts}.
        problems: messages about tracks that could not be read.
    """

    root: Path
    n_tracks: int = 0
    minutes: dict[str, dict[str, float]] = field(default_factory=dict)
    active_minutes: dict[str, float] = field(default_factory=dict)
    split_minutes: dict[str, float] = field(default_factory=dict)
    pitch: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    loudness_counts: dict[str, np.ndarray] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def corpus_stats(root: str | os.PathLike, *,
                 on_message: Callable[[str], None] | None = None) -> CorpusStats:
    """Read every track folder under ``root`` and aggregate.

    Incomplete or unreadable tracks are reported through ``on_message`` (naming the path) and left
    out.

    Raises:
        EnsembleError: ``root`` is missing, not a folder, or holds no complete track.
    """
    root = Path(root)
    if not root.is_dir():
        raise EnsembleError(f"corpus folder {str(root)!r} does not exist or is not a folder")
    say = on_message or (lambda m: print(m, file=sys.stderr))
    stats = CorpusStats(root=root)
    sums: dict[str, list[float]] = {}  # stem -> [sum midi, n frames, min, max]
    frame_counts: dict[str, float] = {}
    for track in sorted(p for p in root.iterdir() if p.is_dir() and TRACK_PATTERN.match(p.name)):
        if not is_complete_track(track):
            msg = f"warning: {str(track)!r} is incomplete (no metadata.json or missing files); left out"
            stats.problems.append(msg)
            say(msg)
            continue
        try:
            meta = json.loads((track / "metadata.json").read_text())
            with np.load(track / meta["features"]) as npz:
                feats = {k: npz[k] for k in npz.files}
            frame_rate = float(feats["sample_rate"]) / float(feats["hop_length"])
        except (OSError, ValueError, KeyError) as exc:
            msg = f"warning: {str(track)!r} is unreadable ({type(exc).__name__}: {exc}); left out"
            stats.problems.append(msg)
            say(msg)
            continue
        stats.n_tracks += 1
        split = meta.get("split") or "unknown"
        duration_min = float(meta["duration_s"]) / 60.0
        stats.split_minutes[split] = stats.split_minutes.get(split, 0.0) + duration_min
        for stem in meta["stems"]:
            per = stats.minutes.setdefault(stem, {})
            per[split] = per.get(split, 0.0) + duration_min
            f0, voiced = feats.get(f"{stem}/f0_hz"), feats.get(f"{stem}/voiced")
            n_notes, loud = feats.get(f"{stem}/n_notes"), feats.get(f"{stem}/loudness_db")
            if f0 is None or voiced is None or loud is None:
                continue
            active = voiced | (n_notes > 0 if n_notes is not None else False)
            stats.active_minutes[stem] = (stats.active_minutes.get(stem, 0.0)
                                          + float(active.sum()) / frame_rate / 60.0)
            if voiced.any():
                midi = hz_to_midi(f0[voiced])
                acc = sums.setdefault(stem, [0.0, 0.0, np.inf, -np.inf])
                acc[0] += float(midi.sum())
                acc[1] += float(len(midi))
                acc[2] = min(acc[2], float(midi.min()))
                acc[3] = max(acc[3], float(midi.max()))
            counts, _ = np.histogram(loud[loud > SILENCE_DB], bins=LOUDNESS_EDGES)
            stats.loudness_counts[stem] = stats.loudness_counts.get(stem, 0) + counts
            frame_counts[stem] = frame_counts.get(stem, 0.0) + len(loud)
    if stats.n_tracks == 0:
        raise EnsembleError(f"{str(root)!r} holds no complete track folders (TrackNNNNN/metadata.json)")
    for stem, (total, n, lo, hi) in sums.items():
        stats.pitch[stem] = (lo, hi, total / n)
    return stats


def _note_name(midi: float) -> str:
    m = int(round(midi))
    return f"{_NOTE_NAMES[m % 12]}{m // 12 - 1} ({m})"


def _splits_of(stats: CorpusStats) -> list[str]:
    extra = sorted(s for s in stats.split_minutes if s not in SPLITS)
    return [s for s in SPLITS if s in stats.split_minutes] + extra


def format_stats(stats: CorpusStats) -> str:
    """Text tables: minutes per stem and split, pitch range per stem, loudness histogram."""
    splits = _splits_of(stats)
    total = sum(stats.split_minutes.values())
    lines = [f"Corpus {stats.root}: {stats.n_tracks} tracks, {total:.1f} min of multitrack audio ("
             + ", ".join(f"{s} {stats.split_minutes[s]:.1f}" for s in splits) + ")", ""]
    stems = list(stats.minutes)
    w = max([6] + [len(s) for s in stems])
    lines.append("Minutes per stem and split (active = frames where the stem sounds)")
    lines.append(f"{'stem':<{w}} " + " ".join(f"{s:>8}" for s in splits) + f" {'total':>8} {'active':>8}")
    for stem in stems:
        per = stats.minutes[stem]
        lines.append(f"{stem:<{w}} " + " ".join(f"{per.get(s, 0.0):8.1f}" for s in splits)
                     + f" {sum(per.values()):8.1f} {stats.active_minutes.get(stem, 0.0):8.1f}")
    lines += ["", "Pitch range per stem (voiced ground-truth f0 frames)"]
    lines.append(f"{'stem':<{w}} {'lowest':>10} {'highest':>10} {'mean':>6}")
    for stem in stems:
        if stem in stats.pitch:
            lo, hi, mean = stats.pitch[stem]
            lines.append(f"{stem:<{w}} {_note_name(lo):>10} {_note_name(hi):>10} {mean:6.1f}")
        else:
            lines.append(f"{stem:<{w}} {'unpitched':>10} {'':>10} {'':>6}")
    labels = [f"<={int(e)}" for e in LOUDNESS_EDGES[1:-1]] + [">0"]
    lines += ["", f"Loudness histogram per stem (% of frames above {SILENCE_DB:g} dB, A-weighted dB)"]
    lines.append(f"{'stem':<{w}} " + " ".join(f"{lab:>6}" for lab in labels))
    for stem in stems:
        c = np.asarray(stats.loudness_counts.get(stem, np.zeros(len(labels))), dtype=np.float64)
        pct = 100.0 * c / max(1.0, c.sum())
        lines.append(f"{stem:<{w}} " + " ".join(f"{p:6.1f}" for p in pct))
    if stats.problems:
        lines += ["", f"{len(stats.problems)} track folders left out (see the warnings above)"]
    return "\n".join(lines)


def plot_stats(stats: CorpusStats, path: str | os.PathLike) -> Path:
    """A PNG with minutes per stem (stacked by split) and the loudness histograms.

    Uses matplotlib's object API (no pyplot, so no global figure state). Written atomically.

    Raises:
        EnsembleError: ``path`` does not end in .png.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise EnsembleError(f"plot path {str(path)!r} must end in .png")
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    stems = list(stats.minutes)
    bottom = np.zeros(len(stems))
    for split in _splits_of(stats):
        vals = np.array([stats.minutes[s].get(split, 0.0) for s in stems])
        ax1.bar(stems, vals, bottom=bottom, label=split)
        bottom += vals
    ax1.set_ylabel("minutes")
    ax1.set_title(f"{stats.n_tracks} tracks: minutes per stem and split")
    ax1.legend()
    centres = np.array([-80, -65, -55, -45, -35, -25, -15, -5, 5])
    for stem in stems:
        c = np.asarray(stats.loudness_counts.get(stem, np.zeros(len(centres))), dtype=np.float64)
        ax2.plot(centres, 100.0 * c / max(1.0, c.sum()), marker="o", label=stem)
    ax2.set_xlabel("loudness, dB (A-weighted, 10 dB bins)")
    ax2.set_ylabel("% of frames")
    ax2.set_title("loudness histogram per stem")
    ax2.legend()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path
