"""BabyBand: a multitrack corpus rendered offline from real scores through a General-MIDI SoundFont.

The way Slakh was made, at a size this project's CPU budget allows: scores from three of music21's
bundled collections (Bach chorales, Essen folksongs, the Nottingham reels it ships) are arranged for
a four-piece band, each stem is rendered separately with tinysoundfont and ``TimGM6mb.sf2`` (the
SoundFont inside the pretty_midi wheel) at 16 kHz mono, and the ground truth (f0 from the notes,
voicing, loudness, drum hits) is stored next to the audio in the layout of :mod:`.layout`. All
other music21 collections are left alone: they are held out for evaluation.

The band (stem names are the corpus vocabulary):

* **Guitar** -- the leader, plays the melody (chorale soprano / the folk tune), GM programs 24-30.
* **Bass** -- the chorale's bass voice an octave down; for melodies a line on the beat built from
  the tune's chord symbols (Nottingham) or from a harmonic analysis of the melody (Essen): the
  melody's key by Krumhansl-Kessler profiles, then per half/whole bar the diatonic triad that best
  covers the melody notes, ending on a V-I cadence. GM programs 32-35, 38.
* **Keys** -- the chorale's alto and tenor, or voice-led chord voicings (block, on the beat, off the
  beat or arpeggiated). Polyphonic: its f0 is the *top* sounding note and ``n_notes`` counts the
  notes (see :mod:`.layout`). GM programs 0-2, 4-7 (the SoundFont's organs sound an octave low, so
  they are left out).
* **Drums** -- meter-following patterns (duple, triple, compound, irregular bars) on a GM kit, with
  fills before phrase ends, crashes after them and humanized velocities and timing.

Tempo, transposition (-5..+6 semitones, then octave placement per instrument), GM program within the
family, patterns, velocities and small timing offsets (a few ms) all come from the seed; the
ground truth is computed from the humanized notes actually sent to the synth. Short tunes are played
through up to three times so a track lasts at least ``min_track_seconds``.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import importlib.util
import json
import math
import multiprocessing
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig, loudness_db, n_frames
from ensemble.files import write_json_atomic
from ensemble.jobs.corpus.layout import (
    FORMAT_VERSION,
    NoteList,
    clean_partials,
    list_tracks,
    note_summary,
    notes_to_frames,
    split_for,
    stem_features,
    write_track,
)
from ensemble.music import PC_NAMES, estimate_key

__all__ = [
    "COLLECTIONS",
    "STEMS",
    "BuildConfig",
    "BuildReport",
    "PieceRef",
    "default_soundfont",
    "music21_corpus_root",
    "list_pieces",
    "plan_pieces",
    "build_track",
    "build_corpus",
    "render_notes",
]

COLLECTIONS = ("bach", "essen", "nottingham")
STEMS = ("Guitar", "Bass", "Keys", "Drums")
# GM programs (0-based) per stem; each was checked to render at the written pitch (pYIN within
# 10 cents) with TimGM6mb. Organs (16-19) are excluded: their presets sound an octave low.
PROGRAMS = {"Guitar": (24, 25, 26, 27, 29, 30), "Bass": (32, 33, 34, 35, 38),
            "Keys": (0, 1, 2, 4, 5, 6, 7)}
DRUM_KITS = {0: "Standard", 8: "Room", 16: "Power", 32: "Jazz"}
_KICK, _SNARE, _SIDE, _HAT, _PEDAL_HAT, _OPEN_HAT, _CRASH, _RIDE = 36, 38, 37, 42, 44, 46, 49, 51
_TOMS = (50, 48, 47, 45, 43, 41)
_CYMBALS = (_CRASH, _RIDE, 52, 55, 57, 59)
_QUALITIES = {"maj": (0, 4, 7), "min": (0, 3, 7), "dom7": (0, 4, 7, 10)}
# (root above the tonic, quality, prior weight): the chords a folk-tune harmonization draws on
_DIATONIC = {
    "major": ((0, "maj", 1.0), (7, "maj", 0.8), (5, "maj", 0.7), (9, "min", 0.45),
              (2, "min", 0.35), (4, "min", 0.15), (7, "dom7", 0.5)),
    "minor": ((0, "min", 1.0), (7, "maj", 0.8), (5, "min", 0.7), (8, "maj", 0.45),
              (3, "maj", 0.45), (10, "maj", 0.35), (7, "dom7", 0.5)),
}


@dataclass(frozen=True)
class BuildConfig:
    """What a BabyBand build makes (everything but where and with how many processes).

    Attributes:
        minutes: stop starting new tracks once this many minutes of multitrack audio exist.
        seed: decides piece order, splits and every arrangement/rendering choice.
        weights: share of tracks drawn from each collection (bach, essen, nottingham) while it has
            pieces left.
        split_fractions: train/valid/test shares, assigned per source piece.
        min_track_seconds: tunes shorter than this are played through again (at most 3 times).
        tail_seconds: silence kept after the last note-off so releases ring out.
        soundfont: path of the .sf2 to render with; None = TimGM6mb.sf2 from the pretty_midi wheel.
        features: the frame grid of the ground truth (16 kHz, hop 160).
    """

    minutes: float = 60.0
    seed: int = 0
    weights: tuple[float, float, float] = (0.4, 0.5, 0.1)
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    min_track_seconds: float = 25.0
    tail_seconds: float = 1.5
    soundfont: str | None = None
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def __post_init__(self) -> None:
        if not (isinstance(self.minutes, (int, float)) and math.isfinite(self.minutes)
                and self.minutes > 0):
            raise EnsembleError(f"minutes must be a positive number, got {self.minutes!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise EnsembleError(f"seed must be a non-negative integer, got {self.seed!r}")
        if len(self.weights) != len(COLLECTIONS) or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise EnsembleError(
                f"weights {self.weights} must be {len(COLLECTIONS)} non-negative numbers "
                f"(for {', '.join(COLLECTIONS)}) with a positive sum")
        split_for("check", 0, self.split_fractions)  # raises on bad fractions
        if self.features.sample_rate != 16000:
            raise EnsembleError(
                f"BabyBand renders at 16000 Hz; got a feature config at {self.features.sample_rate} Hz")

    def content_dict(self) -> dict:
        """The settings that decide track content (all but ``minutes``), for resume checks."""
        d = dataclasses.asdict(self)
        d.pop("minutes")
        d["weights"] = list(self.weights)
        d["split_fractions"] = list(self.split_fractions)
        return d


@dataclass(frozen=True)
class PieceRef:
    """One source piece: a score file, and for multi-tune ABC files which tune (0-based)."""

    collection: str
    path: str
    tune: int | None = None

    @property
    def key(self) -> str:
        """Stable id: ``collection:relative/path#tune``."""
        rel = _corpus_relative(self.path)
        return f"{self.collection}:{rel}" + ("" if self.tune is None else f"#{self.tune}")


@dataclass
class BuildReport:
    """What a build did.

    Attributes:
        out_dir: the corpus folder.
        tracks_built: names of tracks rendered by this run.
        tracks_reused: names of finished tracks found on disk and skipped.
        minutes: minutes of audio in the planned tracks (built + reused).
        skipped: ``(piece key, message)`` for each source that could not be used.
        seconds: wall-clock time of the build.
    """

    out_dir: Path
    tracks_built: list[str] = field(default_factory=list)
    tracks_reused: list[str] = field(default_factory=list)
    minutes: float = 0.0
    minutes_per_split: dict[str, float] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# sources


def music21_corpus_root() -> Path:
    """The folder of music21's bundled corpus (found without importing music21)."""
    spec = importlib.util.find_spec("music21")
    if spec is None or spec.origin is None:
        raise EnsembleError("music21 is not installed; BabyBand needs music21==10.5.1 for its scores")
    return Path(spec.origin).parent / "corpus"


def _corpus_relative(path: str) -> str:
    try:
        return Path(path).relative_to(music21_corpus_root()).as_posix()
    except (ValueError, EnsembleError):
        return str(path)


def default_soundfont() -> Path:
    """TimGM6mb.sf2 from the installed pretty_midi wheel."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or spec.origin is None:
        raise EnsembleError("pretty_midi is not installed; its TimGM6mb.sf2 renders BabyBand")
    return Path(spec.origin).parent / "TimGM6mb.sf2"


def _abc_tunes(text: str) -> list[str]:
    """Split ABC text into tunes (each starts with an ``X:`` line)."""
    parts = re.split(r"(?m)^(?=X:)", text)
    return [p for p in parts if p.lstrip().startswith("X:")]


def list_pieces(root: str | os.PathLike | None = None) -> dict[str, list[PieceRef]]:
    """All usable pieces of the three training collections, in file order.

    ``bach/bwv*`` scores (the chorales), every tune of ``essenFolksong/*.abc`` except the
    ``test*`` files (fixtures of music21's own tests), and every tune in ``nottingham-dataset``.

    Raises:
        EnsembleError: when the corpus folder is missing.
    """
    root = Path(root) if root is not None else music21_corpus_root()
    if not root.is_dir():
        raise EnsembleError(f"music21 corpus folder {str(root)!r} does not exist")
    out: dict[str, list[PieceRef]] = {c: [] for c in COLLECTIONS}
    for p in sorted((root / "bach").glob("bwv*")):
        if p.suffix in (".mxl", ".xml", ".musicxml", ".krn"):
            out["bach"].append(PieceRef("bach", str(p)))
    for coll, folder in (("essen", "essenFolksong"), ("nottingham", "nottingham-dataset")):
        for p in sorted((root / folder).glob("*.abc")):
            if coll == "essen" and p.name.startswith("test"):
                continue
            n = len(_abc_tunes(p.read_text(encoding="latin-1")))
            out[coll].extend(PieceRef(coll, str(p), i) for i in range(n))
    return out


def plan_pieces(config: BuildConfig, pieces: dict[str, list[PieceRef]] | None = None) -> list[PieceRef]:
    """The seeded order in which pieces become tracks (Track00000 is the first).

    Each collection is shuffled; then each next track draws a collection with probability
    proportional to ``config.weights`` among those with pieces left.
    """
    pieces = list_pieces() if pieces is None else pieces
    rng = np.random.default_rng([config.seed, 7919])
    queues = {}
    for c in COLLECTIONS:
        refs = list(pieces.get(c, []))
        queues[c] = [refs[i] for i in rng.permutation(len(refs))]
    weights = dict(zip(COLLECTIONS, config.weights, strict=True))
    order: list[PieceRef] = []
    while True:
        live = [c for c in COLLECTIONS if queues[c] and weights[c] > 0]
        if not live:
            return order
        w = np.array([weights[c] for c in live])
        c = live[int(rng.choice(len(live), p=w / w.sum()))]
        order.append(queues[c].pop(0))


# --------------------------------------------------------------------------------------------
# reading a score into plain note lists (quarter lengths)


@dataclass(frozen=True)
class _Bar:
    """A measure: start and actual length in quarter lengths, its meter, pickup or not."""

    offset: float
    length: float
    numerator: int
    denominator: int
    pickup: bool

    @property
    def meter(self) -> tuple[float, int, float, bool]:
        """(beat length ql, beats in a full bar, subdivision ql, compound?)."""
        num, den = self.numerator, self.denominator
        if den == 8 and num % 3 == 0 and num >= 6:
            return 1.5, num // 3, 0.5, True
        beat = 4.0 / den
        return beat, num, beat / 2.0, False


@dataclass(frozen=True)
class _Chord:
    start: float
    end: float
    root: int        # pitch class
    bass: int        # pitch class (slash chords)
    pcs: tuple[int, ...]
    name: str


@dataclass
class _Piece:
    """A score reduced to what the arranger needs. Notes are (onset ql, duration ql, MIDI pitch)."""

    ref: PieceRef
    title: str
    melody: list[tuple[float, float, int]]
    bass: list[tuple[float, float, int]] | None
    inner: list[tuple[float, float, int]] | None
    chords: list[_Chord] | None
    bars: list[_Bar]
    length: float


def _part_notes(part, label: str, path: str) -> list[tuple[float, float, int]]:
    from music21 import chord, harmony

    flat = part.stripTies(inPlace=False).flatten()
    out = []
    for el in flat.notes:
        if isinstance(el, harmony.ChordSymbol):
            continue
        dur = float(el.quarterLength)
        if dur <= 0:  # grace notes
            continue
        if isinstance(el, chord.Chord):
            if not el.pitches:
                continue
            pitch = max(p.midi for p in el.pitches)  # a double stop in a melody: keep the top
        else:
            pitch = el.pitch.midi
        out.append((float(el.getOffsetBySite(flat)), dur, int(pitch)))
    if not out:
        raise EnsembleError(f"{path}: part {label!r} is empty (no notes)")
    out.sort()
    return out


def _part_bars(part, length: float) -> list[_Bar]:
    from music21 import stream

    bars = []
    ts = None
    for i, m in enumerate(part.getElementsByClass(stream.Measure)):
        ts = m.timeSignature or ts
        blen = float(m.duration.quarterLength)
        if blen <= 0:
            continue
        if ts is not None:
            num, den = int(ts.numerator), int(ts.denominator)
            full = float(ts.barDuration.quarterLength)
        else:  # "M: none" in Essen: every bar is its own length, counted in quarters
            num, den, full = max(1, int(round(blen))), 4, blen
        pickup = i == 0 and (blen < full - 1e-6 or float(m.paddingLeft) > 0)
        bars.append(_Bar(float(m.getOffsetBySite(part)), blen, num, den, pickup))
    if not bars:  # no measures at all: 4/4 from the start
        bars = [_Bar(4.0 * k, 4.0, 4, 4, False) for k in range(int(math.ceil(length / 4.0)))]
    return bars


def _chord_symbols(part, length: float) -> list[_Chord]:
    from music21 import harmony

    flat = part.flatten()
    syms = []
    for cs in flat.getElementsByClass(harmony.ChordSymbol):
        try:
            pcs = tuple(sorted({p.pitchClass for p in cs.pitches}))
            root, bass = cs.root().pitchClass, cs.bass().pitchClass
        except (AttributeError, ValueError):  # an unreadable symbol: keep the previous chord
            continue
        if pcs:
            syms.append((float(cs.getOffsetBySite(flat)), root, bass, pcs, cs.figure))
    chords = []
    for i, (start, root, bass, pcs, name) in enumerate(syms):
        end = syms[i + 1][0] if i + 1 < len(syms) else length
        if end > start:
            chords.append(_Chord(start, end, root, bass, pcs, name))
    return chords


def _parse_score(ref: PieceRef):
    import music21
    from music21 import converter

    path = Path(ref.path)
    if not path.is_file():
        raise EnsembleError(f"source file {ref.path!r} does not exist")
    if path.stat().st_size == 0:
        raise EnsembleError(f"source file {ref.path!r} is empty (0 bytes)")
    try:
        if ref.tune is not None:
            tunes = _abc_tunes(path.read_text(encoding="latin-1"))
            if not 0 <= ref.tune < len(tunes):
                raise EnsembleError(
                    f"{ref.path!r} has {len(tunes)} tunes; tune {ref.tune} does not exist")
            score = converter.parse(tunes[ref.tune], format="abc")
        else:
            score = converter.parse(str(path), forceSource=True)
    except EnsembleError:
        raise
    # music21 raises many exception types on a bad file (its own, ValueError, IndexError, ...);
    # any of them means "this source is unusable", reported with its path.
    except Exception as exc:  # noqa: BLE001
        raise EnsembleError(f"could not parse {ref.path!r}: {type(exc).__name__}: {exc}") from None
    if isinstance(score, music21.stream.Opus):
        scores = list(score.scores)
        if not scores:
            raise EnsembleError(f"{ref.path!r} contains no score")
        score = scores[0]
    return score


def _read_piece(ref: PieceRef) -> _Piece:
    score = _parse_score(ref)
    parts = list(getattr(score, "parts", []))
    title = (score.metadata.title if score.metadata is not None else None) or Path(ref.path).stem
    if not parts:
        raise EnsembleError(f"{ref.path!r} has no parts")
    if ref.collection == "bach":
        names = [(p.partName or "").strip().lower() for p in parts]

        def find(prefix: str) -> int | None:
            for i, n in enumerate(names):
                if n.startswith(prefix) and not n.startswith("bassoon"):
                    return i
            return None
        idx = [find(v) for v in ("soprano", "alto", "tenor", "bass")]
        if any(i is None for i in idx):
            if len(parts) != 4:
                raise EnsembleError(
                    f"{ref.path!r} is not a four-voice chorale: parts {[p.partName for p in parts]}")
            idx = [0, 1, 2, 3]
        s, a, t, b = (parts[i] for i in idx)
        melody = _part_notes(s, "Soprano", ref.path)
        alto, tenor = _part_notes(a, "Alto", ref.path), _part_notes(t, "Tenor", ref.path)
        bass = _part_notes(b, "Bass", ref.path)
        inner, chords, lead = sorted(alto + tenor), None, s
    else:
        lead = parts[0]
        melody = _part_notes(lead, "melody", ref.path)
        bass, inner = None, None
        chords = None
    length = max(float(lead.highestTime), max(o + d for o, d, _ in melody))
    if ref.collection != "bach":
        chords = _chord_symbols(lead, length) or None
    if len(melody) < 6:
        raise EnsembleError(f"{ref.path!r}: the melody has only {len(melody)} notes; need at least 6")
    return _Piece(ref, str(title), melody, bass, inner, chords, _part_bars(lead, length), length)


# --------------------------------------------------------------------------------------------
# harmony


def _estimate_key(notes: Sequence[tuple[float, float, int]], final_pc: int) -> tuple[int, str]:
    """(tonic pitch class, 'major'|'minor') by Krumhansl-Kessler correlation, nudged to the final."""
    hist = np.zeros(12)
    for _, dur, pitch in notes:
        hist[pitch % 12] += dur
    key = estimate_key(hist, final_pc=final_pc, final_bonus=0.15)  # tunes end on their tonic
    return key.tonic, key.mode


def _segments(bars: Sequence[_Bar]) -> list[tuple[float, float]]:
    """Harmonic rhythm: a chord per bar, two per bar in 4- and 6-beat bars."""
    segs = []
    for bar in bars:
        _, nb, _, _ = bar.meter
        if not bar.pickup and nb in (4, 6) and bar.length >= 2:
            half = bar.length / 2
            segs += [(bar.offset, bar.offset + half), (bar.offset + half, bar.offset + bar.length)]
        else:
            segs.append((bar.offset, bar.offset + bar.length))
    return segs


def _harmonize(melody: Sequence[tuple[float, float, int]], bars: Sequence[_Bar], tonic: int,
               mode: str) -> list[_Chord]:
    """Chords for a bare melody: per segment the diatonic chord covering its notes best."""
    vocab = []
    for degree, quality, prior in _DIATONIC[mode]:
        root = (tonic + degree) % 12
        pcs = tuple(sorted((root + i) % 12 for i in _QUALITIES[quality]))
        vocab.append((root, pcs, prior, degree, quality))
    segs = _segments(bars)
    chords: list[_Chord] = []
    prev = 0
    for si, (s, e) in enumerate(segs):
        weights = np.zeros(12)
        for on, dur, pitch in melody:
            overlap = min(e, on + dur) - max(s, on)
            if overlap > 0:
                weights[pitch % 12] += overlap * (1.5 if abs(on - s) < 1e-6 else 1.0)
        total = weights.sum()
        if si == len(segs) - 1:
            choice = 0  # end on the tonic
        elif total == 0:
            choice = prev
        else:
            scores = []
            for ci, (_, pcs, prior, degree, _) in enumerate(vocab):
                inside = weights[list(pcs)].sum()
                score = inside - 0.7 * (total - inside) + 0.3 * prior * total
                score += 0.15 * total if ci == prev else 0.0
                if si == len(segs) - 2 and degree == 7:
                    score += 0.3 * total  # V before the final tonic
                scores.append(score)
            choice = int(np.argmax(scores))
        root, pcs, _, degree, quality = vocab[choice]
        name = PC_NAMES[root] + {"maj": "", "min": "m", "dom7": "7"}[quality]
        chords.append(_Chord(s, e, root, root, pcs, name))
        prev = choice
    return chords


def _chord_at(chords: Sequence[_Chord], t: float) -> _Chord | None:
    for c in chords:
        if c.start - 1e-6 <= t < c.end - 1e-6:
            return c
    return None


def _place(pc: int, near: float, lo: int, hi: int) -> int:
    """The pitch of class ``pc`` in [lo, hi] closest to ``near``."""
    cands = [p for p in range(lo, hi + 1) if p % 12 == pc]
    return min(cands, key=lambda p: (abs(p - near), p))


def _bass_line(chords: Sequence[_Chord], bars: Sequence[_Bar], rng: np.random.Generator,
               style: str) -> list[tuple[float, float, int]]:
    """A bass note on every beat of every full bar: root / root-fifth / walking approach notes."""
    out = []
    prev = 40.0
    for bar in bars:
        if bar.pickup:
            continue
        beat, nb, _, _ = bar.meter
        n = max(1, int(round(bar.length / beat)))
        for b in range(n):
            t = bar.offset + b * beat
            if t >= bar.offset + bar.length - 1e-6:
                break
            c = _chord_at(chords, t)
            if c is None:
                continue
            nxt = _chord_at(chords, t + beat)
            starts = abs(c.start - t) < 1e-6
            root = _place(c.bass if starts else c.root, prev, 31, 52)
            if b == 0 or starts or style == "root":
                pitch = root
            elif style == "walk" and nxt is not None and nxt is not c:
                target = _place(nxt.root, prev, 31, 52)
                pitch = target - 1 if rng.random() < 0.5 else target + 2
            elif style == "walk":
                pitch = _place(c.pcs[int(rng.integers(len(c.pcs)))], prev, 31, 52)
            else:  # root-fifth
                pitch = root + 7 if b % 2 == 1 else root
                if pitch > 52:
                    pitch -= 12
            dur = min(beat, bar.offset + bar.length - t)
            out.append((t, dur, int(pitch)))
            prev = 0.7 * pitch + 0.3 * 40.0  # stay near the middle of the bass range
    return out


def _voicing(pcs: Sequence[int], prev: list[int] | None, lo: int = 50, hi: int = 74) -> list[int]:
    """A close-position voicing of ``pcs`` inside [lo, hi], nearest the previous voicing."""
    best, best_cost = None, np.inf
    pcs = list(pcs)
    for r in range(len(pcs)):
        rot = pcs[r:] + pcs[:r]
        for base in range(lo, lo + 12):
            if base % 12 != rot[0]:
                continue
            for octave in (0, 12):
                notes = [base + octave]
                for pc in rot[1:]:
                    p = notes[-1] + 1
                    while p % 12 != pc:
                        p += 1
                    notes.append(p)
                if notes[-1] > hi:
                    continue
                if prev and len(prev) == len(notes):
                    cost = float(np.abs(np.array(notes) - np.array(sorted(prev))).sum())
                else:
                    cost = abs(float(np.mean(notes)) - 62.0) * len(notes)
                if cost < best_cost:
                    best, best_cost = notes, cost
    if best is None:  # cannot fit: stack from lo
        best = sorted(_place(pc, lo + 6, lo, lo + 11) for pc in pcs)
    return best


def _keys_part(chords: Sequence[_Chord], bars: Sequence[_Bar], rng: np.random.Generator,
               style: str) -> list[tuple[float, float, int]]:
    """Chord voicings in one of four comping styles: block, beats, offbeats, arpeggio."""
    strikes: list[tuple[float, float, _Chord]] = []  # (time, duration, chord)
    for bar in bars:
        if bar.pickup:
            continue
        beat, _, sub, compound = bar.meter
        end = bar.offset + bar.length
        n = max(1, int(round(bar.length / beat)))
        for b in range(n):
            t = bar.offset + b * beat
            if t >= end - 1e-6:
                break
            c = _chord_at(chords, t)
            if c is None:
                continue
            if style == "beats":
                strikes.append((t, min(beat, end - t) * 0.85, c))
            elif style == "offbeats":
                offs = (sub, 2 * sub) if compound else (sub,)
                for o in offs:
                    if t + o < end - 1e-6:
                        strikes.append((t + o, sub * 0.8, _chord_at(chords, t + o) or c))
            elif style == "arpeggio":
                k = 0
                while k * sub < beat - 1e-6 and t + k * sub < end - 1e-6:
                    strikes.append((t + k * sub, sub * 1.6, _chord_at(chords, t + k * sub) or c))
                    k += 1
            else:  # block: strike when the chord changes and on each downbeat
                if b == 0 or abs(c.start - t) < 1e-6:
                    strikes.append((t, 0.0, c))
    if style == "block":  # hold each block chord until the next strike or the chord's end
        held = []
        for i, (t, _, c) in enumerate(strikes):
            nxt = strikes[i + 1][0] if i + 1 < len(strikes) else c.end
            held.append((t, max(0.25, min(nxt, c.end) - t) * 0.95, c))
        strikes = held
    out = []
    prev: list[int] | None = None
    voicings: dict[tuple, list[int]] = {}
    arp_i = 0
    last_chord = None
    for t, dur, c in strikes:
        if c is not last_chord:
            key = (c.start, c.pcs)
            if key not in voicings:
                voicings[key] = _voicing(c.pcs, prev)
            prev = voicings[key]
            last_chord, arp_i = c, 0
        if style == "arpeggio":
            out.append((t, dur, prev[arp_i % len(prev)]))
            arp_i += 1
        else:
            out.extend((t, dur, p) for p in prev)
    return out


# --------------------------------------------------------------------------------------------
# drums


def _drum_part(bars: Sequence[_Bar], passes_end: set[int], rng: np.random.Generator,
               ) -> list[tuple[float, int, int]]:
    """(onset ql, GM drum key, velocity) for every bar: groove by meter, fills, crashes, ending."""
    hat = int(rng.choice([_HAT, _HAT, _RIDE, _PEDAL_HAT]))
    hat_on_subdivisions = rng.random() < 0.7
    fill_prob = float(rng.uniform(0.35, 0.85))
    base = float(rng.uniform(82, 106))
    waltz_snare = rng.random() < 0.5
    hits: list[tuple[float, int, float]] = []
    crash_next = True
    last = len(bars) - 1
    for i, bar in enumerate(bars):
        beat, nb, sub, compound = bar.meter
        start, length = bar.offset, bar.length
        if bar.pickup:
            if i > 0:  # a later pass's pickup: a short fill into the tune
                step = sub if compound else sub / 2
                k = 0
                while k * step < length - 1e-6:
                    hits.append((start + k * step, _SNARE, base - 25 + 30 * k * step / length))
                    k += 1
                crash_next = True
            continue
        if i == last:  # the ending: one kick and crash
            hits += [(start, _KICK, base + 12), (start, _CRASH, base + 10)]
            break
        phrase_end = (i + 1 < len(bars) and (i + 1) in passes_end) or i == last - 1
        fill = phrase_end or ((i + 1) % 4 == 0 and rng.random() < fill_prob)
        fill_len = beat * (2 if nb >= 4 and rng.random() < 0.4 else 1) if fill else 0.0
        fill_start = start + max(0.0, length - fill_len)
        kicks = {0.0}
        snares: set[float] = set()
        if nb == 2:
            snares = {beat}
        elif nb == 3:
            snares = {beat, 2 * beat} if waltz_snare else {2 * beat}
        elif nb == 4:
            kicks |= {2 * beat}
            snares = {beat, 3 * beat}
            if rng.random() < 0.3:
                kicks.add(2 * beat + sub)
        elif nb >= 5:
            kicks.add(float(int(math.ceil(nb / 2)) * beat))
            snares = {(nb - 1) * beat}
        kicks = {p for p in kicks if p < length - 1e-6}
        snares = {p for p in snares if p < length - 1e-6}
        for pos in sorted(kicks):
            hits.append((start + pos, _KICK, base + (8 if pos == 0 else 0)))
        for pos in sorted(snares):
            soft = nb == 3 and waltz_snare
            hits.append((start + pos, _SNARE, base - (18 if soft else 0)))
        step = sub if hat_on_subdivisions else beat
        k = 0
        while k * step < length - 1e-6:
            on_beat = abs((k * step) / beat - round((k * step) / beat)) < 1e-6
            hits.append((start + k * step, hat, base - (12 if on_beat else 26)))
            k += 1
        if crash_next:
            hits.append((start, _CRASH, base + 6))
            crash_next = False
        if fill:
            hits = [h for h in hits if h[0] < fill_start - 1e-6 or h[1] == _CRASH]
            step = sub if compound else sub / 2
            m = max(1, int(round(fill_len / step)))
            toms = _TOMS if rng.random() < 0.7 else (_SNARE,) * 6
            for j in range(m):
                key = toms[min(len(toms) - 1, j * len(toms) // m)]
                hits.append((fill_start + j * step, key, base - 20 + 35 * j / max(1, m - 1)))
            hits.append((fill_start, _KICK, base))
            crash_next = True
    out = []
    for t, key, vel in sorted(hits):
        v = int(np.clip(round(vel + rng.normal(0, 6)), 20, 127))
        out.append((t, key, v))
    return out


# --------------------------------------------------------------------------------------------
# arrangement


@dataclass
class _Arrangement:
    stems: dict[str, NoteList]
    programs: dict[str, int]
    roles: dict[str, str]
    tempo_bpm: float
    beat_bpm: float
    time_signature: str
    key: dict
    passes: int
    styles: dict[str, str]
    harmony: str


def _tile(items, length: float, passes: int):
    return [(on + p * length, *rest) for p in range(passes) for on, *rest in items]


def _humanize(events: Sequence[tuple[float, float, int, float]], *, spq: float, lead: float,
              rng: np.random.Generator, jitter_s: float, legato: float, mono: bool,
              downbeats: set[float]) -> NoteList:
    """Quarter-length events (onset, duration, pitch, velocity) -> seconds with humanization.

    Notes struck together (a chord) share one timing offset; a pitch struck twice at once (a
    unison) is kept once. Monophonic parts are cut where the next note starts; repeated pitches
    never overlap (the synth would release the new note).
    """
    offsets: dict[float, float] = {}
    rows = []
    for on, dur, pitch, vel in events:
        if on not in offsets:
            offsets[on] = float(np.clip(rng.normal(0.0, jitter_s), -2.5 * jitter_s, 2.5 * jitter_s))
        start = max(0.0, lead + on * spq + offsets[on])
        end = start + max(0.06, dur * spq * legato)
        accent = 6.0 if round(on, 6) in downbeats else 0.0
        v = int(np.clip(round(vel + accent + rng.normal(0.0, 5.0)), 15, 127))
        rows.append([start, end, int(pitch), v])
    # two voices on one pitch at one time (alto and tenor in unison) are one key on a keyboard
    unique: dict[tuple[float, int], list] = {}
    for r in rows:
        key = (round(r[0], 6), r[2])
        if key not in unique or r[1] > unique[key][1]:
            unique[key] = r
    rows = sorted(unique.values(), key=lambda r: (r[0], r[2]))
    if mono:
        for a, b in zip(rows, rows[1:], strict=False):
            if b[0] > a[0]:
                a[1] = min(a[1], b[0] - 0.003)
        rows = [r for r in rows if r[1] - r[0] >= 0.03]
    last_by_pitch: dict[int, list] = {}
    for r in rows:
        prev = last_by_pitch.get(r[2])
        if prev is not None and prev[1] > r[0] - 0.003:
            prev[1] = max(prev[0] + 0.02, r[0] - 0.003)
        last_by_pitch[r[2]] = r
    return NoteList.from_rows(tuple(r) for r in rows)


def _fit_octave(notes: list[tuple[float, float, int]], shift: int, centre: float, lo: int,
                hi: int) -> list[tuple[float, float, int]]:
    """Transpose by ``shift``, move whole octaves so the median lands near ``centre``, keep in range."""
    pitches = np.array([p for _, _, p in notes]) + shift
    octave = 12 * int(round((centre - float(np.median(pitches))) / 12.0))
    out = []
    for (on, dur, _), p in zip(notes, pitches + octave, strict=True):
        p = int(p)
        while p < lo:
            p += 12
        while p > hi:
            p -= 12
        out.append((on, dur, p))
    return out


def _arrange(piece: _Piece, rng: np.random.Generator, config: BuildConfig) -> _Arrangement:
    first_full = next((b for b in piece.bars if not b.pickup), piece.bars[0])
    beat_ql, _, _, _ = first_full.meter
    if piece.ref.collection == "bach":
        lo_hi = (60, 92)
    elif beat_ql >= 2:
        lo_hi = (48, 72)
    elif beat_ql == 1.5:
        lo_hi = (56, 92)
    elif beat_ql <= 0.5:
        lo_hi = (100, 160)
    else:
        lo_hi = (76, 124)
    beat_bpm = float(rng.uniform(*lo_hi))
    spq = 60.0 / beat_bpm / beat_ql  # seconds per quarter note
    seconds = piece.length * spq
    passes = 1
    while passes < 3 and passes * seconds < config.min_track_seconds:
        passes += 1

    all_notes = piece.melody + (piece.bass or []) + (piece.inner or [])
    tonic, mode = _estimate_key(all_notes, piece.melody[-1][2] % 12)
    if piece.chords is not None:
        chords, harmony = piece.chords, "chord symbols"
    elif piece.bass is None:
        chords, harmony = _harmonize(piece.melody, piece.bars, tonic, mode), "melody analysis"
    else:
        chords, harmony = None, "chorale voices"
    shift = int(rng.integers(-5, 7))

    styles = {}
    melody = _fit_octave(piece.melody, shift, 67.0, 40, 88)
    if piece.bass is not None:
        bass = _fit_octave(piece.bass, shift, 41.0, 28, 55)
        inner = _fit_octave(piece.inner, shift, 60.0, 43, 79)
    else:
        styles["Bass"] = str(rng.choice(["root", "root-fifth", "walk"]))
        styles["Keys"] = str(rng.choice(["block", "beats", "offbeats", "arpeggio"]))
        shifted = [dataclasses.replace(c, root=(c.root + shift) % 12, bass=(c.bass + shift) % 12,
                                       pcs=tuple(sorted((p + shift) % 12 for p in c.pcs)))
                   for c in chords]
        bass = _bass_line(shifted, piece.bars, rng, styles["Bass"])
        inner = _keys_part(shifted, piece.bars, rng, styles["Keys"])
    if not bass:
        raise EnsembleError(f"{piece.ref.path!r}: no bass notes could be made (no chords found)")
    if not inner:
        raise EnsembleError(f"{piece.ref.path!r}: no keys notes could be made (no chords found)")

    bars = [dataclasses.replace(b, offset=b.offset + p * piece.length, pickup=b.pickup)
            for p in range(passes) for b in piece.bars]
    pass_starts = {p * len(piece.bars) for p in range(1, passes)}
    downbeats = {round(b.offset, 6) for b in bars if not b.pickup}
    drums_ql = _drum_part(bars, pass_starts, rng)

    lead = float(rng.uniform(0.3, 0.6))
    programs = {s: int(rng.choice(PROGRAMS[s])) for s in ("Guitar", "Bass", "Keys")}
    programs["Drums"] = int(rng.choice(list(DRUM_KITS)))
    vel = {"Guitar": rng.uniform(90, 112), "Bass": rng.uniform(82, 104), "Keys": rng.uniform(58, 82)}

    def events(notes, v):
        return [(on, dur, p, v) for on, dur, p in _tile(notes, piece.length, passes)]

    stems = {
        "Guitar": _humanize(events(melody, vel["Guitar"]), spq=spq, lead=lead, rng=rng, jitter_s=0.005,
                            legato=float(rng.uniform(0.82, 0.97)), mono=True, downbeats=downbeats),
        "Bass": _humanize(events(bass, vel["Bass"]), spq=spq, lead=lead, rng=rng, jitter_s=0.004,
                          legato=float(rng.uniform(0.75, 0.95)), mono=True, downbeats=downbeats),
        "Keys": _humanize(events(inner, vel["Keys"]), spq=spq, lead=lead, rng=rng, jitter_s=0.005,
                          legato=0.95, mono=False, downbeats=downbeats),
    }
    drum_rows = []
    for on, key, v in drums_ql:
        start = max(0.0, lead + on * spq + float(np.clip(rng.normal(0, 0.003), -0.008, 0.008)))
        drum_rows.append((start, start + (0.8 if key in _CYMBALS else 0.2), key, v))
    stems["Drums"] = NoteList.from_rows(drum_rows)

    ts = f"{first_full.numerator}/{first_full.denominator}"
    key = {"source_tonic": PC_NAMES[tonic], "source_mode": mode, "transpose_semitones": shift,
           "tonic": PC_NAMES[(tonic + shift) % 12], "mode": mode,
           "name": f"{PC_NAMES[(tonic + shift) % 12]} {mode}"}
    roles = {"Guitar": "melody", "Bass": "bass", "Keys": "harmony", "Drums": "drums"}
    return _Arrangement(stems, programs, roles, round(60.0 / spq, 3), round(beat_bpm, 3), ts, key,
                        passes, styles, harmony)


# --------------------------------------------------------------------------------------------
# rendering


@functools.lru_cache(maxsize=2)
def _soundfont_bytes(path: str) -> bytes:
    """The SoundFont file's bytes, read once per process (a 6 MB parse per stem is avoidable)."""
    return Path(path).read_bytes()


def render_notes(notes: NoteList, *, program: int, is_drum: bool, n_samples: int,
                 soundfont: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Render one stem's notes with tinysoundfont, offline and sample-accurately.

    Events are applied at ``round(time * sample_rate)`` (note-offs before note-ons on the same
    sample) and the synth is run block by block between them.

    Args:
        notes: the stem's notes (seconds).
        program: GM program 0-127 (drums: the kit's preset number in bank 128).
        is_drum: render on the GM percussion channel.
        n_samples: output length; notes past it are cut.
        soundfont: path of a .sf2 file.

    Returns:
        [n_samples] float32 mono (the mean of the synth's two channels).

    Raises:
        EnsembleError: unreadable SoundFont or a preset it lacks.
    """
    import tinysoundfont

    try:
        synth = tinysoundfont.Synth(samplerate=int(sample_rate))
        sfid = synth.sfload(_soundfont_bytes(os.fspath(soundfont)))
        chan = 9 if is_drum else 0
        synth.program_select(chan, sfid, 128 if is_drum else 0, int(program), is_drums=is_drum)
    except (OSError, RuntimeError, tinysoundfont.SoundFontException) as exc:
        raise EnsembleError(
            f"SoundFont {os.fspath(soundfont)!r} cannot play program {program} "
            f"({'drum kit' if is_drum else 'melodic'}): {exc}") from None
    events = []
    for start, end, pitch, vel in zip(notes.onset_s, notes.offset_s, notes.pitch, notes.velocity,
                                      strict=True):
        events.append((int(round(start * sample_rate)), 1, int(pitch), int(vel)))
        events.append((int(round(end * sample_rate)), 0, int(pitch), 0))
    events.sort()
    out = np.zeros((n_samples, 2), dtype=np.float32)
    pos = 0
    for sample, kind, pitch, vel in events:
        sample = min(sample, n_samples)
        if sample > pos:
            out[pos:sample] = np.frombuffer(synth.generate_simple(sample - pos),
                                            dtype=np.float32).reshape(-1, 2)
            pos = sample
        if kind:
            synth.noteon(chan, pitch, vel)
        else:
            synth.noteoff(chan, pitch)
    if pos < n_samples:
        out[pos:] = np.frombuffer(synth.generate_simple(n_samples - pos),
                                  dtype=np.float32).reshape(-1, 2)
    return out.mean(axis=1)


def _midi_writer(notes: NoteList, program: int, is_drum: bool, tempo: float, name: str):
    def write(path: Path) -> None:
        import pretty_midi

        pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
        inst = pretty_midi.Instrument(program=program, is_drum=is_drum, name=name)
        for s, e, p, v in zip(notes.onset_s, notes.offset_s, notes.pitch, notes.velocity, strict=True):
            inst.notes.append(pretty_midi.Note(velocity=int(v), pitch=int(p), start=float(s),
                                               end=float(e)))
        pm.instruments.append(inst)
        pm.write(str(path))
    return write


def _rms_db(x: np.ndarray) -> float:
    r = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    return 20.0 * math.log10(r) if r > 0 else -np.inf


_TARGET_RMS_DB = {"Guitar": -20.0, "Bass": -22.0, "Keys": -26.0, "Drums": -22.0}


def build_track(ref: PieceRef, index: int, out_dir: str | os.PathLike,
                config: BuildConfig = BuildConfig()) -> dict:
    """Arrange, render and write one track ``out_dir/TrackNNNNN`` from one source piece.

    Args:
        ref: the source piece.
        index: track number (the NNNNN); with ``config.seed`` it seeds every choice.
        out_dir: the corpus folder.

    Returns:
        The track's metadata (as written to metadata.json).

    Raises:
        EnsembleError: naming the source path when it is missing, unparsable, has an empty part or
            too few notes; or when the SoundFont cannot be used.
    """
    fc = config.features
    sr = fc.sample_rate
    rng = np.random.default_rng([config.seed, index, 104729])
    try:
        piece = _read_piece(ref)
        arr = _arrange(piece, rng, config)
    except EnsembleError:
        raise
    # Thousands of third-party scores: one that trips music21 or the arranger in an unforeseen way
    # (IndexError, AttributeError, ...) is a bad source, reported with its path; rendering and
    # writing errors below (a full disk) still stop the build.
    except Exception as exc:  # noqa: BLE001
        raise EnsembleError(f"could not arrange {ref.path!r}"
                            f"{'' if ref.tune is None else f' tune {ref.tune}'}: "
                            f"{type(exc).__name__}: {exc}") from None
    soundfont = config.soundfont or str(default_soundfont())
    if not Path(soundfont).is_file():
        raise EnsembleError(f"SoundFont {soundfont!r} does not exist")

    end_s = max(float(nl.offset_s.max()) for nl in arr.stems.values() if len(nl))
    n_samples = int(math.ceil((end_s + config.tail_seconds) * sr))
    audio = {}
    gains_db = {}
    for name in STEMS:
        notes = arr.stems[name]
        if len(notes) == 0:
            raise EnsembleError(f"{ref.path!r}: the {name} part is empty (no notes)")
        y = render_notes(notes, program=arr.programs[name], is_drum=name == "Drums",
                         n_samples=n_samples, soundfont=soundfont, sample_rate=sr)
        level = _rms_db(y)
        if not math.isfinite(level):
            raise EnsembleError(f"{ref.path!r}: the {name} stem rendered silent "
                                f"(program {arr.programs[name]})")
        gains_db[name] = _TARGET_RMS_DB[name] + float(rng.uniform(-2, 2)) - level
        audio[name] = (y * 10.0 ** (gains_db[name] / 20.0)).astype(np.float32)
    mix = np.sum([audio[s] for s in STEMS], axis=0, dtype=np.float32)
    # one common gain for every stem and the mix keeps mix == sum(stems) and nothing clips
    peak = max(float(np.abs(mix).max()), max(float(np.abs(a).max()) for a in audio.values()))
    common = min(1.0, 0.891 / peak)  # -1 dBFS ceiling
    mix *= common
    for name in STEMS:
        audio[name] *= common
        gains_db[name] += 20.0 * math.log10(common)

    t = n_frames(n_samples, fc)
    feats = {}
    for name in STEMS:
        truth = notes_to_frames(arr.stems[name], t, config=fc, pitched=name != "Drums")
        feats[name] = stem_features(audio[name], truth, config=fc)

    import pretty_midi

    split_key = (f"{ref.collection}:{_normalize_title(piece.title)}" if ref.collection != "bach"
                 else ref.key)
    stems_meta = {}
    for name in STEMS:
        nl = arr.stems[name]
        is_drum = name == "Drums"
        entry = {
            "role": arr.roles[name],
            "program": arr.programs[name],
            "program_name": (f"{DRUM_KITS[arr.programs[name]]} drum kit" if is_drum
                             else pretty_midi.program_to_instrument_name(arr.programs[name])),
            "is_drum": is_drum,
            "gain_db": round(gains_db[name], 3),
            "f0_source": "none" if is_drum else "notes",
            "polyphonic": bool(feats[name]["n_notes"].max() > 1) if not is_drum else False,
            **note_summary(nl),
            "notes": nl.to_json(),
        }
        if name in arr.styles:
            entry["style"] = arr.styles[name]
        stems_meta[name] = entry
    duration = n_samples / sr
    meta = {
        "format_version": FORMAT_VERSION,
        "corpus": "BabyBand",
        "track": f"Track{index:05d}",
        "source": {"collection": ref.collection, "path": _corpus_relative(ref.path),
                   "tune_index": ref.tune, "title": piece.title, "piece_key": ref.key,
                   "passes": arr.passes, "harmony": arr.harmony},
        "split": split_for(split_key, config.seed, config.split_fractions),
        "split_key": split_key,
        "seed": config.seed,
        "sample_rate": sr,
        "hop_length": fc.hop_length,
        "frame_rate": fc.frame_rate,
        "duration_s": round(duration, 4),
        "tempo_bpm": arr.tempo_bpm,
        "beat_bpm": arr.beat_bpm,
        "time_signature": arr.time_signature,
        "key": arr.key,
        "soundfont": Path(soundfont).name,
        "stems": stems_meta,
    }
    midi = {name: _midi_writer(arr.stems[name], arr.programs[name], name == "Drums", arr.tempo_bpm,
                               name) for name in STEMS}
    write_track(Path(out_dir) / meta["track"], stems=audio, mix=mix, features=feats,
                mix_loudness_db=loudness_db(mix, config=fc), metadata=meta, midi=midi, config=fc)
    return meta


def _normalize_title(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", title.lower()).strip() or "untitled"


def _track_job(ref: PieceRef, index: int, out_dir: str, config: BuildConfig) -> dict:
    """Worker entry point (top level, so spawn can pickle it): a result dict, never an exception
    for a bad source."""
    try:
        meta = build_track(ref, index, out_dir, config)
    except EnsembleError as exc:
        return {"ok": False, "index": index, "piece": ref.key, "message": str(exc)}
    return {"ok": True, "index": index, "piece": ref.key, "track": meta["track"],
            "duration_s": meta["duration_s"], "split": meta["split"]}


def _exit_with_parent(parent_pid: int) -> None:
    """Pool-worker initializer: end this worker when the build process is gone.

    A worker of a build killed with SIGKILL is not stopped by multiprocessing; left running it
    would keep writing tracks next to the resumed build. A daemon thread polls the parent id.
    """
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class _SerialExecutor(cf.Executor):
    """Runs jobs in the calling process (``workers=1``), with the Executor interface."""

    def submit(self, fn, /, *args, **kwargs):
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future, as a pool would
            fut.set_exception(exc)
        return fut


def _corpus_json(out: Path, config: BuildConfig, summary: dict | None, skipped: list) -> dict:
    return {
        "name": "BabyBand",
        "format_version": FORMAT_VERSION,
        "seed": config.seed,
        "config": config.content_dict(),
        "minutes_requested": config.minutes,
        "collections": {"bach": "music21 corpus bach/bwv* (chorales, SATB)",
                        "essen": "music21 corpus essenFolksong/*.abc (not test*)",
                        "nottingham": "music21 corpus nottingham-dataset/*.abc"},
        "held_out": "every other music21 corpus collection (reserved for evaluation)",
        "stems": list(STEMS),
        "soundfont": Path(config.soundfont).name if config.soundfont else "TimGM6mb.sf2 (pretty_midi)",
        "summary": summary or {},
        "skipped": [{"piece": k, "message": m} for k, m in skipped],
    }


def build_corpus(out_dir: str | os.PathLike, config: BuildConfig = BuildConfig(), *,
                 workers: int | None = None, progress: bool = True,
                 on_message: Callable[[str], None] | None = None,
                 pieces: Sequence[PieceRef] | None = None) -> BuildReport:
    """Build (or finish) a BabyBand corpus in ``out_dir``.

    Pieces are taken in the seeded order of :func:`plan_pieces` (Track00000 = the first); finished
    tracks already in ``out_dir`` are kept and counted, and new tracks are started until
    ``config.minutes`` of audio exist. A source that cannot be used is reported through
    ``on_message`` (naming its path) and skipped; its track number stays unused.

    Args:
        out_dir: the corpus folder (created if missing).
        config: what to build.
        workers: processes (default ``os.cpu_count()``); 1 renders in this process.
        progress: show a tqdm bar (minutes of audio) on stderr.
        on_message: called with each warning line (default: print to stderr above the bar).
        pieces: build exactly these pieces in this order instead of the planned collections
            (tests, small custom corpora); ``config.minutes`` still stops the build early.

    Returns:
        A :class:`BuildReport`.

    Raises:
        EnsembleError: another build holds the folder, the folder was built with other settings,
            or a bad worker count / SoundFont.
    """
    from filelock import FileLock, Timeout
    from tqdm import tqdm

    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EnsembleError(f"output {str(out)!r} exists and is not a folder")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise EnsembleError(f"workers must be a positive integer, got {workers!r}")
    soundfont = Path(config.soundfont) if config.soundfont else default_soundfont()
    if not soundfont.is_file():
        raise EnsembleError(f"SoundFont {str(soundfont)!r} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    messages: list[str] = []

    def say(msg: str) -> None:
        messages.append(msg)
        if on_message is not None:
            on_message(msg)
        else:
            tqdm.write(msg, file=sys.stderr)

    lock = FileLock(str(out / ".build.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise EnsembleError(f"another build is writing into {str(out)!r} (lock {str(out / '.build.lock')!r})"
                            ) from None
    try:
        info_path = out / "corpus.json"
        old_skipped: dict[str, str] = {}
        if info_path.exists():
            try:
                old = json.loads(info_path.read_text())
            except ValueError:
                old = None
            if old is not None:
                if old.get("config") != json.loads(json.dumps(config.content_dict())):
                    raise EnsembleError(
                        f"{str(out)!r} holds a corpus built with other settings "
                        f"(seed {old.get('seed')}); use the same seed/settings to resume or a new folder")
                old_skipped = {s["piece"]: s["message"] for s in old.get("skipped", [])}
        write_json_atomic(info_path, _corpus_json(out, config, None, list(old_skipped.items())))
        for p in clean_partials(out):
            say(f"removed an unfinished track left by an interrupted build: {p}")
        order = list(pieces) if pieces is not None else plan_pieces(config)
        existing = {}
        for p in list_tracks(out):
            try:
                existing[p.name] = json.loads((p / "metadata.json").read_text())
            except ValueError:
                continue
        report = BuildReport(out_dir=out)
        target = config.minutes * 60.0
        done = 0.0
        per_split: dict[str, float] = {}
        skipped: dict[str, str] = dict(old_skipped)
        bar = tqdm(total=round(config.minutes, 2), unit="min", disable=not progress,
                   desc="BabyBand", dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} "
                   "min [{elapsed}<{remaining}{postfix}]")
        estimate = 30.0  # seconds of audio assumed per track in flight
        executor: cf.Executor
        if workers == 1:
            executor = _SerialExecutor()
        else:
            executor = cf.ProcessPoolExecutor(max_workers=workers,
                                              mp_context=multiprocessing.get_context("spawn"),
                                              initializer=_exit_with_parent,
                                              initargs=(os.getpid(),))
        in_flight: dict[cf.Future, int] = {}
        k = 0

        def account(duration: float, split: str) -> None:
            nonlocal done
            done += duration
            per_split[split] = per_split.get(split, 0.0) + duration / 60.0
            bar.update(min(duration / 60.0, max(0.0, bar.total - bar.n)))

        try:
            while True:
                while (len(in_flight) < 2 * workers and k < len(order)
                       and done + estimate * len(in_flight) < target):
                    name, ref = f"Track{k:05d}", order[k]
                    if name in existing and existing[name]["source"].get("piece_key") != ref.key:
                        say(f"warning: {str(out / name)!r} holds "
                            f"{existing[name]['source'].get('piece_key')!r}, not {ref.key!r}; rebuilt")
                        existing.pop(name)
                    if name in existing:
                        account(float(existing[name]["duration_s"]), existing[name]["split"])
                        report.tracks_reused.append(name)
                    elif ref.key in skipped:
                        pass  # failed before; the message is in corpus.json
                    else:
                        in_flight[executor.submit(_track_job, ref, k, str(out), config)] = k
                    k += 1
                if not in_flight:
                    break
                finished, _ = cf.wait(list(in_flight), return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    in_flight.pop(fut)
                    res = fut.result()
                    if res["ok"]:
                        report.tracks_built.append(res["track"])
                        account(res["duration_s"], res["split"])
                        bar.set_postfix_str(f"{len(report.tracks_built) + len(report.tracks_reused)}"
                                            " tracks", refresh=False)
                    else:
                        skipped[res["piece"]] = res["message"]
                        say(f"warning: skipped {res['piece']}: {res['message']}")
        finally:
            for fut in in_flight:
                fut.cancel()
            executor.shutdown(wait=True, cancel_futures=True)
            bar.close()
        if done < target:
            say(f"warning: only {done / 60:.1f} of {config.minutes:g} minutes could be built "
                f"(ran out of source pieces)")
        report.minutes = done / 60.0
        report.minutes_per_split = {s: round(v, 3) for s, v in sorted(per_split.items())}
        report.skipped = sorted(skipped.items())
        report.tracks_built.sort()
        summary = {"tracks": len(report.tracks_built) + len(report.tracks_reused),
                   "minutes": round(report.minutes, 3), "minutes_per_split": report.minutes_per_split}
        write_json_atomic(info_path, _corpus_json(out, config, summary, report.skipped))
        report.seconds = time.perf_counter() - t0
        return report
    finally:
        lock.release()
