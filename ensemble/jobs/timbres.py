"""A timbre-contrast corpus: the same BabyBand melodies played by many General-MIDI programs.

The leader decoder that renders continuations in the user's own sound (:mod:`ensemble.timbre`) learns
one vector per timbre; it needs every timbre to play the *same* melodies, so that what differs between
two timbres' audio is the instrument and nothing else. ``python -m ensemble corpus timbres`` reads the
Guitar (melody) notes of a BabyBand build's tracks, and for each track and each program

* places the melody in the program's comfortable range (whole octaves, median pitch nearest the
  program's centre; the SoundFont's organs sound an octave below the written note and are written an
  octave up),
* renders it with the corpus's SoundFont (:func:`ensemble.jobs.corpus.build.render_notes`), at an RMS
  of -20 dBFS +- 2 dB (seeded), and
* writes a track folder in the corpus layout: ``stems/Leader.flac``, ``features.npz`` (ground-truth
  f0 from the notes, loudness from the audio), ``metadata.json`` with the source track's split, the
  program and its timbre name.

:data:`TRAINED` are the timbres the decoder learns (bowed strings, flute, clarinet, trumpet, nylon and
steel guitar, piano, organ, a voice-like program); :data:`HELD_OUT` are rendered too (``--held-out``)
but never trained on: the timbre benchmark uses them to see what an unseen instrument gets. Tracks are
cut to ``max_seconds``; a finished track is skipped when the command runs again (resumable).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig, loudness_db, n_frames
from ensemble.files import sha256_file, write_json_atomic
from ensemble.jobs.corpus.build import default_soundfont, render_notes
from ensemble.jobs.corpus.layout import NoteList, notes_to_frames, stem_features, write_track
from ensemble.timbre import TimbreConfig

__all__ = ["TimbreProgram", "TRAINED", "HELD_OUT", "TimbreCorpusConfig", "place_melody",
           "build_timbre_corpus", "source_tracks", "soundfont_file"]


@dataclass(frozen=True)
class TimbreProgram:
    """A GM program (0-based), its timbre name and its comfortable range in *sounding* MIDI pitch."""

    program: int
    name: str
    low: int
    high: int
    centre: float
    sounding_shift: int = 0  # written = sounding - sounding_shift (TimGM6mb's organs sound 8vb)


# Checked with TimGM6mb: each sounds at the written pitch (YIN within 0.1 semitone at A3, A4, E5)
# except the organs, an octave low.
TRAINED = (
    TimbreProgram(40, "violin", 57, 93, 74), TimbreProgram(73, "flute", 60, 96, 77),
    TimbreProgram(71, "clarinet", 50, 89, 67), TimbreProgram(56, "trumpet", 55, 82, 69),
    TimbreProgram(24, "nylon guitar", 40, 84, 64), TimbreProgram(25, "steel guitar", 40, 84, 64),
    TimbreProgram(0, "piano", 48, 91, 71), TimbreProgram(16, "organ", 48, 88, 69, sounding_shift=-12),
    TimbreProgram(53, "voice", 55, 81, 67),
)
HELD_OUT = (
    TimbreProgram(41, "viola", 50, 81, 65), TimbreProgram(68, "oboe", 58, 89, 72),
    TimbreProgram(74, "recorder", 60, 91, 74), TimbreProgram(60, "french horn", 41, 77, 60),
    TimbreProgram(65, "alto sax", 49, 81, 65), TimbreProgram(19, "church organ", 43, 84, 67, sounding_shift=-12),
)


@dataclass(frozen=True)
class TimbreCorpusConfig:
    """What ``corpus timbres`` renders.

    Attributes:
        tracks: source tracks per split (the first ones of each split, in track order).
        max_seconds: each rendering is cut to this length.
        seed: decides the level of each rendering.
        held_out: also render :data:`HELD_OUT` (never trained on).
        features: the frame grid.
    """

    tracks: tuple[tuple[str, int], ...] = (("train", 40), ("valid", 6), ("test", 8))
    max_seconds: float = 40.0
    seed: int = 0
    held_out: bool = True
    features: FeatureConfig = FeatureConfig()

    def __post_init__(self) -> None:
        if not 4.0 <= self.max_seconds <= 600.0:
            raise EnsembleError(f"max_seconds {self.max_seconds:g}; allowed: 4..600 s")
        bad = [s for s, n in self.tracks if s not in ("train", "valid", "test") or int(n) < 0]
        if bad:
            raise EnsembleError(f"tracks {self.tracks}; allowed: (split, count >= 0) with split in "
                                "train, valid, test")


def place_melody(pitches: np.ndarray, prog: TimbreProgram) -> int:
    """The whole-octave shift (semitones) that puts the melody's median sounding pitch nearest the
    program's centre, preferring shifts that keep every note inside [low, high]."""
    med = float(np.median(pitches))
    shifts = range(-48, 49, 12)
    fits = [k for k in shifts if pitches.min() + k >= prog.low and pitches.max() + k <= prog.high]
    pool = fits or list(shifts)
    return int(min(pool, key=lambda k: abs(med + k - prog.centre)))


def _render_one(src: Path, meta: dict, prog: TimbreProgram, out: Path, config: TimbreCorpusConfig,
                soundfont: Path, trained: bool) -> dict:
    fc = config.features
    sr = fc.sample_rate
    notes_json = meta["stems"]["Guitar"]["notes"]
    rows = [(on, off, p, v) for on, off, p, v in zip(notes_json["onset_s"], notes_json["offset_s"],
                                                       notes_json["pitch"], notes_json["velocity"], strict=True)
            if on < config.max_seconds - 0.05]
    if len(rows) < 8:
        raise EnsembleError(f"{src.name}: fewer than 8 melody notes in {config.max_seconds:g} s")
    shift = place_melody(np.array([r[2] for r in rows]), prog)
    sounding = NoteList.from_rows([(on, min(off, config.max_seconds), p + shift, v) for on, off, p, v in rows])
    written = NoteList(sounding.onset_s, sounding.offset_s, sounding.pitch - prog.sounding_shift,
                       sounding.velocity)
    n = int(round(config.max_seconds * sr))
    y = render_notes(written, program=prog.program, is_drum=False, n_samples=n, soundfont=soundfont,
                     sample_rate=sr)
    rms = float(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
    if rms <= 1e-7:
        raise EnsembleError(f"{src.name}: program {prog.program} rendered silence")
    rng = np.random.default_rng([config.seed, int(src.name[-5:]) if src.name[-5:].isdigit() else 0, prog.program])
    # the level the runtime renders every input at (ensemble.timbre: the decoder's loudness is absolute)
    gain_db = TimbreConfig.render_level_dbfs + float(rng.uniform(-2, 2)) - 20 * math.log10(rms)
    y = (y * 10 ** (gain_db / 20)).astype(np.float32)
    peak = float(np.abs(y).max())
    if peak > 0.891:  # -1 dBFS ceiling
        y *= np.float32(0.891 / peak)
    feats = stem_features(y, notes_to_frames(sounding, n_frames(n, fc), config=fc), config=fc)
    track_meta = {
        "corpus": "BabyBand timbres", "track": out.name, "split": meta["split"],
        "source_track": src.name, "source": meta.get("source", {}), "timbre": prog.name,
        "program": prog.program, "trained": trained, "octave_shift": shift, "gain_db": round(gain_db, 3),
        "sample_rate": sr, "hop_length": fc.hop_length, "frame_rate": fc.frame_rate,
        "duration_s": round(n / sr, 4), "tempo_bpm": meta.get("tempo_bpm"), "key": meta.get("key"),
        "stems": {"Leader": {"role": "melody", "program": prog.program, "timbre": prog.name,
                             "f0_source": "notes", "notes": sounding.to_json()}},
    }
    write_track(out, stems={"Leader": y}, mix=y, features={"Leader": feats},
                mix_loudness_db=loudness_db(y, config=fc), metadata=track_meta, config=fc)
    return {"track": out.name, "split": meta["split"], "timbre": prog.name, "trained": trained}


def soundfont_file(soundfont: str | os.PathLike | None) -> Path:
    """The SoundFont to render with (default: the corpus's).

    Raises:
        EnsembleError: the file does not exist.
    """
    sf2 = Path(soundfont) if soundfont else default_soundfont()
    if not sf2.is_file():
        raise EnsembleError(f"SoundFont {str(sf2)!r} does not exist")
    return sf2


def source_tracks(source_dir: Path, tracks: tuple[tuple[str, int], ...], stem: str) -> list[tuple[Path, dict]]:
    """The first ``count`` tracks of each ``(split, count)`` of a BabyBand build that have notes for
    ``stem`` -> [(track folder, metadata)] (unreadable metadata is skipped).

    Raises:
        EnsembleError: no track of the build has notes for ``stem``.
    """
    metas = []
    for p in sorted(Path(source_dir).glob("Track*/metadata.json")):
        try:
            meta = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("stems", {}).get(stem, {}).get("notes"):
            metas.append((p.parent, meta))
    if not metas:
        raise EnsembleError(f"{str(source_dir)!r} has no BabyBand tracks with a {stem} part (build one "
                            "with `python -m ensemble corpus build`)")
    chosen = []
    for split, count in tracks:
        chosen += [(d, m) for d, m in metas if m.get("split") == split][:count]
    return chosen


def build_timbre_corpus(source_dir: str | os.PathLike, out_dir: str | os.PathLike,
                        config: TimbreCorpusConfig = TimbreCorpusConfig(), *, command: str = "",
                        soundfont: str | os.PathLike | None = None, say=print) -> dict:
    """Render the source build's melodies through every program (see the module docstring).

    Returns:
        The manifest written to ``<out>/manifest.json``.

    Raises:
        EnsembleError: no source tracks, a missing SoundFont.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    sf2 = soundfont_file(soundfont)
    chosen = source_tracks(source_dir, config.tracks, "Guitar")
    programs = [(p, True) for p in TRAINED] + ([(p, False) for p in HELD_OUT] if config.held_out else [])
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    rows, skipped = [], []
    for i, (src, meta) in enumerate(chosen):
        for prog, trained in programs:
            out = out_dir / f"{src.name}_p{prog.program:03d}"
            if (out / "metadata.json").is_file():
                m = json.loads((out / "metadata.json").read_text())
                rows.append({"track": out.name, "split": m["split"], "timbre": m["timbre"], "trained": m["trained"]})
                continue
            try:
                rows.append(_render_one(src, meta, prog, out, config, sf2, trained))
            except EnsembleError as exc:
                skipped.append(str(exc))
        say(f"{i + 1}/{len(chosen)} source tracks rendered ({time.monotonic() - t0:.0f} s)")
    manifest = {
        "what": "BabyBand melodies rendered by several GM programs (timbre-contrast set)",
        "command": command, "seed": config.seed, "config": {**asdict(config), "features": config.features.to_dict()},
        "source_dir": str(source_dir), "soundfont": sf2.name, "soundfont_sha256": sha256_file(sf2),
        "trained_timbres": [asdict(p) for p in TRAINED],
        "held_out_timbres": [asdict(p) for p in HELD_OUT] if config.held_out else [],
        "tracks": rows, "skipped": skipped, "build_seconds": round(time.monotonic() - t0, 1),
    }
    write_json_atomic(out_dir / "manifest.json", manifest)
    return manifest
