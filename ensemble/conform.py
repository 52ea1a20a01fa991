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

:func:`level_gain_db` then measures what the listener hears -- the rendered continuation's power
against the input's last seconds -- and gives the residual gain that matches them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ensemble.models.decoder import LOUDNESS_FLOOR_DB
from ensemble.rag import Candidate, Query, RagDatabase, phrase_level

__all__ = ["Continuation", "conform", "level_gain_db"]

SILENT_DB = -120.0


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
    """

    f0_hz: np.ndarray
    voiced: np.ndarray
    loudness_db: np.ndarray
    transpose: int
    stretch: float = 1.0
    source_start_seconds: float = 0.0
    level_offset_db: float = 0.0


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
