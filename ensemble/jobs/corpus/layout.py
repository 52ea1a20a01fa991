"""The on-disk layout every corpus track shares, and the atomic writer that produces it.

A corpus folder holds one folder per track, Slakh-style::

    DIR/corpus.json                  what built the folder (config, seed, summary)
    DIR/TrackNNNNN/mix.flac          [n_samples] 16 kHz mono PCM-16, the sum of the stems
    DIR/TrackNNNNN/stems/<Stem>.flac one per instrument, all exactly n_samples long
    DIR/TrackNNNNN/MIDI/<Stem>.mid   the notes each stem plays (builder and Slakh imports)
    DIR/TrackNNNNN/features.npz      frame-level ground truth on the project grid (see below)
    DIR/TrackNNNNN/metadata.json     source, split, key, tempo, programs, note ranges, notes

``features.npz`` keys (every array [T] with ``T = 1 + n_samples // hop_length``)::

    sample_rate, hop_length      0-d int arrays (16000, 160 = 100 frames/s)
    stems                        [S] str, the stem names in metadata order
    mix/loudness_db              A-weighted loudness of the mix, dB (features.loudness_db)
    <Stem>/f0_hz                 float32 Hz, 0 where unvoiced. From the notes when there are notes
                                 (the *top* note when several sound at once), else from annotations
                                 (URMP) or pYIN/YIN; always 0 for drums
    <Stem>/voiced                bool, a pitched note sounds (or the annotation/tracker says voiced)
    <Stem>/loudness_db           float32 dB, features.loudness_db of the stem as stored
    <Stem>/n_notes               uint8, notes sounding in the frame (> 1 = polyphonic; drums count
                                 hits); without notes (URMP annotations, pYIN/YIN) it is 1 where
                                 voiced, else 0
    <Stem>/onset                 bool, a note (or drum hit) starts nearest this frame; without notes,
                                 where voicing begins

Frame ``t`` is centred on sample ``t * hop_length`` (time ``t / frame_rate`` s); a note sounding over
``[start, end)`` seconds covers the frames whose centre falls inside that interval.

``metadata.json`` is written last; a track folder exists under its final name only once every file
in it is complete (it is assembled in a hidden ``.TrackNNNNN.partial-*`` folder and renamed), so a
killed build never leaves a track that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig, loudness_db, n_frames
from ensemble.files import atomic_write, write_json_atomic

__all__ = [
    "FORMAT_VERSION",
    "SPLITS",
    "TRACK_PATTERN",
    "NoteList",
    "notes_to_frames",
    "split_for",
    "stem_features",
    "write_track",
    "is_complete_track",
    "list_tracks",
    "clean_partials",
    "load_track",
    "Track",
    "unique_stem_name",
    "note_summary",
]

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
TRACK_PATTERN = re.compile(r"^Track\d{5}$")
_PARTIAL_PREFIX = "."
_PARTIAL_MARK = ".partial-"


@dataclass(frozen=True)
class NoteList:
    """Notes of one stem, in seconds.

    Attributes:
        onset_s: [N] float64 note starts, seconds from the track start.
        offset_s: [N] float64 note ends (key release), seconds; ``offset_s > onset_s``.
        pitch: [N] int MIDI note numbers (drums: GM percussion keys).
        velocity: [N] int MIDI velocities 1..127.
    """

    onset_s: np.ndarray
    offset_s: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.onset_s)
        if not (len(self.offset_s) == len(self.pitch) == len(self.velocity) == n):
            raise EnsembleError(
                f"note arrays differ in length: onset {n}, offset {len(self.offset_s)}, "
                f"pitch {len(self.pitch)}, velocity {len(self.velocity)}")

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[float, float, int, int]]) -> NoteList:
        """Build from ``(onset_s, offset_s, pitch, velocity)`` rows, sorted by onset then pitch."""
        rows = sorted(rows, key=lambda r: (r[0], r[2]))
        if not rows:
            return cls(np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))
        a = np.asarray(rows, dtype=np.float64)
        return cls(a[:, 0], a[:, 1], a[:, 2].astype(np.int64), a[:, 3].astype(np.int64))

    def __len__(self) -> int:
        return len(self.onset_s)

    def to_json(self) -> dict:
        """Lists rounded to 0.1 ms, for metadata.json."""
        return {"onset_s": [round(float(x), 4) for x in self.onset_s],
                "offset_s": [round(float(x), 4) for x in self.offset_s],
                "pitch": [int(x) for x in self.pitch],
                "velocity": [int(x) for x in self.velocity]}


def notes_to_frames(notes: NoteList, n_frames_total: int, *, config: FeatureConfig = FeatureConfig(),
                    pitched: bool = True) -> dict[str, np.ndarray]:
    """Frame-level ground truth from notes.

    Args:
        notes: the stem's notes (seconds).
        n_frames_total: T, the track's frame count.
        pitched: False for drums (f0 stays 0 and nothing is voiced).

    Returns:
        ``f0_hz`` [T] float32 (the highest sounding note, Hz; 0 where none), ``voiced`` [T] bool,
        ``n_notes`` [T] uint8 (notes sounding), ``onset`` [T] bool (a note starts nearest the frame).
    """
    fr = config.frame_rate
    top = np.full(n_frames_total, -1, dtype=np.int64)
    count = np.zeros(n_frames_total + 1, dtype=np.int64)
    onset = np.zeros(n_frames_total, dtype=bool)
    for start, end, pitch in zip(notes.onset_s, notes.offset_s, notes.pitch, strict=True):
        # frames whose centre t / fr lies in [start, end)
        i0 = max(0, int(np.ceil(start * fr - 1e-9)))
        i1 = min(n_frames_total, int(np.ceil(end * fr - 1e-9)))
        if i1 > i0:
            top[i0:i1] = np.maximum(top[i0:i1], pitch)
            count[i0] += 1
            count[i1] -= 1
        k = int(round(start * fr))
        if 0 <= k < n_frames_total:
            onset[k] = True
    sounding = np.clip(np.cumsum(count)[:n_frames_total], 0, 255).astype(np.uint8)
    if pitched:
        voiced = top >= 0
        f0 = np.where(voiced, 440.0 * 2.0 ** ((top - 69) / 12.0), 0.0).astype(np.float32)
    else:
        voiced = np.zeros(n_frames_total, dtype=bool)
        f0 = np.zeros(n_frames_total, dtype=np.float32)
    return {"f0_hz": f0, "voiced": voiced, "n_notes": sounding, "onset": onset}


def stem_features(audio: np.ndarray, frame_truth: dict[str, np.ndarray], *,
                  config: FeatureConfig = FeatureConfig()) -> dict[str, np.ndarray]:
    """One stem's arrays for features.npz: ``frame_truth`` (f0_hz, voiced, n_notes, onset) + loudness.

    Args:
        audio: [n_samples] float mono at ``config.sample_rate``.
        frame_truth: arrays of length ``T = n_frames(len(audio))``.

    Raises:
        EnsembleError: when an array's length is not T.
    """
    t = n_frames(len(audio), config)
    out = {}
    for key in ("f0_hz", "voiced", "n_notes", "onset"):
        arr = np.asarray(frame_truth[key])
        if arr.shape != (t,):
            raise EnsembleError(f"{key} has shape {arr.shape}; allowed: ({t},) for {len(audio)} samples")
        out[key] = arr
    out["loudness_db"] = loudness_db(np.asarray(audio, dtype=np.float32), config=config)
    return out


def note_summary(notes: NoteList) -> dict:
    """Note count, pitch range and mean pitch, velocity mean, for metadata.json."""
    if len(notes) == 0:
        return {"n_notes": 0, "pitch_min": None, "pitch_max": None, "pitch_mean": None,
                "velocity_mean": None}
    return {"n_notes": int(len(notes)), "pitch_min": int(notes.pitch.min()),
            "pitch_max": int(notes.pitch.max()),
            "pitch_mean": round(float(notes.pitch.mean()), 2),
            "velocity_mean": round(float(notes.velocity.mean()), 1)}


def split_for(key: str, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """Deterministic train/valid/test split of a source piece (same key + seed, same split).

    A SHA-1 of ``seed`` and ``key`` gives a number in [0, 1) compared with the cumulative fractions,
    so splits do not depend on which other pieces are in the build.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise EnsembleError(f"split fractions {fractions} must be three non-negative numbers summing to 1")
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "valid"
    return "test"


def unique_stem_name(name: str, taken: Iterable[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... if already taken (two guitars in one Slakh track)."""
    taken = set(taken)
    if name not in taken:
        return name
    k = 2
    while f"{name}_{k}" in taken:
        k += 1
    return f"{name}_{k}"


def _write_flac(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    atomic_write(path, lambda tmp: sf.write(str(tmp), clipped, sample_rate, format="FLAC",
                                       subtype="PCM_16"))


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a name
            np.savez_compressed(fh, **arrays)
    atomic_write(path, write)


def write_track(track_dir: str | os.PathLike, *, stems: dict[str, np.ndarray], mix: np.ndarray,
                features: dict[str, dict[str, np.ndarray]], mix_loudness_db: np.ndarray,
                metadata: dict, midi: dict[str, Callable[[Path], None]] | None = None,
                config: FeatureConfig = FeatureConfig()) -> Path:
    """Write one complete track folder atomically.

    The folder is assembled as ``.<name>.partial-<pid>`` next to its final place (each file itself
    written to a temp name and renamed), ``metadata.json`` last, then renamed to ``track_dir``; an
    incomplete folder already at ``track_dir`` is replaced.

    Args:
        track_dir: final folder, e.g. ``DIR/Track00012``.
        stems: name -> [n_samples] float audio, all the same length.
        mix: [n_samples] float audio.
        features: name -> arrays from :func:`stem_features`.
        mix_loudness_db: [T] loudness of the mix.
        metadata: JSON-able dict; ``stems``/``mix``/``features`` file entries are filled in here.
        midi: optional name -> ``write(path)`` callables that write a MIDI file.

    Returns:
        The final track folder.

    Raises:
        EnsembleError: stems of different lengths, no stems, or a feature of the wrong length.
    """
    track_dir = Path(track_dir)
    if not stems:
        raise EnsembleError(f"track {str(track_dir)!r} has no stems; at least one is needed")
    n = len(mix)
    lengths = {name: len(a) for name, a in stems.items()}
    if any(v != n for v in lengths.values()):
        raise EnsembleError(f"stems of {str(track_dir)!r} are not sample-aligned: {lengths}, mix {n}")
    t = n_frames(n, config)
    arrays: dict[str, np.ndarray] = {
        "sample_rate": np.asarray(config.sample_rate), "hop_length": np.asarray(config.hop_length),
        "stems": np.asarray(list(stems), dtype=np.str_),
        "mix/loudness_db": np.asarray(mix_loudness_db, dtype=np.float32)}
    if arrays["mix/loudness_db"].shape != (t,):
        raise EnsembleError(f"mix loudness has shape {arrays['mix/loudness_db'].shape}; allowed: ({t},)")
    for name, feats in features.items():
        for key, value in feats.items():
            if np.shape(value) != (t,):
                raise EnsembleError(f"{name}/{key} has shape {np.shape(value)}; allowed: ({t},)")
            arrays[f"{name}/{key}"] = value

    partial = track_dir.parent / f"{_PARTIAL_PREFIX}{track_dir.name}{_PARTIAL_MARK}{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    (partial / "stems").mkdir(parents=True)
    try:
        for name, audio in stems.items():
            _write_flac(partial / "stems" / f"{name}.flac", audio, config.sample_rate)
        _write_flac(partial / "mix.flac", mix, config.sample_rate)
        for name, write_midi in (midi or {}).items():
            atomic_write(partial / "MIDI" / f"{name}.mid", write_midi)
        _write_npz(partial / "features.npz", arrays)
        meta = dict(metadata)
        meta["mix"] = "mix.flac"
        meta["features"] = "features.npz"
        meta["n_samples"] = int(n)
        meta["n_frames"] = int(t)
        for name, entry in meta.get("stems", {}).items():
            entry["audio"] = f"stems/{name}.flac"
            if midi and name in midi:
                entry["midi"] = f"MIDI/{name}.mid"
        write_json_atomic(partial / "metadata.json", meta)
        if track_dir.exists():
            shutil.rmtree(track_dir)
        os.replace(partial, track_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return track_dir


def is_complete_track(track_dir: str | os.PathLike) -> bool:
    """True when ``metadata.json`` parses and every file it lists exists and is non-empty."""
    track_dir = Path(track_dir)
    try:
        meta = json.loads((track_dir / "metadata.json").read_text())
    except (OSError, ValueError):
        return False
    files = [meta.get("mix"), meta.get("features")]
    files += [s.get("audio") for s in meta.get("stems", {}).values()]
    for rel in files:
        if not rel:
            return False
        p = track_dir / rel
        if not p.is_file() or p.stat().st_size == 0:
            return False
    return True


def list_tracks(root: str | os.PathLike) -> list[Path]:
    """Complete track folders directly under ``root``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and TRACK_PATTERN.match(p.name) and is_complete_track(p))


def clean_partials(root: str | os.PathLike) -> list[Path]:
    """Remove leftovers of killed writes under ``root``: partial track folders and temp files.

    Returns:
        The paths removed.
    """
    root = Path(root)
    removed = []
    if not root.is_dir():
        return removed
    for p in root.iterdir():
        if p.name.startswith(_PARTIAL_PREFIX) and _PARTIAL_MARK in p.name and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        elif p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@dataclass(frozen=True)
class Track:
    """A track read back: its folder, metadata and frame features.

    Attributes:
        path: the track folder.
        metadata: the parsed metadata.json.
        features: features.npz as a dict of arrays (keys as in the module docstring).
    """

    path: Path
    metadata: dict
    features: dict[str, np.ndarray]

    @property
    def stems(self) -> list[str]:
        return list(self.metadata["stems"])

    def audio(self, stem: str | None = None) -> np.ndarray:
        """[n_samples] float32 of ``stem`` (None: the mix)."""
        rel = self.metadata["mix"] if stem is None else self.metadata["stems"][stem]["audio"]
        audio, _ = sf.read(str(self.path / rel), dtype="float32")
        return audio


def load_track(track_dir: str | os.PathLike) -> Track:
    """Read one track folder.

    Raises:
        EnsembleError: the folder is missing, incomplete or its files are unreadable.
    """
    track_dir = Path(track_dir)
    if not is_complete_track(track_dir):
        raise EnsembleError(f"{str(track_dir)!r} is not a complete track folder "
                            "(needs metadata.json and the files it lists)")
    meta = json.loads((track_dir / "metadata.json").read_text())
    try:
        with np.load(track_dir / meta["features"]) as npz:
            feats = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise EnsembleError(f"{str(track_dir / meta['features'])!r} is unreadable ({exc})") from None
    return Track(path=track_dir, metadata=meta, features=feats)
