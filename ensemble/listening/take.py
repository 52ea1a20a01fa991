"""A candidate as a musician's *take*: one zip with the mix, every stem and the band's parts as MIDI.

What a round keeps for it (:func:`write_take_sources`, called by
:func:`ensemble.listening.round.make_round` while the performance is still in memory), in a folder
of the round's own per candidate::

    stems/<Stem>.flac   the performance's stems as rendered: 16 kHz mono, 16-bit, after the mix gains,
                        before the limiter (FLAC keeps the round's folder small: ~2 MB per 30 s
                        candidate, written in ~0.1 s)
    band.mid            the band's parts (:func:`band_midi`)
    take.json           what the take holds: tempo, the parts' notes per stem, how the drums were read

The zip itself (:func:`write_take_zip`) is made when a rater asks for it, once per candidate, in the
round's folder, written whole or not at all (:func:`ensemble.files.atomic_write`)::

    mix.wav             the mix as the rater heard it: the upload's own sample rate and channel count
                        (:func:`ensemble.outputs.native_mix`), its PCM subtype
    stems/<Stem>.wav    each stem, brought to the mix's sample rate (soxr HQ) so every file of the
                        take lines up sample for sample in a DAW; mono, PCM-24 (the resampled
                        16-bit stem)
    band.mid            one MIDI file, a track per part: Bass, Keys (three voices), Drums (channel 10)
    take.json           as above, plus the candidate's scores and where the segment came from

**MIDI from controls.** Bass and keys are rendered from the harmony plan's f0 controls
(``Performance.plan.bass_f0_hz`` [T] Hz and ``keys_f0_hz`` [3, T] Hz, 0 where a voice rests, on the
100 frames/s grid): :func:`f0_notes` turns each run of frames on one semitone into a note from its
first frame to the frame after its last, its velocity from the stem's own level there; the bass
re-strikes on every beat (the performer dips its loudness before each), so its runs are split at the
plan's beats. ``Performance.plan`` is the plan of the whole output; the input part's bass and keys were
rendered from the input's own plan, which agrees with it except, rarely, in the last beat before the
seam (checked by pitch-tracking the rendered bass of the shipped examples: 1 note of 77 differed).
The MIDI follows ``Performance.plan``. The drums
are written from the performer's own placement (``Performance.drum_hits``,
:func:`ensemble.perform.drums.placed_hits`): the chosen loop's hits (found once on the stored loop,
each called kick, snare or hi-hat by where its energy lies) at the times the performer lays that
loop's beats on the grid -- the same arithmetic that renders the stem, so the MIDI's onsets are the
plan's; the stem only gives each hit its velocity (:func:`placed_drum_notes`). A performance that kept
no placement falls back to hits read from its drum stem (:func:`drum_hits`), said so in ``take.json``.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig
from ensemble.files import atomic_write, atomic_write_bytes, atomic_write_text
from ensemble.perform import Performance
from ensemble.perform.drums import GM_HIHAT, GM_KICK, GM_SNARE, DrumHits, detect_hits

__all__ = ["Note", "f0_notes", "drum_hits", "placed_drum_notes", "band_midi", "write_take_sources",
           "write_take_zip", "MIN_NOTE_SECONDS", "GM_KICK", "GM_SNARE", "GM_HIHAT"]

MIN_NOTE_SECONDS = 0.03  # shorter runs of one semitone are glides or frame noise, not notes
SILENT_DB = -55.0  # a run whose stem stays below this level (dBFS RMS) is not played (no note)
DRUM_NOTE_S = 0.06  # a drum note's length in the MIDI file
_PROGRAMS = {"Bass": 33, "Keys": 4}  # GM: Electric Bass (finger), Electric Piano 1
_STEM_FILES = "stems"


@dataclass(frozen=True)
class Note:
    """One MIDI note: ``pitch`` (MIDI number), ``start_s`` / ``end_s`` (s), ``velocity`` 1..127."""

    pitch: int
    start_s: float
    end_s: float
    velocity: int

    def to_dict(self) -> dict:
        return {"pitch": self.pitch, "start_s": round(self.start_s, 4), "end_s": round(self.end_s, 4),
                "velocity": self.velocity}


def _velocity(level_db: float) -> int:
    """A level (dBFS) as a MIDI velocity: -60 dB -> 1, 0 dB -> 127."""
    if not math.isfinite(level_db):
        return 64
    return int(np.clip(round(1 + 126 * (level_db + 60.0) / 60.0), 1, 127))


def f0_notes(f0_hz: np.ndarray, *, frame_rate: float, level_db: np.ndarray | None = None,
             restrike: np.ndarray | None = None, min_seconds: float = MIN_NOTE_SECONDS) -> list[Note]:
    """The notes of one voice's f0 control curve.

    Args:
        f0_hz: [T] Hz on the frame grid; 0 (or not finite) where the voice rests.
        frame_rate: frames per second (100 on the project's grid).
        level_db: [T] the voice's level on the same frames (dBFS), for the velocities (a run that
            stays below ``SILENT_DB`` is not a note); None: velocity 64, every run a note.
        restrike: frame indices where the voice plays a new note even on the same pitch (the bass
            re-strikes on every beat: ``plan.beat_frames``); None: only pitch changes start notes.
        min_seconds: runs shorter than this are dropped.

    Returns:
        One note per run of consecutive frames whose pitch rounds to one MIDI number (split at
        ``restrike``): from the run's first frame's time (``t / frame_rate``) to its last frame's + one
        frame.

    Raises:
        EnsembleError: ``f0_hz`` not 1-D, ``frame_rate`` not positive, ``level_db`` of another length.
    """
    f0 = np.asarray(f0_hz, np.float64)
    if f0.ndim != 1:
        raise EnsembleError(f"f0_hz has shape {f0.shape}; allowed: [n_frames]")
    if not (isinstance(frame_rate, (int, float)) and math.isfinite(frame_rate) and frame_rate > 0):
        raise EnsembleError(f"frame_rate {frame_rate!r}; allowed: frames per second > 0")
    if level_db is not None and len(level_db) != len(f0):
        raise EnsembleError(f"level_db has {len(level_db)} frames, f0_hz {len(f0)}; they share one grid")
    sounding = np.isfinite(f0) & (f0 > 0)
    pitch = np.full(len(f0), -1, np.int64)
    pitch[sounding] = np.round(69.0 + 12.0 * np.log2(f0[sounding] / 440.0)).astype(np.int64)
    pitch[(pitch < 0) | (pitch > 127)] = -1
    notes = []
    change = np.flatnonzero(np.diff(pitch)) + 1  # first frame of every run but the first
    if restrike is not None:
        extra = np.asarray(restrike, np.int64)
        change = np.union1d(change, extra[(extra > 0) & (extra < len(pitch))])
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(pitch)]])
    for a, b in zip(starts, ends, strict=True):
        if pitch[a] < 0 or (b - a) / frame_rate < min_seconds:
            continue
        level = float(np.max(level_db[a:b])) if level_db is not None else math.nan
        if level < SILENT_DB:  # the control says play, but the voice's stem is silent there
            continue
        notes.append(Note(int(pitch[a]), a / frame_rate, b / frame_rate, _velocity(level)))
    return notes


def drum_hits(audio: np.ndarray, *, sample_rate: int, min_gap_s: float = 0.05,
              threshold_db: float = -40.0) -> list[Note]:
    """Hits read from drum audio (:func:`ensemble.perform.drums.detect_hits`) as notes 60 ms long:
    only for a performance that kept no placed hits (an estimate, said so in ``take.json``).

    Raises:
        EnsembleError: ``audio`` not 1-D or the rate not positive.
    """
    h = detect_hits(audio, sample_rate=sample_rate, min_gap_s=min_gap_s, threshold_db=threshold_db)
    return [Note(int(k), float(t), float(t) + DRUM_NOTE_S, int(v))
            for t, k, v in zip(h.times_s, h.keys, h.velocities, strict=True)]


def placed_drum_notes(hits: DrumHits, stem: np.ndarray, *, sample_rate: int) -> list[Note]:
    """The performer's placed drum hits (:attr:`ensemble.perform.Performance.drum_hits`) as notes 60
    ms long, at exactly their times. The rendered stem only sets each hit's velocity (its RMS over
    the 30 ms from the hit) and drops a hit the arranger's drum level made silent there (below
    :data:`SILENT_DB`)."""
    x = np.asarray(stem, np.float64)
    win = int(round(0.03 * sample_rate))
    notes = []
    for t, key in zip(hits.times_s, hits.keys, strict=True):
        i = int(round(float(t) * sample_rate))
        seg = x[i:i + win]
        level = 10.0 * math.log10(float(np.mean(seg ** 2)) + 1e-12) if len(seg) else -120.0
        if level < SILENT_DB:
            continue
        notes.append(Note(int(key), float(t), float(t) + DRUM_NOTE_S, _velocity(level + 6.0)))
    return notes


def _stem_level(stem: np.ndarray, n_frames: int, features: FeatureConfig) -> np.ndarray:
    """[n_frames] RMS level (dBFS) of a stem per hop on the frame grid, frame t over samples
    ``[t * hop, (t + 1) * hop)`` (padded with silence / cut to ``n_frames``). Plain RMS, not the
    A-weighted loudness: it only sets velocities and tells a sounding note from a silent one, and
    costs nothing beside an STFT per stem per candidate."""
    hop = features.hop_length
    x = np.zeros(n_frames * hop, np.float64)
    stem = np.asarray(stem, np.float64)[: n_frames * hop]
    x[: len(stem)] = stem
    power = (x.reshape(n_frames, hop) ** 2).mean(axis=1)  # [n_frames]
    return (10.0 * np.log10(power + 1e-12)).astype(np.float32)


def band_parts(perf: Performance, *, features: FeatureConfig = FeatureConfig()) -> dict[str, list[Note]]:
    """The band's parts of one performance: "Bass" and "Keys" from the harmony plan's f0 controls
    (the keys' three voices in one part), "Drums" from the hits the performer placed
    (``perf.drum_hits``; read from the stem only for a performance that kept none); a part the
    performance does not have is left out."""
    parts: dict[str, list[Note]] = {}
    fps = features.sample_rate / features.hop_length
    plan = perf.plan
    if plan is not None:
        if "Bass" in perf.stems:
            f0 = np.asarray(plan.bass_f0_hz, np.float64)
            parts["Bass"] = f0_notes(f0, frame_rate=fps, restrike=plan.beat_frames,  # a note per beat
                                     level_db=_stem_level(perf.stems["Bass"], len(f0), features))
        if "Keys" in perf.stems:
            keys = np.asarray(plan.keys_f0_hz, np.float64)  # [3, T]
            level = _stem_level(perf.stems["Keys"], keys.shape[1], features)
            parts["Keys"] = sorted((n for voice in keys for n in f0_notes(voice, frame_rate=fps, level_db=level)),
                                   key=lambda n: (n.start_s, n.pitch))
    if "Drums" in perf.stems:
        stem, sr = perf.stems["Drums"], perf.sample_rate
        parts["Drums"] = (placed_drum_notes(perf.drum_hits, stem, sample_rate=sr) if perf.drum_hits is not None
                          else drum_hits(stem, sample_rate=sr))
    return parts


def band_midi(parts: Mapping[str, list[Note]], *, tempo_bpm: float | None = None) -> bytes:
    """A standard MIDI file of ``parts``: a named track per part, the drums on channel 10.

    Args:
        parts: part name -> notes (``"Drums"`` is percussion).
        tempo_bpm: the tempo written in the file (times are in seconds either way); default 120.
    """
    import pretty_midi  # imported when a take is made: the app's start-up does not pay for it

    tempo = float(tempo_bpm) if tempo_bpm and math.isfinite(tempo_bpm) and tempo_bpm > 0 else 120.0
    # 960 ticks a beat: a tick is at most 0.52 ms at 120 BPM (pretty_midi's 220 would move a hit by 1.1 ms)
    pm = pretty_midi.PrettyMIDI(resolution=960, initial_tempo=tempo)
    for name, notes in parts.items():
        drums = name == "Drums"
        inst = pretty_midi.Instrument(program=0 if drums else _PROGRAMS.get(name, 0), is_drum=drums, name=name)
        inst.notes = [pretty_midi.Note(velocity=n.velocity, pitch=n.pitch, start=n.start_s, end=n.end_s)
                      for n in notes]
        pm.instruments.append(inst)
    buffer = io.BytesIO()
    pm.write(buffer)
    return buffer.getvalue()


def write_take_sources(perf: Performance, folder: str | Path, *,
                       features: FeatureConfig = FeatureConfig()) -> Path:
    """Keep what a candidate's take needs besides its mix (stems, MIDI, description) in ``folder``.

    Args:
        perf: the candidate's performance (:attr:`ensemble.extend.Extension.performances`).
        folder: a new folder of the round's.

    Returns:
        ``folder``.
    """
    folder = Path(folder)
    for name, stem in perf.stems.items():
        atomic_write(folder / _STEM_FILES / f"{name}.flac",
                     lambda tmp, s=stem: sf.write(tmp, np.clip(s, -1.0, 1.0), perf.sample_rate,
                                                  format="FLAC", subtype="PCM_16"))
    parts = band_parts(perf, features=features)
    tempo = perf.info.get("tempo_bpm")
    atomic_write_bytes(folder / "band.mid", band_midi(parts, tempo_bpm=tempo))
    info = {"tempo_bpm": tempo, "stems_sample_rate": perf.sample_rate, "stems": sorted(perf.stems),
            "parts": {name: [n.to_dict() for n in notes] for name, notes in parts.items()},
            "how": {"Bass": "the harmony plan's bass f0 control, a note per beat (as it is played)",
                    "Keys": "the harmony plan's three keys voices' f0 controls, a note per run of one "
                            "semitone",
                    "Drums": ("the performer's placement: each hit of the chosen loop (found once on the stored "
                              "loop; kick / snare / hi-hat by spectrum) at the time the loop's beat is laid on "
                              "the grid; velocity from the stem's level there" if perf.drum_hits is not None else
                              "hits detected in the rendered drum stem (onsets; kick / snare / hi-hat by "
                              "spectrum): an estimate")}}
    atomic_write_text(folder / "take.json", json.dumps(info, indent=1) + "\n")
    return folder


def write_take_zip(path: str | Path, *, mix: str | Path, sources: str | Path, about: dict) -> Path:
    """The take's zip (layout in the module docstring), written whole or not at all.

    Args:
        path: the zip to write (replaced if it exists).
        mix: the candidate's mix as played (a WAV at the upload's rate and channels).
        sources: the folder :func:`write_take_sources` wrote.
        about: what ``take.json`` adds (the candidate's scores, its position, ...).

    Returns:
        ``path``.

    Raises:
        EnsembleError: the mix or the sources are gone (the round expired).
    """
    mix, sources = Path(mix), Path(sources)
    if not mix.is_file() or not (sources / "take.json").is_file():
        raise EnsembleError("this candidate's files are gone (the round expired); generate again")
    rate = sf.info(str(mix)).samplerate
    info = {**json.loads((sources / "take.json").read_text()), **about, "mix_sample_rate": rate}

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.write(mix, "mix.wav")
            for flac in sorted((sources / _STEM_FILES).glob("*.flac")):
                audio, sr = sf.read(str(flac), dtype="float32")
                if sr != rate:
                    audio = soxr.resample(audio, sr, rate, quality="HQ")
                buffer = io.BytesIO()
                sf.write(buffer, np.clip(audio, -1.0, 1.0), rate, format="WAV", subtype="PCM_24")
                z.writestr(f"stems/{flac.stem}.wav", buffer.getvalue())
            z.write(sources / "band.mid", "band.mid")
            z.writestr("take.json", json.dumps(info, indent=1) + "\n")

    return atomic_write(path, write)
