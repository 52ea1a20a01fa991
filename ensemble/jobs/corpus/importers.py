"""Importers that convert real multitrack datasets into the corpus layout of :mod:`.layout`.

* **Slakh2100 / BabySlakh** -- a track folder holds ``metadata.yaml`` (``stems: {S00: {inst_class,
  program_num, is_drum, audio_rendered, midi_saved, ...}}``), ``stems/Sxx.flac|wav``,
  ``MIDI/Sxx.mid`` and ``mix.flac|wav``. Tracks sit directly under the given folder or under
  ``train/``, ``validation/``, ``test/`` (whose names become the split; ``omitted/`` holds Slakh's
  duplicates and is skipped). ``inst_class`` maps to the corpus stem names (Piano, Organ and
  Chromatic Percussion become **Keys**, the builder's name; the class is kept in the metadata); two
  stems of one class become ``Guitar``, ``Guitar_2``. f0 comes from the stem's MIDI file (the top
  sounding note), else from pYIN (or YIN with ``f0_method="yin"``). CREPE is not installed here.
* **URMP** -- a piece folder ``NN_Title_inst1_inst2...`` holds ``AuMix_*.wav``,
  ``AuSep_<k>_<inst>_NN_Title.wav`` and ``F0s_<k>_<inst>_NN_Title.txt`` (``time f0`` lines, 5 ms
  hop, 0 = unvoiced). The annotation is read onto the 10 ms grid (log-interpolated between voiced
  points, voicing from the nearest annotation point); without it pYIN/YIN is used.

Audio is resampled to 16 kHz mono and all stems of a track padded to one length. Bad input never
stops an import: a missing or unreadable file or an unreadable ``metadata.yaml`` is reported
(naming the path) and that stem or track is skipped. A folder in neither layout raises
:class:`EnsembleError`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ensemble.audio import load_audio
from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig, f0_pyin, f0_yin, loudness_db, n_frames
from ensemble.jobs.corpus.layout import (
    FORMAT_VERSION,
    NoteList,
    clean_partials,
    is_complete_track,
    note_summary,
    notes_to_frames,
    split_for,
    stem_features,
    unique_stem_name,
    write_track,
)
from ensemble.music import hz_to_midi

__all__ = [
    "SLAKH_STEM_NAMES",
    "URMP_INSTRUMENTS",
    "ImportConfig",
    "ImportReport",
    "import_slakh",
    "import_urmp",
    "find_slakh_tracks",
    "find_urmp_pieces",
]

SLAKH_STEM_NAMES = {
    "Piano": "Keys", "Organ": "Keys", "Chromatic Percussion": "Keys", "Guitar": "Guitar",
    "Bass": "Bass", "Drums": "Drums", "Strings": "Strings", "Strings (continued)": "Strings",
    "Ensemble": "Ensemble", "Brass": "Brass", "Reed": "Reed", "Pipe": "Pipe",
    "Synth Lead": "SynthLead", "Synth Pad": "SynthPad", "Synth Effects": "SynthFX",
    "Sound Effects": "Other", "Sound effects": "Other", "Ethnic": "Ethnic", "Percussive": "Percussive",
}
# URMP instrument code -> (stem name, the nearest GM program)
URMP_INSTRUMENTS = {
    "vn": ("Violin", 40), "va": ("Viola", 41), "vc": ("Cello", 42), "db": ("DoubleBass", 43),
    "fl": ("Flute", 73), "ob": ("Oboe", 68), "cl": ("Clarinet", 71), "sax": ("Saxophone", 65),
    "bn": ("Bassoon", 70), "tpt": ("Trumpet", 56), "hn": ("Horn", 60), "tbn": ("Trombone", 57),
    "tba": ("Tuba", 58),
}
_SPLIT_FOLDERS = {"train": "train", "validation": "valid", "valid": "valid", "test": "test",
                  "omitted": "omitted"}
_MAX_SECONDS = 3600.0
_URMP_PIECE = re.compile(r"^(\d+)_([^_]+)_([a-z_]+)$")
_URMP_SEP = re.compile(r"^AuSep_(\d+)_([a-z]+)_(\d+)_(.+)\.(wav|flac)$")


@dataclass(frozen=True)
class ImportConfig:
    """Settings shared by the importers.

    Attributes:
        seed: seeds the split of sources that come without one.
        f0_method: ``"pyin"`` (reference, slow) or ``"yin"`` for stems with neither MIDI nor
            annotation.
        split_fractions: train/valid/test shares for sources without a split.
        features: the frame grid.
    """

    seed: int = 0
    f0_method: str = "pyin"
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def __post_init__(self) -> None:
        if self.f0_method not in ("pyin", "yin"):
            raise EnsembleError(f"f0_method {self.f0_method!r} is not one of 'pyin', 'yin'")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise EnsembleError(f"seed must be a non-negative integer, got {self.seed!r}")
        split_for("check", 0, self.split_fractions)


@dataclass
class ImportReport:
    """What an import did: tracks written, tracks already there, messages about skipped input."""

    dataset: str
    out_dir: Path
    imported: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    minutes: float = 0.0

    def summary(self) -> str:
        return (f"{self.dataset} -> {self.out_dir}: {len(self.imported)} tracks imported "
                f"({self.minutes:.1f} min), {len(self.reused)} already there, "
                f"{len(self.messages)} problems reported")


def _default_say(msg: str) -> None:
    print(msg, file=sys.stderr)


def _tracker_truth(audio: np.ndarray, method: str, config: FeatureConfig) -> dict[str, np.ndarray]:
    if method == "pyin":
        f0, voiced, _ = f0_pyin(audio, config=config)
    else:
        f0, voiced = f0_yin(audio, config=config)
    return _truth_from_f0(f0, voiced)


def _truth_from_f0(f0: np.ndarray, voiced: np.ndarray) -> dict[str, np.ndarray]:
    """Frame truth when only a (monophonic) f0 is known: one 'note' wherever voiced."""
    voiced = np.asarray(voiced, dtype=bool)
    onset = voiced & ~np.concatenate([[False], voiced[:-1]])
    return {"f0_hz": np.where(voiced, f0, 0.0).astype(np.float32), "voiced": voiced,
            "n_notes": voiced.astype(np.uint8), "onset": onset}


def _pad_all(stems: dict[str, np.ndarray], mix: np.ndarray | None) -> tuple[dict, np.ndarray, bool]:
    """Pad every stem (and the mix) with zeros to the longest; a missing mix is the stem sum."""
    n = max([len(a) for a in stems.values()] + ([len(mix)] if mix is not None else []))
    stems = {k: np.pad(a, (0, n - len(a))) for k, a in stems.items()}
    if mix is None:
        return stems, np.sum(list(stems.values()), axis=0).astype(np.float32), True
    return stems, np.pad(mix, (0, n - len(mix))), False


def _f0_summary(f0: np.ndarray, voiced: np.ndarray) -> dict:
    if not voiced.any():
        return {"pitch_min": None, "pitch_max": None, "pitch_mean": None}
    midi = hz_to_midi(f0[voiced])
    return {"pitch_min": int(np.floor(midi.min() + 0.5)), "pitch_max": int(np.floor(midi.max() + 0.5)),
            "pitch_mean": round(float(midi.mean()), 2)}


def _finish(out: Path, name: str, stems: dict[str, np.ndarray], mix: np.ndarray,
            truths: dict[str, dict[str, np.ndarray]], metadata: dict, midi: dict | None,
            config: FeatureConfig) -> float:
    """Compute loudness, write the track; returns its duration in seconds."""
    feats = {s: stem_features(stems[s], truths[s], config=config) for s in stems}
    for s, entry in metadata["stems"].items():
        entry["polyphonic"] = bool(feats[s]["n_notes"].max() > 1)
        if entry.get("pitch_min") is None and not entry["is_drum"]:
            entry.update(_f0_summary(feats[s]["f0_hz"], feats[s]["voiced"]))
    duration = len(mix) / config.sample_rate
    metadata["duration_s"] = round(duration, 4)
    write_track(out / name, stems=stems, mix=mix, features=feats,
                mix_loudness_db=loudness_db(mix, config=config), metadata=metadata, midi=midi,
                config=config)
    return duration


def _base_metadata(corpus: str, name: str, source: dict, split: str, split_key: str,
                   config: ImportConfig) -> dict:
    fc = config.features
    return {"format_version": FORMAT_VERSION, "corpus": corpus, "track": name, "source": source,
            "split": split, "split_key": split_key, "seed": config.seed,
            "sample_rate": fc.sample_rate, "hop_length": fc.hop_length, "frame_rate": fc.frame_rate,
            "duration_s": None, "tempo_bpm": None, "beat_bpm": None, "time_signature": None,
            "key": None, "soundfont": None, "stems": {}}


def _copy_writer(src: Path) -> Callable[[Path], None]:
    return lambda dst: shutil.copyfile(src, dst)


# --------------------------------------------------------------------------------------------
# Slakh


def _find_layout(path: str | os.PathLike, marker: Callable[[Path], bool], what: str,
                 expected: str) -> list[tuple[Path, str | None]]:
    root = Path(path)
    if not root.exists():
        raise EnsembleError(f"{what} path {str(root)!r} does not exist")
    if not root.is_dir():
        raise EnsembleError(f"{what} path {str(root)!r} is not a folder")
    if marker(root):
        return [(root, None)]
    found: list[tuple[Path, str | None]] = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if marker(child):
            found.append((child, None))
            continue
        split = _SPLIT_FOLDERS.get(child.name.lower())
        for grand in sorted(p for p in child.iterdir() if p.is_dir()):
            if marker(grand):
                found.append((grand, split))
    if not found:
        raise EnsembleError(f"{str(root)!r} is neither {expected}")
    return found


def find_slakh_tracks(path: str | os.PathLike) -> list[tuple[Path, str | None]]:
    """Slakh track folders under ``path`` with their split folder's split (or None).

    Raises:
        EnsembleError: ``path`` is missing or in neither Slakh layout.
    """
    return _find_layout(
        path, lambda p: (p / "metadata.yaml").is_file(), "Slakh",
        "a Slakh track (no metadata.yaml) nor a folder of Slakh tracks "
        "(TrackNNNNN/metadata.yaml, optionally under train/validation/test)")


def _find_audio(folder: Path, stem_id: str) -> Path | None:
    for ext in (".flac", ".wav"):
        p = folder / f"{stem_id}{ext}"
        if p.is_file():
            return p
    return None


def _midi_notes(path: Path, drums: bool) -> tuple[NoteList, float | None, str | None]:
    """Notes of every instrument in a MIDI file, its first tempo and time signature."""
    import pretty_midi

    try:
        pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # noqa: BLE001 -- mido/pretty_midi raise many types on a bad file
        raise EnsembleError(f"MIDI file {str(path)!r} is unreadable ({type(exc).__name__}: {exc})"
                            ) from None
    insts = [i for i in pm.instruments if i.is_drum == drums] or pm.instruments
    rows = [(n.start, n.end, n.pitch, n.velocity) for i in insts for n in i.notes if n.end > n.start]
    _, tempi = pm.get_tempo_changes()
    tempo = float(tempi[0]) if len(tempi) else None
    ts = pm.time_signature_changes
    sig = f"{ts[0].numerator}/{ts[0].denominator}" if ts else None
    return NoteList.from_rows(rows), tempo, sig


def _load_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise EnsembleError(f"{str(path)!r} is not readable YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("stems"), dict):
        raise EnsembleError(f"{str(path)!r} has no 'stems' mapping; allowed: Slakh metadata.yaml")
    return data


def _import_slakh_track(folder: Path, split_hint: str | None, out: Path, name: str,
                        config: ImportConfig, say: Callable[[str], None]) -> float:
    fc = config.features
    meta_yaml = _load_yaml(folder / "metadata.yaml")
    audio_dir = folder / str(meta_yaml.get("audio_dir") or "stems")
    midi_dir = folder / str(meta_yaml.get("midi_dir") or "MIDI")
    stems: dict[str, np.ndarray] = {}
    truths: dict[str, dict[str, np.ndarray]] = {}
    entries: dict[str, dict] = {}
    midi_files: dict[str, Callable[[Path], None]] = {}
    tempo = sig = None
    pending_tracker: list[str] = []
    for stem_id in sorted(meta_yaml["stems"]):
        info = meta_yaml["stems"][stem_id] or {}
        if info.get("audio_rendered") is False:
            continue  # Slakh lists stems it did not render; there is no audio to import
        path = _find_audio(audio_dir, stem_id)
        if path is None:
            say(f"warning: {str(audio_dir / (stem_id + '.flac'))!r} (or .wav) is missing; "
                f"stem {stem_id} skipped")
            continue
        try:
            audio = load_audio(path, sample_rate=fc.sample_rate, max_seconds=_MAX_SECONDS).audio
        except EnsembleError as exc:
            say(f"warning: stem {stem_id} skipped: {exc}")
            continue
        is_drum = bool(info.get("is_drum", False))
        inst_class = str(info.get("inst_class", "Other"))
        base = "Drums" if is_drum else SLAKH_STEM_NAMES.get(inst_class, "Other")
        sname = unique_stem_name(base, stems)
        stems[sname] = audio
        program = info.get("program_num")
        entry = {"role": None, "program": None if program is None else int(program),
                 "program_name": info.get("midi_program_name"), "is_drum": is_drum, "gain_db": None,
                 "inst_class": inst_class, "slakh_stem": stem_id,
                 "plugin_name": info.get("plugin_name")}
        notes = None
        midi_path = midi_dir / f"{stem_id}.mid"
        if info.get("midi_saved", True) and midi_path.is_file():
            try:
                notes, t, s = _midi_notes(midi_path, is_drum)
                tempo, sig = tempo or t, sig or s
                midi_files[sname] = _copy_writer(midi_path)
            except EnsembleError as exc:
                say(f"warning: {exc}; f0 of stem {stem_id} from {config.f0_method} instead")
        elif not is_drum:
            say(f"note: {str(midi_path)!r} is missing; f0 of stem {stem_id} from {config.f0_method}")
        entry["notes_source"] = notes
        entries[sname] = entry
        if notes is None and not is_drum:
            pending_tracker.append(sname)
    if not stems:
        raise EnsembleError(f"Slakh track {str(folder)!r} has no readable stems")
    mix = None
    for ext in (".flac", ".wav"):
        if (folder / f"mix{ext}").is_file():
            try:
                mix = load_audio(folder / f"mix{ext}", sample_rate=fc.sample_rate,
                                 max_seconds=_MAX_SECONDS).audio
            except EnsembleError as exc:
                say(f"warning: {exc}; the mix is rebuilt as the sum of the stems")
            break
    stems, mix, mix_is_sum = _pad_all(stems, mix)
    t = n_frames(len(mix), fc)
    for sname, entry in entries.items():
        notes = entry.pop("notes_source")
        if notes is not None:
            truths[sname] = notes_to_frames(notes, t, config=fc, pitched=not entry["is_drum"])
            entry["f0_source"] = "none" if entry["is_drum"] else "midi"
            entry.update(note_summary(notes))
            entry["notes"] = notes.to_json()
        elif entry["is_drum"]:
            truths[sname] = notes_to_frames(NoteList.from_rows([]), t, config=fc, pitched=False)
            entry["f0_source"] = "none"
            entry.update(note_summary(NoteList.from_rows([])))
        else:
            truths[sname] = _tracker_truth(stems[sname], config.f0_method, fc)
            entry["f0_source"] = config.f0_method
            entry.update({"n_notes": None, "pitch_min": None, "pitch_max": None,
                          "pitch_mean": None, "velocity_mean": None})
    uuid = meta_yaml.get("UUID") or meta_yaml.get("uuid")
    split_key = f"slakh:{uuid or folder.name}"
    split = split_hint or split_for(split_key, config.seed, config.split_fractions)
    source = {"dataset": "slakh", "path": str(folder), "original_track": folder.name,
              "uuid": uuid, "mix_is_sum_of_stems": mix_is_sum}
    metadata = _base_metadata("Slakh", name, source, split, split_key, config)
    metadata["tempo_bpm"] = None if tempo is None else round(tempo, 3)
    metadata["time_signature"] = sig
    metadata["stems"] = entries
    return _finish(out, name, stems, mix, truths, metadata, midi_files, fc)


def _source_path(track_dir: Path) -> str | None:
    try:
        meta = json.loads((track_dir / "metadata.json").read_text())
    except (OSError, ValueError):
        return None
    return (meta.get("source") or {}).get("path")


def _run_import(dataset: str, items: list[tuple[Path, str | None]], out_dir: str | os.PathLike,
                name_of: Callable[[int, Path], str], one: Callable, config: ImportConfig,
                on_message: Callable[[str], None] | None, progress: bool) -> ImportReport:
    from filelock import FileLock, Timeout
    from tqdm import tqdm

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EnsembleError(f"output {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    report = ImportReport(dataset=dataset, out_dir=out)

    def say(msg: str) -> None:
        report.messages.append(msg)
        (on_message or _default_say)(msg)

    lock = FileLock(str(out / ".build.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise EnsembleError(f"another build or import is writing into {str(out)!r}") from None
    try:
        clean_partials(out)
        seconds = 0.0
        for k, (folder, split) in enumerate(tqdm(items, desc=dataset, unit="track",
                                                  disable=not progress)):
            name = name_of(k, folder)
            if is_complete_track(out / name):
                held = _source_path(out / name)
                if held == str(folder):
                    report.reused.append(name)
                else:
                    say(f"warning: {str(out / name)!r} already holds a track from {held!r}; "
                        f"{str(folder)!r} not imported (import it into another folder)")
                continue
            if split == "omitted":
                say(f"note: {str(folder)!r} is in Slakh's omitted/ (a duplicate); not imported")
                continue
            try:
                duration = one(folder, split, out, name, config, say)
            except EnsembleError as exc:
                say(f"warning: skipped {str(folder)!r}: {exc}")
                continue
            report.imported.append(name)
            seconds += duration
        report.minutes = seconds / 60.0
        return report
    finally:
        lock.release()


def import_slakh(path: str | os.PathLike, out_dir: str | os.PathLike,
                 config: ImportConfig = ImportConfig(), *,
                 on_message: Callable[[str], None] | None = None,
                 progress: bool = False) -> ImportReport:
    """Convert Slakh2100 / BabySlakh tracks into the corpus layout.

    Args:
        path: one track folder (with ``metadata.yaml``) or a folder of them, optionally split into
            ``train/ validation/ test/ omitted/``.
        out_dir: output corpus folder; a track keeps its Slakh name (``Track00001``).
        on_message: receives each warning (default: stderr).
        progress: show a tqdm bar.

    Raises:
        EnsembleError: ``path`` is missing or in neither layout; another import holds ``out_dir``.
    """
    items = find_slakh_tracks(path)

    def name_of(k: int, folder: Path) -> str:
        return folder.name if re.match(r"^Track\d{5}$", folder.name) else f"Track{k:05d}"

    return _run_import("slakh", items, out_dir, name_of, _import_slakh_track, config, on_message,
                       progress)


# --------------------------------------------------------------------------------------------
# URMP


def find_urmp_pieces(path: str | os.PathLike) -> list[tuple[Path, str | None]]:
    """URMP piece folders (those holding ``AuSep_*`` files) under ``path``.

    Raises:
        EnsembleError: ``path`` is missing or in neither URMP layout.
    """
    def marker(p: Path) -> bool:
        return any(_URMP_SEP.match(f.name) for f in p.glob("AuSep_*"))
    return _find_layout(path, marker, "URMP",
                        "a URMP piece folder (no AuSep_* files) nor a folder of URMP pieces "
                        "(NN_Title_inst_inst/AuSep_k_inst_NN_Title.wav)")


def _read_f0s(path: Path, t: int, config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """URMP ``time f0`` annotation (5 ms hop) -> (f0_hz [T], voiced [T]) on the frame grid."""
    try:
        data = np.loadtxt(path, ndmin=2, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise EnsembleError(f"F0 annotation {str(path)!r} is unreadable ({exc})") from None
    if data.shape[1] < 2 or len(data) < 2 or not np.all(np.isfinite(data[:, :2])):
        raise EnsembleError(f"F0 annotation {str(path)!r} has shape {data.shape}; "
                            "allowed: rows of 'time f0' (seconds, Hz)")
    times, hz = data[:, 0], data[:, 1]
    order = np.argsort(times)
    times, hz = times[order], hz[order]
    ft = np.arange(t) / config.frame_rate
    idx = np.clip(np.searchsorted(times, ft), 1, len(times) - 1)
    nearest = np.where(np.abs(times[idx - 1] - ft) <= np.abs(times[idx] - ft), idx - 1, idx)
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.005
    voiced = (hz[nearest] > 0) & (np.abs(times[nearest] - ft) <= step)
    v = hz > 0
    if v.sum() >= 2:
        f0 = np.exp(np.interp(ft, times[v], np.log(hz[v])))
    else:
        f0 = np.full(t, hz[v][0] if v.any() else 0.0)
    return np.where(voiced, f0, 0.0).astype(np.float32), voiced


def _import_urmp_piece(folder: Path, split_hint: str | None, out: Path, name: str,
                       config: ImportConfig, say: Callable[[str], None]) -> float:
    fc = config.features
    seps = [(m, f) for f in sorted(folder.glob("AuSep_*")) if (m := _URMP_SEP.match(f.name))]
    stems: dict[str, np.ndarray] = {}
    entries: dict[str, dict] = {}
    f0_files: dict[str, Path | None] = {}
    title = None
    for m, path in sorted(seps, key=lambda mf: int(mf[0].group(1))):
        k, code, number, title = m.group(1), m.group(2), m.group(3), m.group(4)
        try:
            audio = load_audio(path, sample_rate=fc.sample_rate, max_seconds=_MAX_SECONDS).audio
        except EnsembleError as exc:
            say(f"warning: track {k} ({code}) skipped: {exc}")
            continue
        base, program = URMP_INSTRUMENTS.get(code, (code.upper(), None))
        if code not in URMP_INSTRUMENTS:
            say(f"note: unknown URMP instrument code {code!r} in {str(path)!r}; stem named {base}")
        sname = unique_stem_name(base, stems)
        stems[sname] = audio
        f0_path = folder / f"F0s_{k}_{code}_{number}_{title}.txt"
        f0_files[sname] = f0_path if f0_path.is_file() else None
        if f0_files[sname] is None:
            say(f"note: {str(f0_path)!r} is missing; f0 of {sname} from {config.f0_method}")
        entries[sname] = {"role": None, "program": program,
                          "program_name": None if program is None else _gm_name(program),
                          "is_drum": False, "gain_db": None, "urmp_track": int(k),
                          "urmp_instrument": code}
    if not stems:
        raise EnsembleError(f"URMP piece {str(folder)!r} has no readable AuSep_* stems")
    mix = None
    mixes = sorted(folder.glob("AuMix_*"))
    if mixes:
        try:
            mix = load_audio(mixes[0], sample_rate=fc.sample_rate, max_seconds=_MAX_SECONDS).audio
        except EnsembleError as exc:
            say(f"warning: {exc}; the mix is rebuilt as the sum of the stems")
    stems, mix, mix_is_sum = _pad_all(stems, mix)
    t = n_frames(len(mix), fc)
    truths = {}
    for sname, entry in entries.items():
        f0_path = f0_files[sname]
        truth = None
        if f0_path is not None:
            try:
                truth = _truth_from_f0(*_read_f0s(f0_path, t, fc))
                entry["f0_source"] = "annotation"
                entry["f0_file"] = f0_path.name
            except EnsembleError as exc:
                say(f"warning: {exc}; f0 of {sname} from {config.f0_method} instead")
        if truth is None:
            truth = _tracker_truth(stems[sname], config.f0_method, fc)
            entry["f0_source"] = config.f0_method
        truths[sname] = truth
        entry.update({"n_notes": None, "pitch_min": None, "pitch_max": None, "pitch_mean": None,
                      "velocity_mean": None})
    pm = _URMP_PIECE.match(folder.name)
    number = int(pm.group(1)) if pm else None
    split_key = f"urmp:{(title or folder.name).lower()}"
    split = split_hint or split_for(split_key, config.seed, config.split_fractions)
    source = {"dataset": "urmp", "path": str(folder), "piece": folder.name, "number": number,
              "title": title, "mix_is_sum_of_stems": mix_is_sum}
    metadata = _base_metadata("URMP", name, source, split, split_key, config)
    metadata["stems"] = entries
    return _finish(out, name, stems, mix, truths, metadata, None, fc)


def _gm_name(program: int) -> str:
    import pretty_midi

    return pretty_midi.program_to_instrument_name(program)


def import_urmp(path: str | os.PathLike, out_dir: str | os.PathLike,
                config: ImportConfig = ImportConfig(), *,
                on_message: Callable[[str], None] | None = None,
                progress: bool = False) -> ImportReport:
    """Convert URMP pieces into the corpus layout.

    Args:
        path: one piece folder (``01_Jupiter_vn_vc``) or the folder holding them.
        out_dir: output corpus folder; piece ``NN`` becomes ``Track000NN`` (a folder not named
            ``NN_Title_...`` becomes ``Track9xxxx`` by its position).
        on_message: receives each warning (default: stderr).
        progress: show a tqdm bar.

    Raises:
        EnsembleError: ``path`` is missing or in neither layout; another import holds ``out_dir``.
    """
    items = find_urmp_pieces(path)

    def name_of(k: int, folder: Path) -> str:
        m = _URMP_PIECE.match(folder.name)
        return f"Track{int(m.group(1)):05d}" if m else f"Track{90000 + k:05d}"

    return _run_import("urmp", items, out_dir, name_of, _import_urmp_piece, config, on_message,
                       progress)
