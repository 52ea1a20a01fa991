"""A held-out query set: melodies and instruments the project never trains on, rendered like uploads.

The continuation benchmark (``python -m benchmarks.continuation``) needs clips that look like what a
user uploads and that the database cannot simply look up. Every query here is

* a **single melodic line** from a music21 collection the corpus does not use: the ABC folk tunes of
  ``airdsAirs`` and ``miscFolk`` and, optionally, the first-violin part of Haydn and Mozart string
  quartets (``haydn/*``, ``mozart/k80``, ``k155``, ``k156``, ``k458``). The corpus's collections
  (``bach``, ``essenFolksong``, ``nottingham-dataset``) and the two collections reserved for an
  independent check (``oneills1850``, ``ryansMammoth``) are never opened: :func:`check_source`
  refuses them before anything is read;
* played by a **General-MIDI program the database does not contain** (:data:`PROGRAMS`: bowed
  strings, flutes, reeds, brass, piano, organ; never the guitars 24-31 the database is built from),
  through the corpus's SoundFont (TimGM6mb from the pretty_midi wheel unless another is given),
  transposed into the instrument's comfortable range;
* **looped** when the tune is shorter than ``total_seconds`` (each pass padded to whole bars, so the
  beat stays isochronous), at the score's tempo when it has a usable one, else at a seeded
  80-150 BPM;
* written at **44.1 kHz stereo, 24-bit WAV**, panned (constant power) and set to a level spread from
  -35 to -6 dBFS (:func:`active_level`: RMS of the active frames), peaks kept below -1 dBFS (a
  soft limiter only where the level cannot be reached otherwise; its reduction is recorded).

For query ``NN`` two files are written: ``qNN_<program>_<source>.wav``, the first ``input_seconds``
(what a user uploads), and ``qNN_<program>_<source>_full.wav``, all ``total_seconds`` (the melody's
true continuation, used only to check that the benchmark's metrics can tell a good continuation from
a bad one). ``manifest.json`` records the command, the settings, the SHA-256 of every file, and per
query the source (collection, corpus-relative path, tune, title), the program, level and peak of
both files, tempo, meter, the true beat times, transposition and the estimated key.

The folder is built in a temporary sibling and renamed into place: it is complete or absent.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from ensemble.dsp import soft_limit
from ensemble.errors import EnsembleError
from ensemble.files import sha256_file, write_json_atomic

# The corpus builder's score reader, key estimate, octave placement and renderer, reused so a held-out
# melody is read, placed and rendered exactly the way a training melody is.
from ensemble.jobs.corpus.build import (
    PieceRef,
    _abc_tunes,
    _estimate_key,
    _fit_octave,
    _parse_score,
    _part_bars,
    _part_notes,
    default_soundfont,
    music21_corpus_root,
    render_notes,
)
from ensemble.jobs.corpus.layout import NoteList
from ensemble.music import PC_NAMES

__all__ = ["HeldoutConfig", "HeldoutSet", "PROGRAMS", "FAMILIES", "RESERVED_COLLECTIONS",
           "TRAINING_COLLECTIONS", "SOURCES", "GUITARS", "build_queries", "load_queries", "check_source",
           "active_level", "MANIFEST"]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1

# Reserved for an independent check: never listed, parsed or read.
RESERVED_COLLECTIONS = ("oneills1850", "ryansMammoth")
# What BabyBand (and therefore the database and the decoders) is built from.
TRAINING_COLLECTIONS = ("bach", "essenFolksong", "nottingham-dataset")
# Held-out sources: name -> corpus-relative glob patterns. The quartets are the ones whose first part
# is a violin (k545 is a piano sonata and is left out).
SOURCES = {
    "airdsAirs": ("airdsAirs/*.abc",),
    "miscFolk": ("miscFolk/*.abc",),
    "haydn": ("haydn/opus1no1/movement*.mxl", "haydn/opus74no1/movement*.mxl"),
    "mozart": tuple(f"mozart/{k}/movement*.mxl" for k in ("k80", "k155", "k156", "k458")),
}
_FOLK = ("airdsAirs", "miscFolk")
_CLASSICAL = ("haydn", "mozart")
# The order in which queries draw a source kind: folk tunes dominate (they are what users hum and
# play), every fourth query is a quartet's first violin when ``classical`` is on.
_SOURCE_CYCLE = ("airdsAirs", "miscFolk", "airdsAirs", "classical", "airdsAirs", "miscFolk")


@dataclass(frozen=True)
class _Program:
    """A GM program (0-based) and where a melody sits comfortably on it, in *sounding* MIDI pitch."""

    program: int
    name: str
    family: str
    low: int
    high: int
    centre: float
    sounding_shift: int = 0  # written = sounding - sounding_shift (the SoundFont's organs sound 8vb)


# None of 24-31 (the guitars BabyBand's leader is rendered with). Checked with TimGM6mb: every program
# but the organs sounds at the written pitch (YIN within 0.1 semitone at A3, A4, A5); organs 16 and 19
# sound exactly an octave low, so they are written an octave up.
PROGRAMS = {p.program: p for p in (
    _Program(40, "violin", "strings", 57, 93, 74), _Program(41, "viola", "strings", 50, 81, 65),
    _Program(42, "cello", "strings", 38, 72, 55), _Program(48, "strings", "strings", 50, 86, 69),
    _Program(73, "flute", "flutes", 60, 96, 77), _Program(72, "piccolo", "flutes", 74, 103, 86),
    _Program(74, "recorder", "flutes", 60, 91, 74),
    _Program(68, "oboe", "reeds", 58, 89, 72), _Program(71, "clarinet", "reeds", 50, 89, 67),
    _Program(65, "alto sax", "reeds", 49, 81, 65),
    _Program(56, "trumpet", "brass", 55, 82, 69), _Program(60, "french horn", "brass", 41, 77, 60),
    _Program(57, "trombone", "brass", 40, 72, 55),
    _Program(0, "acoustic grand piano", "piano", 48, 91, 71),
    _Program(1, "bright acoustic piano", "piano", 48, 91, 71),
    _Program(16, "drawbar organ", "organ", 48, 88, 69, sounding_shift=-12),
    _Program(19, "church organ", "organ", 43, 84, 67, sounding_shift=-12),
)}
FAMILIES = ("strings", "flutes", "reeds", "brass", "piano", "organ")
GUITARS = tuple(range(24, 32))  # what the database is built from; tests check PROGRAMS avoids them

_LEAD_IN_S = 0.1           # the first note starts this long after the file does
_MIN_INPUT_NOTES = 8       # an input with fewer notes is not a melody worth continuing
_MAX_GAP_S = 2.0           # ... nor one with a longer rest (quartet parts can rest for bars)
_MIN_PASS_S = 3.0          # a tune shorter than this per pass is skipped rather than looped 10 times
_LEVEL_FRAME_S = 0.05      # active_level frame length
_ACTIVE_RANGE_DB = 40.0    # active frames are within this of the loudest frame ...
_ACTIVE_FLOOR_DBFS = -80.0  # ... and above this
_MAX_TRIES = 40            # sources tried per query before giving up


@dataclass(frozen=True)
class HeldoutConfig:
    """What a held-out query set contains (everything but where it is written).

    Attributes:
        n_queries: how many queries.
        seed: decides sources, programs, levels, tempi, transpositions, pans and velocities.
        input_seconds: s, length of each ``qNN_*.wav`` (the upload).
        total_seconds: s, length of each ``qNN_*_full.wav`` (upload + true continuation).
        sample_rate: Hz of the written files.
        levels_dbfs: (quietest, loudest) active-frame RMS level, dBFS; the queries' levels are spread
            evenly over it, in a seeded order.
        peak_ceiling_dbfs: sample peaks stay below this (dBFS); a limiter acts only where a level
            cannot be reached otherwise.
        tempo_range_bpm: beats per minute drawn when a score has no usable tempo mark.
        score_tempo_range_bpm: a score's own tempo (in its meter's beats) is used when inside this.
        transpose_range: (low, high) semitones drawn per query before octave placement.
        classical: also draw quartet first-violin lines (every fourth query), not only folk tunes.
        soundfont: path of the .sf2; None = the corpus's (TimGM6mb.sf2 from pretty_midi).
    """

    n_queries: int = 24
    seed: int = 0
    input_seconds: float = 20.0
    total_seconds: float = 30.0
    sample_rate: int = 44100
    levels_dbfs: tuple[float, float] = (-35.0, -6.0)
    peak_ceiling_dbfs: float = -1.0
    tempo_range_bpm: tuple[float, float] = (80.0, 150.0)
    score_tempo_range_bpm: tuple[float, float] = (60.0, 180.0)
    transpose_range: tuple[int, int] = (-5, 6)
    classical: bool = True
    soundfont: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n_queries, bool) or not isinstance(self.n_queries, int) or not 1 <= self.n_queries <= 99:
            raise EnsembleError(f"n_queries must be an integer in 1..99 (file names have two digits), "
                                f"got {self.n_queries!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise EnsembleError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (isinstance(self.input_seconds, (int, float)) and 1.0 <= self.input_seconds):
            raise EnsembleError(f"input_seconds must be >= 1 s, got {self.input_seconds!r}")
        if not (isinstance(self.total_seconds, (int, float)) and self.input_seconds < self.total_seconds <= 600):
            raise EnsembleError(f"total_seconds must be > input_seconds ({self.input_seconds} s) and <= 600 s, "
                                f"got {self.total_seconds!r}")
        if self.sample_rate not in (22050, 32000, 44100, 48000):
            raise EnsembleError(f"sample_rate {self.sample_rate!r} is not one of 22050, 32000, 44100, 48000")
        lo, hi = self.levels_dbfs
        if not -80.0 <= lo <= hi < self.peak_ceiling_dbfs <= -0.1:
            raise EnsembleError(f"need -80 <= levels_dbfs low <= high < peak_ceiling_dbfs <= -0.1 dBFS, got "
                                f"levels_dbfs={self.levels_dbfs}, peak_ceiling_dbfs={self.peak_ceiling_dbfs}")
        for name in ("tempo_range_bpm", "score_tempo_range_bpm"):
            a, b = getattr(self, name)
            if not 30.0 <= a <= b <= 300.0:
                raise EnsembleError(f"{name} must satisfy 30 <= low <= high <= 300 BPM, got {(a, b)}")
        a, b = self.transpose_range
        if not (isinstance(a, int) and isinstance(b, int) and -12 <= a <= b <= 12):
            raise EnsembleError(f"transpose_range must be integers with -12 <= low <= high <= 12, got {(a, b)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("levels_dbfs", "tempo_range_bpm", "score_tempo_range_bpm", "transpose_range"):
            d[k] = list(d[k])
        return d


@dataclass(frozen=True)
class HeldoutSet:
    """A built query set: its folder and its manifest (see the module docstring for the layout).

    Attributes:
        out_dir: the folder.
        manifest: the parsed ``manifest.json``.
    """

    out_dir: Path
    manifest: dict = field(repr=False)

    @property
    def queries(self) -> list[dict]:
        """One dict per query, in order (``id``, ``input``, ``full``, ``program``, ``source``, ...)."""
        return self.manifest["queries"]

    def path(self, query: dict, which: str = "input") -> Path:
        """Absolute path of a query's ``"input"`` or ``"full"`` file."""
        if which not in ("input", "full"):
            raise EnsembleError(f"which must be 'input' or 'full', got {which!r}")
        return self.out_dir / query[which]


# --------------------------------------------------------------------------------------------
# sources


def check_source(path: str | os.PathLike, root: Path | None = None) -> str:
    """The corpus-relative path of a held-out source; refuses anything else before it is read.

    Raises:
        EnsembleError: the path is outside music21's corpus, inside a reserved collection
            (:data:`RESERVED_COLLECTIONS`) or a training one (:data:`TRAINING_COLLECTIONS`), or not
            one of :data:`SOURCES`.
    """
    root = music21_corpus_root() if root is None else root
    try:
        rel = Path(path).resolve().relative_to(root.resolve())
    except ValueError:
        raise EnsembleError(f"{os.fspath(path)!r} is not inside music21's corpus ({str(root)!r})") from None
    top = rel.parts[0] if rel.parts else ""
    if top in RESERVED_COLLECTIONS:
        raise EnsembleError(f"{rel.as_posix()!r} is in a reserved collection ({top}); "
                            f"held-out queries never touch {', '.join(RESERVED_COLLECTIONS)}")
    if top in TRAINING_COLLECTIONS:
        raise EnsembleError(f"{rel.as_posix()!r} is in a training collection ({top}); "
                            f"allowed sources: {', '.join(SOURCES)}")
    if not any(rel.match(pattern) for patterns in SOURCES.values() for pattern in patterns):
        raise EnsembleError(f"{rel.as_posix()!r} is not a held-out source; allowed: "
                            f"{', '.join(p for ps in SOURCES.values() for p in ps)}")
    return rel.as_posix()


def _list_sources(root: Path, kind: str) -> list[PieceRef]:
    """Every usable (file, tune) of one source kind, in a fixed order (only its own folders are listed)."""
    refs = []
    for pattern in SOURCES[kind]:
        folder, _, glob = pattern.rpartition("/")
        for p in sorted((root / folder).glob(glob)):
            check_source(p, root)
            if p.suffix == ".abc":
                n = len(_abc_tunes(p.read_text(encoding="latin-1")))
                refs.extend(PieceRef(kind, str(p), i) for i in range(n))
            else:
                refs.append(PieceRef(kind, str(p)))
    return refs


@dataclass(frozen=True)
class _Melody:
    """A melody read from a score: notes (onset ql, duration ql, MIDI), its pass length and beat grid."""

    notes: list[tuple[float, float, int]]
    period_ql: float      # one pass, padded to whole bars
    beat_ql: float
    beats_per_bar: int
    anchor_ql: float      # a downbeat (the first full bar's start)
    meter: str
    qpm: float | None     # quarter notes per minute from the score, when it has a tempo mark
    title: str
    final_pc: int


def _read_melody(ref: PieceRef, root: Path) -> _Melody:
    from music21 import tempo

    check_source(ref.path, root)
    score = _parse_score(ref)
    parts = list(getattr(score, "parts", []))
    if not parts:
        raise EnsembleError(f"{ref.path!r} has no parts")
    lead = parts[0]
    if ref.collection in _CLASSICAL and "violin" not in (lead.partName or "").lower():
        raise EnsembleError(f"{ref.path!r}: the first part is {lead.partName!r}, not a violin")
    notes = _part_notes(lead, "melody", ref.path)
    length = max(float(lead.highestTime), max(o + d for o, d, _ in notes))
    bars = _part_bars(lead, length)
    first_full = next((b for b in bars if not b.pickup), bars[0])
    beat_ql, beats_per_bar, _, _ = first_full.meter
    bar_ql = beat_ql * beats_per_bar
    qpm = None
    for mark in score.flatten().getElementsByClass(tempo.MetronomeMark):
        if mark.number and mark.referent is not None:
            qpm = float(mark.number) * float(mark.referent.quarterLength)
            break
    md = score.metadata
    title = md.title if md is not None else None
    if ref.collection in _CLASSICAL:  # quartet movements carry no usable title: name them by path
        rel = Path(check_source(ref.path, root)).with_suffix("")
        title = " ".join(rel.parts) + (f" ({title})" if title else "")
    # whole bars per pass, counted from the first downbeat, so looping keeps beats and bars regular
    span = length - first_full.offset
    period = first_full.offset + math.ceil(span / bar_ql - 1e-6) * bar_ql
    return _Melody(notes=notes, period_ql=period, beat_ql=beat_ql, beats_per_bar=beats_per_bar,
                   anchor_ql=first_full.offset, meter=f"{first_full.numerator}/{first_full.denominator}",
                   qpm=qpm, title=str(title or Path(ref.path).stem), final_pc=notes[-1][2] % 12)


# --------------------------------------------------------------------------------------------
# levels


def active_level(audio: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """Level of a clip as a listener hears it: the RMS over its active frames, and its sample peak.

    Frames are 50 ms, non-overlapping; a frame's power is the mean square over its samples and all
    channels. Active frames are within 40 dB of the loudest frame and above -80 dBFS, so rests and
    the release tails between phrases do not pull a sparse melody's level down.

    Args:
        audio: [n_samples] or [n_samples, channels] float, full scale 1.0.
        sample_rate: Hz.

    Returns:
        (rms_dbfs, peak_dbfs); (-inf, -inf) for digital silence.
    """
    x = np.asarray(audio, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    n = max(1, int(round(_LEVEL_FRAME_S * sample_rate)))
    frames = len(x) // n
    if frames == 0:
        power = np.array([np.mean(np.square(x))]) if x.size else np.zeros(1)
    else:
        power = np.mean(np.square(x[: frames * n]).reshape(frames, n, x.shape[1]), axis=(1, 2))  # [F]
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if not np.any(power > 0):
        return -math.inf, -math.inf
    db = 10.0 * np.log10(np.maximum(power, 1e-30))
    active = (db >= db.max() - _ACTIVE_RANGE_DB) & (db > _ACTIVE_FLOOR_DBFS)
    rms_db = 10.0 * math.log10(float(np.mean(power[active])))
    return rms_db, 20.0 * math.log10(peak)


def _set_level(x: np.ndarray, target_db: float, sample_rate: int, ceiling_db: float) -> tuple[np.ndarray, float]:
    """Scale ``x`` [n, 2] to ``target_db`` active RMS with peaks below ``ceiling_db``.

    Returns:
        (audio, dB of peak reduction by the limiter; 0 when a plain gain sufficed).
    """
    level, peak = active_level(x, sample_rate)
    gain_db = target_db - level
    if peak + gain_db <= ceiling_db:
        return (x * 10.0 ** (gain_db / 20.0)).astype(np.float32), 0.0
    # A soft knee 6 dB under the ceiling; the gain is raised until the limited level meets the
    # target (the limiter only lowers the level, so this converges from below).
    y = x
    for _ in range(12):
        y = soft_limit(x * 10.0 ** (gain_db / 20.0), threshold_db=ceiling_db - 6.0, ceiling_db=ceiling_db)
        err = target_db - active_level(y, sample_rate)[0]
        if abs(err) < 0.02:
            break
        gain_db += err
    reduction = peak + gain_db - active_level(y, sample_rate)[1]
    return y.astype(np.float32), round(float(reduction), 2)


# --------------------------------------------------------------------------------------------
# one query


def _notes_seconds(mel: _Melody, spq: float, total_s: float, transpose: list[int],
                   rng: np.random.Generator) -> tuple[NoteList, np.ndarray, int]:
    """The melody looped over ``total_s``: (notes in seconds, true beat times [B] s, passes)."""
    start = mel.notes[0][0]
    rows, beats = [], []
    passes = 0
    base_vel = int(rng.integers(80, 101))
    while True:
        t0 = _LEAD_IN_S + (passes * mel.period_ql - start) * spq
        if t0 >= total_s:
            break
        for (on, dur, _), pitch in zip(mel.notes, transpose, strict=True):
            s = t0 + (on - 0.0) * spq
            if s >= total_s:
                break
            d = dur * spq
            e = s + max(0.03, min(d - 0.03, 0.92 * d))  # a little air so repeated notes re-attack
            downbeat = abs(((on - mel.anchor_ql) / (mel.beat_ql * mel.beats_per_bar)) % 1.0) < 1e-6
            vel = int(np.clip(base_vel + rng.integers(-5, 6) + (8 if downbeat else 0), 1, 127))
            rows.append((s, e, pitch, vel))
        k0 = math.ceil((start - mel.anchor_ql) / mel.beat_ql - 1e-9)  # first beat at or after the first note
        k = k0
        while True:
            q = mel.anchor_ql + k * mel.beat_ql
            if q >= mel.period_ql + start - 1e-9:
                break
            beats.append(t0 + q * spq)
            k += 1
        passes += 1
    beats = np.asarray([b for b in beats if 0.0 <= b < total_s])
    return NoteList.from_rows(rows), beats, passes


def _render_query(index: int, ref: PieceRef, mel: _Melody, prog: _Program, level_db: float,
                  config: HeldoutConfig, soundfont: Path, rng: np.random.Generator) -> dict:
    """Render one query at unit gain (level set later); returns its record with ``audio`` [n, 2]."""
    lo_bpm, hi_bpm = config.score_tempo_range_bpm
    bpm = None if mel.qpm is None else mel.qpm / mel.beat_ql
    if bpm is not None and lo_bpm <= bpm <= hi_bpm:
        tempo_source = "score"
    else:
        bpm, tempo_source = float(rng.uniform(*config.tempo_range_bpm)), "seeded"
    spq = 60.0 / (bpm * mel.beat_ql)  # seconds per quarter note
    pass_s = mel.period_ql * spq
    if pass_s < _MIN_PASS_S:
        raise EnsembleError(f"one pass lasts {pass_s:.1f} s; need at least {_MIN_PASS_S} s")
    shift = int(rng.integers(config.transpose_range[0], config.transpose_range[1] + 1))
    placed = _fit_octave(mel.notes, shift, prog.centre, prog.low, prog.high)  # sounding pitches
    written = [p - prog.sounding_shift for _, _, p in placed]
    notes, beats, passes = _notes_seconds(mel, spq, config.total_seconds, written, rng)
    on_in = notes.onset_s[notes.onset_s < config.input_seconds]
    if len(on_in) < _MIN_INPUT_NOTES:
        raise EnsembleError(f"only {len(on_in)} notes in the first {config.input_seconds:g} s")
    gaps = notes.onset_s[1:] - notes.offset_s[:-1]
    if gaps.size and gaps.max() > _MAX_GAP_S:
        raise EnsembleError(f"a rest of {gaps.max():.1f} s (at most {_MAX_GAP_S} s allowed)")
    n = int(round(config.total_seconds * config.sample_rate))
    mono = render_notes(notes, program=prog.program, is_drum=False, n_samples=n, soundfont=soundfont,
                        sample_rate=config.sample_rate)  # [n]
    if not np.any(np.abs(mono) > 1e-6):
        raise EnsembleError(f"program {prog.program} rendered silence")
    # render_notes returns the synth's mono sum; a constant-power pan makes the stereo image. No
    # inter-channel delay: a mono downmix of a delayed pair would comb-filter the melody.
    pan = float(rng.uniform(-0.35, 0.35))
    theta = (pan + 1.0) * math.pi / 4.0
    audio = np.stack([mono * math.cos(theta), mono * math.sin(theta)], axis=1)  # [n, 2]
    key_tonic, key_mode = _estimate_key(placed, (mel.final_pc + shift) % 12)
    return {
        "index": index, "ref": ref, "audio": audio, "target_dbfs": level_db,
        "program": prog, "bpm": bpm, "tempo_source": tempo_source, "beats": beats, "passes": passes,
        "transpose": shift, "pan": pan, "key": f"{PC_NAMES[key_tonic]} {key_mode}", "mel": mel,
        "n_notes": len(notes), "notes": notes,
    }


def _program_order(n: int, rng: np.random.Generator) -> list[_Program]:
    """Programs round-robin over the families (each family's programs in a seeded order)."""
    by_family = {f: [p for p in PROGRAMS.values() if p.family == f] for f in FAMILIES}
    for f in FAMILIES:
        by_family[f] = [by_family[f][i] for i in rng.permutation(len(by_family[f]))]
    families = [FAMILIES[i] for i in rng.permutation(len(FAMILIES))]
    order, turn = [], 0
    while len(order) < n:
        for f in families:
            progs = by_family[f]
            order.append(progs[turn % len(progs)])
        turn += 1
    return order[:n]


def _assign_levels(records: list[dict], config: HeldoutConfig) -> None:
    """Swap level targets between queries so fewer need the limiter (a seeded spread is kept).

    A query whose crest factor (peak - active RMS) would put its peak over the ceiling trades its
    target with the nearest quieter one that both can reach with a plain gain.
    """
    crest = []
    for r in records:
        level, peak = active_level(r["audio"], config.sample_rate)
        crest.append(peak - level)
    ceiling = config.peak_ceiling_dbfs
    for i, r in enumerate(records):
        if r["target_dbfs"] + crest[i] <= ceiling:
            continue
        best = None
        for j, o in enumerate(records):
            if (o["target_dbfs"] < r["target_dbfs"] and o["target_dbfs"] + crest[i] <= ceiling
                    and r["target_dbfs"] + crest[j] <= ceiling):
                if best is None or o["target_dbfs"] > records[best]["target_dbfs"]:
                    best = j
        if best is not None:
            r["target_dbfs"], records[best]["target_dbfs"] = records[best]["target_dbfs"], r["target_dbfs"]


def _draw_sources(config: HeldoutConfig) -> list[str]:
    """The source kind of each query (:data:`_SOURCE_CYCLE`; quartets alternate Haydn, Mozart)."""
    kinds = []
    for i in range(config.n_queries):
        kind = _SOURCE_CYCLE[i % len(_SOURCE_CYCLE)]
        if kind == "classical":
            kind = _CLASSICAL[(i // len(_SOURCE_CYCLE)) % 2] if config.classical else _FOLK[i % 2]
        kinds.append(kind)
    return kinds


# --------------------------------------------------------------------------------------------
# the set


def build_queries(out_dir: str | os.PathLike, *, n_queries: int = 24, seed: int = 0,
                  input_seconds: float = 20.0, total_seconds: float = 30.0, classical: bool = True,
                  soundfont: str | os.PathLike | None = None, config: HeldoutConfig | None = None,
                  command: str | None = None, overwrite: bool = False,
                  on_message: Callable[[str], None] | None = None) -> HeldoutSet:
    """Render the held-out query set into ``out_dir`` (see the module docstring).

    Args:
        out_dir: the folder to create; it must not exist or be empty, unless ``overwrite``.
        n_queries, seed, input_seconds, total_seconds, classical, soundfont: the
            :class:`HeldoutConfig` fields of the same names (ignored when ``config`` is given).
        config: the whole configuration at once.
        command: the command line recorded in the manifest.
        overwrite: replace an existing set (the new one is complete before the old is removed).
        on_message: ``on_message(str)`` for each source skipped (unparseable, too short, long rests).

    Returns:
        The :class:`HeldoutSet`.

    Raises:
        EnsembleError: bad settings; ``out_dir`` exists and is not empty without ``overwrite``; a
            missing SoundFont; not enough usable sources.
    """
    if config is None:
        config = HeldoutConfig(n_queries=n_queries, seed=seed, input_seconds=float(input_seconds),
                               total_seconds=float(total_seconds), classical=classical,
                               soundfont=None if soundfont is None else os.fspath(soundfont))
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise EnsembleError(f"output folder {str(out)!r} exists and is not empty; choose another or overwrite")
    sf2 = Path(config.soundfont) if config.soundfont else default_soundfont()
    if not sf2.is_file():
        raise EnsembleError(f"SoundFont {str(sf2)!r} does not exist")
    t_start = time.perf_counter()
    root = music21_corpus_root()
    rng = np.random.default_rng([config.seed, 4242])
    kinds = _draw_sources(config)
    pools = {}
    for kind in sorted(set(kinds)):
        refs = _list_sources(root, kind)
        pools[kind] = [refs[i] for i in rng.permutation(len(refs))]
    programs = _program_order(config.n_queries, rng)
    lo, hi = config.levels_dbfs
    levels = np.linspace(lo, hi, config.n_queries) if config.n_queries > 1 else np.array([(lo + hi) / 2])
    levels = [round(float(x), 2) for x in levels[rng.permutation(config.n_queries)]]
    records, skipped, titles = [], [], set()
    for i, (kind, prog) in enumerate(zip(kinds, programs, strict=True)):
        qrng = np.random.default_rng([config.seed, 4243, i])
        for _ in range(_MAX_TRIES):
            if not pools[kind]:
                raise EnsembleError(f"ran out of usable {kind} sources after {len(skipped)} skips")
            ref = pools[kind].pop(0)
            try:
                mel = _read_melody(ref, root)
                if mel.title in titles:
                    raise EnsembleError(f"title {mel.title!r} already used")
                rec = _render_query(i, ref, mel, prog, levels[i], config, sf2, qrng)
            except EnsembleError as exc:
                skipped.append({"source": f"{check_source(ref.path, root)}" + (
                    "" if ref.tune is None else f"#{ref.tune}"), "why": str(exc)})
                if on_message is not None:
                    on_message(f"skipped {skipped[-1]['source']}: {exc}")
                continue
            titles.add(mel.title)
            records.append(rec)
            break
        else:
            raise EnsembleError(f"no usable {kind} source for query {i} in {_MAX_TRIES} tries")
    _assign_levels(records, config)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        queries = [_write_query(r, tmp, config, root) for r in records]
        files = {}
        for q in queries:
            for which in ("input", "full"):
                files[q[which]] = sha256_file(tmp / q[which])
        manifest = {
            "format_version": FORMAT_VERSION,
            "what": "held-out query set for python -m benchmarks.continuation",
            "command": command,
            "seed": config.seed,
            "config": config.to_dict(),
            "soundfont": {"file": sf2.name, "sha256": sha256_file(sf2)},
            "corpus_root": "music21/corpus",
            "sources_allowed": {k: list(v) for k, v in SOURCES.items()},
            "reserved_collections_never_read": list(RESERVED_COLLECTIONS),
            "training_collections_never_read": list(TRAINING_COLLECTIONS),
            "level_definition": "RMS over 50 ms frames within 40 dB of the loudest and above -80 dBFS, "
                                "both channels; peak = sample peak",
            "queries": queries,
            "skipped": skipped,
            "files": files,
            "build_seconds": round(time.perf_counter() - t_start, 2),
        }
        write_json_atomic(tmp / MANIFEST, manifest)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old.{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return HeldoutSet(out, manifest)


def _write_query(r: dict, folder: Path, config: HeldoutConfig, root: Path) -> dict:
    prog, ref, mel = r["program"], r["ref"], r["mel"]
    audio, limited = _set_level(r["audio"], r["target_dbfs"], config.sample_rate, config.peak_ceiling_dbfs)
    stem = f"q{r['index']:02d}_{prog.program}_{ref.collection}"
    n_in = int(round(config.input_seconds * config.sample_rate))
    names = {"input": f"{stem}.wav", "full": f"{stem}_full.wav"}
    sf.write(folder / names["full"], audio, config.sample_rate, subtype="PCM_24", format="WAV")
    sf.write(folder / names["input"], audio[:n_in], config.sample_rate, subtype="PCM_24", format="WAV")
    levels = {}
    for which, name in names.items():
        written, _ = sf.read(folder / name, dtype="float64", always_2d=True)  # what a reader gets
        rms_db, peak_db = active_level(written, config.sample_rate)
        levels[which] = {"rms_dbfs": round(rms_db, 3), "peak_dbfs": round(peak_db, 3)}
    return {
        "id": f"q{r['index']:02d}",
        "input": names["input"],
        "full": names["full"],
        "input_seconds": config.input_seconds,
        "total_seconds": config.total_seconds,
        "source": {"collection": ref.collection, "path": check_source(ref.path, root), "tune": ref.tune,
                   "title": mel.title},
        "program": prog.program,
        "program_name": prog.name,
        "family": prog.family,
        "target_rms_dbfs": r["target_dbfs"],
        "rms_dbfs": levels["full"]["rms_dbfs"],
        "peak_dbfs": levels["full"]["peak_dbfs"],
        "input_rms_dbfs": levels["input"]["rms_dbfs"],
        "input_peak_dbfs": levels["input"]["peak_dbfs"],
        "limiter_reduction_db": limited,
        "tempo_bpm": round(r["bpm"], 3),
        "tempo_source": r["tempo_source"],
        "meter": mel.meter,
        "beat_ql": mel.beat_ql,
        "beat_times_s": [round(float(b), 4) for b in r["beats"]],
        "passes": r["passes"],
        "pass_seconds": round(mel.period_ql * 60.0 / (r["bpm"] * mel.beat_ql), 3),
        "transpose_semitones": r["transpose"],
        "sounding_shift_semitones": prog.sounding_shift,
        "key": r["key"],
        "key_method": "Krumhansl-Kessler on note durations, final-note bonus (as BabyBand)",
        "pan": round(r["pan"], 3),
        "n_notes": r["n_notes"],
        # the notes as written for the program (sounding = written + sounding_shift_semitones): the
        # timbre benchmark renders the same melody with other programs
        "notes": r["notes"].to_json(),
    }


def load_queries(out_dir: str | os.PathLike, *, verify: bool = True) -> HeldoutSet:
    """Open a built set; with ``verify`` check that every file is there with its recorded SHA-256.

    Raises:
        EnsembleError: no manifest, an unreadable one, or a missing or changed file.
    """
    out = Path(out_dir)
    path = out / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise EnsembleError(f"{str(path)!r} does not exist; build the set with build_queries") from None
    except (OSError, ValueError) as exc:
        raise EnsembleError(f"{str(path)!r} is unreadable: {exc}") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise EnsembleError(f"{str(path)!r} has format_version {manifest.get('format_version')!r}; "
                            f"this code reads {FORMAT_VERSION}")
    if verify:
        for name, digest in manifest["files"].items():
            f = out / name
            if not f.is_file():
                raise EnsembleError(f"{str(f)!r} is listed in the manifest but missing")
            if sha256_file(f) != digest:
                raise EnsembleError(f"{str(f)!r} does not match its SHA-256 in the manifest")
    return HeldoutSet(out, manifest)
