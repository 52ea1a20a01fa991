"""Conform a retrieved segment's controls to the input: key and register, tempo and beat, level.

A database segment is stored as controls (f0, voicing, loudness at 100 frames/s). Before it is
rendered after the user's clip, :func:`conform` turns it into what the continuation plays:

* **key and register**: f0 shifted by the candidate's ``transpose`` (the key shift retrieval chose,
  plus whole octaves that put its first note near the input's last);
* **tempo**: the curves are read at the candidate's ``stretch`` (output seconds per source second),
  so the source's beats fall at the input's tempo; f0 and voicing are read nearest-frame (notes keep
  sharp edges, no glides are invented between them), loudness is interpolated linearly;
* **beat**: the source is played from the start retrieval aligned (:func:`ensemble.rag.aligned_starts`:
  moved by less than half an output beat so its beats land on the input's grid past the seam);
* **level**: the loudness curve is offset so the continuation's phrase level equals the input's last
  phrase's (the performer's level measure, :func:`ensemble.rag.phrase_level`).

**Continuity** (:func:`note_profile`, :func:`continuity_cost`): how the user plays goes on across
the seam -- the number of notes a second and the register of the continuation's first seconds
against the input's last. Retrieval proposes a pool of ``ContinuityConfig.pool`` x K candidates by
the composite; :func:`ensemble.extend.extend` conforms them all and keeps the K whose first seconds
continue the playing best (a flute's quick run is not followed by two long notes an octave down).

:func:`level_gain_db` then measures what the listener hears -- the rendered continuation's power
against the input's last seconds -- and gives the residual gain that matches them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ensemble.colour import ColourConfig, long_term_spectrum
from ensemble.errors import EnsembleError
from ensemble.models.decoder import LOUDNESS_FLOOR_DB
from ensemble.rag import Candidate, Query, RagDatabase, phrase_level

__all__ = ["Continuation", "ContinuityConfig", "KeyReference", "active_chroma", "chroma_template", "conform",
           "continuity_cost", "expected_chroma", "key_correlation", "key_reference", "level_gain_db", "note_profile",
           "opening_sound_db", "pitch_class_profile"]

SILENT_DB = -120.0
# the frames a chromagram of a stretch is averaged over: within this many dB of its loudest (the key)
ACTIVE_RANGE_DB = 40.0


@dataclass(frozen=True)
class ContinuityConfig:
    """How the continuation's first seconds are matched to the input's last (the limits, once).

    Attributes:
        pool: retrieval proposes ``pool`` x K candidates by the composite (at most ``max_pool``);
            the K that continue the playing best are kept. 1: the composite's Top-K as they are.
        max_pool: the most candidates conformed and compared per request.
        window_seconds: the input's last and the continuation's first seconds compared.
        min_note_frames: a pitch held this many frames (10 ms each) starts a note; shorter moves
            (onset glitches of a pitch tracker) do not.
        new_note_semitones: a voiced pitch this far from the current note's starts a new note (a
            violin's vibrato, +-0.5 semitone, does not).
        register_octave_cost: the cost of one octave of register difference, in the units of one
            doubling (or halving) of the notes per second.
        sound_cost_per_db: the cost of one dB of difference (RMS over 1/6-octave points from
            ``sound_band_hz``) between the long-term spectra of two renderings in the request's timbre:
            the candidate's first ``window_seconds`` and the input's own last ones
            (:func:`opening_sound_db`). The pool's openings are rendered for it; 0: they are not,
            and the note profile alone decides.
        sound_band_hz: the band compared (Hz, low and high).
        key_cost: the cost of 1 - r, r the correlation of the input's key as a chromagram hears it
            with the whole continuation's (:class:`KeyReference`: the input's mean chroma against
            the chroma the continuation's notes give in the user's instrument): a continuation
            whose notes leave the input's key (another mode, a tune's modulation, a wrong key shift)
            costs up to twice this. 0: not counted.
    """

    pool: int = 5
    max_pool: int = 30
    window_seconds: float = 3.0
    min_note_frames: int = 4
    new_note_semitones: float = 0.7
    register_octave_cost: float = 1.0
    sound_cost_per_db: float = 0.5
    sound_band_hz: tuple[float, float] = (60.0, 7000.0)
    key_cost: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.pool <= 10:
            raise EnsembleError(f"continuity pool = {self.pool}; allowed: 1..10")
        if not 1 <= self.max_pool <= 100:
            raise EnsembleError(f"continuity max_pool = {self.max_pool}; allowed: 1..100")
        if not 0.5 <= self.window_seconds <= 10.0:
            raise EnsembleError(f"continuity window_seconds = {self.window_seconds}; allowed: 0.5..10")
        if not 1 <= self.min_note_frames <= 50:
            raise EnsembleError(f"continuity min_note_frames = {self.min_note_frames}; allowed: 1..50")
        if not 0.1 <= self.new_note_semitones <= 6.0:
            raise EnsembleError(f"continuity new_note_semitones = {self.new_note_semitones}; allowed: 0.1..6")
        if not 0.0 <= self.register_octave_cost <= 10.0:
            raise EnsembleError(f"continuity register_octave_cost = {self.register_octave_cost}; allowed: 0..10")
        if not 0.0 <= self.sound_cost_per_db <= 10.0:
            raise EnsembleError(f"continuity sound_cost_per_db = {self.sound_cost_per_db}; allowed: 0..10")
        if not 0.0 <= self.key_cost <= 50.0:
            raise EnsembleError(f"continuity key_cost = {self.key_cost}; allowed: 0..50")
        lo, hi = self.sound_band_hz
        if not 20.0 <= lo < hi <= 8000.0 or hi / lo < 2.0:
            raise EnsembleError(f"continuity sound_band_hz = {self.sound_band_hz}; allowed: (low, high) within "
                                "20..8000 Hz, at least an octave apart")


def note_profile(f0_hz: np.ndarray, voiced: np.ndarray, *, fps: float,
                 config: ContinuityConfig = ContinuityConfig()) -> tuple[float, float]:
    """(notes a second, mean pitch in MIDI) of a stretch of controls; (0, NaN) when nothing is voiced.

    A note starts where a voiced pitch is held ``min_note_frames`` frames either after an unvoiced
    gap or ``new_note_semitones`` away from the current note's pitch.
    """
    f0 = np.asarray(f0_hz, np.float64)
    ok = np.asarray(voiced, bool) & (f0 > 0)
    if len(f0) == 0 or not ok.any():
        return 0.0, float("nan")
    midi = np.where(ok, 69.0 + 12.0 * np.log2(np.where(ok, f0, 440.0) / 440.0), np.nan)
    n, cur, run_start, run_pitch = 0, float("nan"), -1, float("nan")
    for i, m in enumerate(midi):
        if not math.isfinite(m):
            cur, run_start = float("nan"), -1
            continue
        moved = not math.isfinite(cur) or abs(m - cur) >= config.new_note_semitones
        if not moved:
            run_start = -1
            continue
        if run_start < 0 or abs(m - run_pitch) >= config.new_note_semitones:
            run_start, run_pitch = i, m  # a candidate note starts here
        if i - run_start + 1 >= config.min_note_frames:
            n += 1
            cur, run_start = run_pitch, -1
    return n / (len(f0) / fps), float(np.nanmean(midi))


def pitch_class_profile(f0_hz: np.ndarray, voiced: np.ndarray, loudness_db: np.ndarray, *,
                        range_db: float = ACTIVE_RANGE_DB) -> np.ndarray:
    """[12] how long each pitch class (C = 0) sounds in a stretch of controls: the voiced frames whose
    loudness is within ``range_db`` of the stretch's loudest, counted by the nearest equal-tempered
    pitch class of their f0 -- what a frame-normalised chromagram averaged over the active frames reads
    of the fundamentals. All zeros when nothing is voiced.
    """
    f0 = np.asarray(f0_hz, np.float64)
    ld = np.asarray(loudness_db, np.float64)
    ok = np.asarray(voiced, bool) & (f0 > 0) & np.isfinite(ld)
    out = np.zeros(12)
    if not ok.any():
        return out
    ok &= ld >= ld[ok].max() - range_db
    pc = np.round(12.0 * np.log2(f0[ok] / 440.0) + 69.0).astype(np.int64) % 12
    np.add.at(out, pc, 1.0)
    return out


def key_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation (-1..1) of two :func:`pitch_class_profile` s; NaN when either is flat."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.std() < 1e-12 or b.std() < 1e-12:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def chroma_template(chroma: np.ndarray, f0_hz: np.ndarray, voiced: np.ndarray, loudness_db: np.ndarray, *,
                    range_db: float = ACTIVE_RANGE_DB) -> np.ndarray | None:
    """[12] the chroma one note of this instrument gives, its pitch class at C: the mean over the
    voiced frames within ``range_db`` of the loudest of each frame's chroma ([12, T], on the controls'
    grid) rolled down by the pitch class of its f0 (its harmonics put weight on the fifth, the
    third...). None when nothing is voiced."""
    f0 = np.asarray(f0_hz, np.float64)
    ld = np.asarray(loudness_db, np.float64)
    ok = np.asarray(voiced, bool) & (f0 > 0) & np.isfinite(ld)
    if not ok.any():
        return None
    ok &= ld >= ld[ok].max() - range_db
    idx = np.flatnonzero(ok)
    pc = np.round(12.0 * np.log2(f0[idx] / 440.0) + 69.0).astype(np.int64) % 12
    rows = (np.arange(12)[None, :] + pc[:, None]) % 12  # frame j's chroma read from its own pitch class
    return np.asarray(chroma, np.float64)[rows, idx[:, None]].mean(axis=0)


def active_chroma(chroma: np.ndarray, loudness_db: np.ndarray, *, range_db: float = ACTIVE_RANGE_DB) -> np.ndarray:
    """[12] the mean of a chromagram ([12, T]) over the frames within ``range_db`` of the loudest."""
    ld = np.asarray(loudness_db, np.float64)
    ok = np.isfinite(ld)
    if not ok.any():
        return np.zeros(12)
    ok &= ld >= ld[ok].max() - range_db
    return np.asarray(chroma, np.float64)[:, ok].mean(axis=1)


def expected_chroma(profile: np.ndarray, template: np.ndarray) -> np.ndarray:
    """[12] the mean chroma of notes held as long as ``profile`` (:func:`pitch_class_profile`) says,
    each sounding ``template`` (:func:`chroma_template`) moved to its pitch class."""
    profile = np.asarray(profile, np.float64)
    rolled = np.stack([np.roll(template, pc) for pc in range(12)])  # [pc, 12]
    return profile @ rolled / max(profile.sum(), 1e-12)


@dataclass(frozen=True)
class KeyReference:
    """The input's key as a chromagram hears it, to correlate continuations with.

    Attributes:
        reference: [12] the input's mean chroma over its active frames (:func:`active_chroma`), or,
            without a chromagram, the pitch classes of its notes (:func:`pitch_class_profile`).
        template: [12] the input instrument's chroma of one note (:func:`chroma_template`; None:
            continuations are read by the pitch classes of their notes alone).
    """

    reference: np.ndarray
    template: np.ndarray | None = None

    def correlation(self, f0_hz: np.ndarray, voiced: np.ndarray, loudness_db: np.ndarray) -> float:
        """:func:`key_correlation` of what these controls would give (their notes, each sounding
        ``template``) with the input's ``reference``; NaN when either has no pitch."""
        prof = pitch_class_profile(f0_hz, voiced, loudness_db)
        return key_correlation(prof if self.template is None else expected_chroma(prof, self.template),
                               self.reference)


def key_reference(f0_hz: np.ndarray, voiced: np.ndarray, loudness_db: np.ndarray,
                  chroma: np.ndarray | None = None) -> KeyReference:
    """The :class:`KeyReference` of an input's controls and (when given) its chromagram [12, T] on
    the same grid: its mean chroma and its instrument's chroma of one note; without a chromagram, or
    with nothing voiced, the pitch classes of its notes."""
    template = None if chroma is None else chroma_template(chroma, f0_hz, voiced, loudness_db)
    if template is None:
        return KeyReference(pitch_class_profile(f0_hz, voiced, loudness_db))
    return KeyReference(active_chroma(chroma, loudness_db), template)


def continuity_cost(cont: tuple[float, float], inp: tuple[float, float],
                    config: ContinuityConfig = ContinuityConfig(), sound_db: float | None = None,
                    key_r: float | None = None) -> float:
    """How much a continuation's (notes/s, register) departs from the input's: |log2 of the ratio of
    notes a second (0.5 notes/s added to both)| + octaves of register difference x
    ``register_octave_cost``; a continuation or input without a voiced note costs its rate term only.
    ``sound_db`` (:func:`opening_sound_db`, when the openings were rendered) adds
    ``sound_cost_per_db`` per dB; ``key_r`` (:func:`key_correlation` of the whole continuation's
    pitch classes with the whole input's) adds ``key_cost`` x (1 - r); a NaN or None adds nothing."""
    rate = abs(math.log2((cont[0] + 0.5) / (inp[0] + 0.5)))
    if math.isfinite(cont[1]) and math.isfinite(inp[1]):
        rate += config.register_octave_cost * abs(cont[1] - inp[1]) / 12.0
    if sound_db is not None and math.isfinite(sound_db):
        rate += config.sound_cost_per_db * sound_db
    if key_r is not None and math.isfinite(key_r):
        rate += config.key_cost * (1.0 - key_r)
    return rate


def opening_sound_db(opening: np.ndarray, reference: np.ndarray, *, sample_rate: int,
                     config: ContinuityConfig = ContinuityConfig()) -> float:
    """How far ``opening``'s colour is from ``reference``'s: the RMS, over 1/6-octave points across
    ``config.sound_band_hz``, of the difference of their long-term spectra (dB;
    :func:`ensemble.colour.long_term_spectrum` over active frames, 1/3-octave smoothing) after the
    mean difference is removed (the level does not count). NaN when either side is silent.
    """
    lo, hi = config.sound_band_hz
    points = lo * 2.0 ** (np.arange(int(math.floor(6 * math.log2(hi / lo))) + 1) / 6.0)
    spectra = []
    for x in (opening, reference):
        x = np.asarray(x, np.float64)
        if x.size == 0 or float(np.max(np.abs(x))) < 1e-6:
            return float("nan")
        freqs, db, _ = long_term_spectrum(x, sample_rate=sample_rate, config=ColourConfig())
        spectra.append(np.interp(points, freqs, db))
    diff = spectra[0] - spectra[1]
    return float(np.sqrt(np.mean(np.square(diff - diff.mean()))))


@dataclass(frozen=True)
class Continuation:
    """What one candidate plays after the input, as controls, from the crossfade's start.

    Attributes:
        f0_hz: [T] Hz, 0 where unvoiced (shifted by ``transpose``).
        voiced: [T] bool.
        loudness_db: [T] dB (A-weighted), level-matched to the input.
        transpose: semitones applied to the stored f0 (key shift + octaves).
        stretch: output seconds per source second.
        source_start_seconds: where in its line the continuation starts (after beat alignment).
        level_offset_db: the loudness offset applied to the stored curve.
        pool_rank: its composite rank in the pool it was kept from by continuity (None: not
            re-ranked).
        continuity_cost: :func:`continuity_cost` of its first seconds against the input's last.
        notes_per_second, register_midi: :func:`note_profile` of its first seconds.
        input_notes_per_second, input_register_midi: the same of the input's last seconds.
        opening_sound_db: :func:`opening_sound_db` of its rendered first seconds against the input's
            own last ones (None: the openings were not rendered).
        key_correlation: :meth:`KeyReference.correlation` of its notes after the crossfade with the
            input's key (None: not re-ranked, or either side has no pitch).
    """

    f0_hz: np.ndarray
    voiced: np.ndarray
    loudness_db: np.ndarray
    transpose: int
    stretch: float = 1.0
    source_start_seconds: float = 0.0
    level_offset_db: float = 0.0
    pool_rank: int | None = None
    continuity_cost: float | None = None
    notes_per_second: float | None = None
    register_midi: float | None = None
    input_notes_per_second: float | None = None
    input_register_midi: float | None = None
    opening_sound_db: float | None = None
    key_correlation: float | None = None


def conform(db: RagDatabase, cand: Candidate, q: Query, *, frames: int,
            conform_level: bool = True) -> Continuation:
    """The candidate's controls for ``frames`` output frames, conformed to the input.

    Args:
        db: the database the candidate came from.
        cand: the candidate (its ``transpose``, ``stretch`` and beat-aligned
            ``source_start_seconds`` as retrieval chose them, :func:`ensemble.rag.aligned_starts`).
        q: the input's query (its level).
        frames: output frames the continuation lasts (from the crossfade's start).
        conform_level: offset the loudness to the input's phrase level.

    Returns:
        A :class:`Continuation`; frames past the line's end (never for a playable candidate) are
        unvoiced and silent.
    """
    fps = db.fps
    line = int(db.chunk_track[cand.chunk])
    f0, voiced, loud = db.track_features(line)
    n_line = len(f0)
    stretch = float(cand.stretch)
    start_s = cand.source_start_seconds
    if not math.isfinite(start_s):
        start_s = int(db.chunk_start[cand.chunk]) / fps
    pos = start_s * fps + np.arange(frames) / stretch  # source frame of each output frame
    near = np.round(pos).astype(np.int64)
    inside = near < n_line
    near_c = np.clip(near, 0, n_line - 1)
    v = np.asarray(voiced, bool)[near_c] & inside
    f = np.where(v, np.asarray(f0, np.float64)[near_c], 0.0) * 2.0 ** (cand.transpose / 12.0)
    ld = np.interp(pos, np.arange(n_line), np.asarray(loud, np.float64))
    ld = np.where(inside, ld, SILENT_DB)
    offset = 0.0
    if conform_level and math.isfinite(q.level):
        window = ld[: int(db.config.segment_seconds * fps)]
        src_level = phrase_level(window[window > SILENT_DB])
        if math.isfinite(src_level):
            offset = q.level - src_level
            ld = np.where(inside, np.maximum(ld + offset, LOUDNESS_FLOOR_DB), SILENT_DB)
    return Continuation(f0_hz=f.astype(np.float32), voiced=v, loudness_db=ld.astype(np.float32),
                        transpose=int(cand.transpose), stretch=stretch,
                        source_start_seconds=round(start_s, 3), level_offset_db=round(offset, 2))


def level_gain_db(before: np.ndarray, after: np.ndarray, *, sample_rate: int, seconds: float = 3.0,
                  limit_db: float = 24.0) -> float:
    """dB to apply to ``after`` so its first ``seconds`` carry the power of ``before``'s last.

    The level step a listener hears at the seam is the power of the leader before vs after it;
    this is that step's correction, within +-``limit_db`` (0 when either side is silent).
    """
    n = int(seconds * sample_rate)
    pb = float(np.mean(np.square(before[-n:], dtype=np.float64))) if len(before) else 0.0
    pa = float(np.mean(np.square(after[:n], dtype=np.float64))) if len(after) else 0.0
    if pb <= 1e-14 or pa <= 1e-14:
        return 0.0
    return float(np.clip(10.0 * np.log10(pb / pa), -limit_db, limit_db))
