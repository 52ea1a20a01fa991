"""Beat tracking: librosa's tracker on an onset envelope, with the beats extended over the whole clip.

A clip's grid covers it from end to end: tracked beats are extrapolated before the first and after
the last one with the median inter-beat interval, so every frame belongs to a beat. When tracking
fails (a silent clip, or fewer than ``min_beats`` beats) a constant grid at a default tempo is used
instead and the grid says so (``source == "default"``).

:func:`beat_phase_features` turns a grid into per-frame position-in-beat features (the arranger's
``beat`` input): the same grid the performer lays its drums on, so the arranger can place follower
accents on the beat and its subdivisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

from ensemble.errors import EnsembleError

__all__ = ["BeatGrid", "track_beats", "estimate_tempo", "default_grid", "extend_grid", "beat_phase",
           "beat_phase_features", "BEAT_HARMONICS"]

BEAT_HARMONICS = 4  # sin/cos of 2*pi*k*phase for k = 1..4: beats, 8ths, triplets, 16ths


@dataclass(frozen=True)
class BeatGrid:
    """Beat times of a clip.

    Attributes:
        times_s: [B] increasing beat times in seconds; the first is <= 0 and the last >= the clip's
            duration, so consecutive beats bracket every instant of the clip.
        tempo_bpm: beats per minute (60 / median inter-beat interval).
        source: "tracked" (librosa beat tracking) or "default" (a constant grid).
        n_tracked: beats found by the tracker (0 for a default grid).
    """

    times_s: np.ndarray
    tempo_bpm: float
    source: str
    n_tracked: int

    def inside(self, duration_s: float) -> np.ndarray:
        """The beats that fall within [0, duration_s)."""
        t = self.times_s
        return t[(t >= 0) & (t < duration_s)]


def extend_grid(beats_s: np.ndarray, duration_s: float) -> np.ndarray:
    """Extrapolate beats with their median interval so the grid spans [<= 0, >= duration_s].

    Args:
        beats_s: [B >= 2] increasing beat times, seconds.
        duration_s: clip length, seconds.

    Returns:
        [B'] beat times, a superset of ``beats_s``.
    """
    beats = np.asarray(beats_s, dtype=np.float64)
    if beats.ndim != 1 or len(beats) < 2 or np.any(np.diff(beats) <= 0):
        raise EnsembleError(f"need at least 2 increasing beat times, got {len(np.atleast_1d(beats))}")
    ibi = float(np.median(np.diff(beats)))
    n_before = int(np.ceil(max(0.0, beats[0]) / ibi))
    n_after = int(np.ceil(max(0.0, duration_s - beats[-1]) / ibi))
    before = beats[0] - ibi * np.arange(n_before, 0, -1)
    after = beats[-1] + ibi * np.arange(1, n_after + 1)
    return np.concatenate([before, beats, after])


def default_grid(duration_s: float, tempo_bpm: float = 100.0) -> BeatGrid:
    """A constant grid starting at 0 s."""
    if not 20.0 <= tempo_bpm <= 400.0:
        raise EnsembleError(f"default tempo {tempo_bpm} BPM is outside 20..400 BPM")
    ibi = 60.0 / tempo_bpm
    n = int(np.ceil(duration_s / ibi)) + 1
    return BeatGrid(np.arange(max(n, 2)) * ibi, float(tempo_bpm), "default", 0)


def estimate_tempo(onset: np.ndarray, *, frame_rate: float, start_bpm: float = 110.0,
                   chunk_seconds: float = 60.0, ac_seconds: float = 8.0) -> float:
    """librosa's global tempo estimate, with the tempogram averaged chunk by chunk.

    ``librosa.feature.tempo`` averages an autocorrelation tempogram over the whole clip and picks
    its peak under a log-normal prior around ``start_bpm``; the tempogram of a 10-minute clip takes
    ~2 GB. Its columns depend only on ``ac_seconds`` of envelope around them, so summing them over
    chunks padded by that window gives the same average in bounded memory.

    Args:
        onset: [T] onset strength.
        frame_rate: frames/s.

    Returns:
        Tempo in BPM.
    """
    win = int(librosa.time_to_frames(ac_seconds, sr=frame_rate, hop_length=1))
    T = len(onset)
    chunk = int(chunk_seconds * frame_rate)
    total = np.zeros((win, 1))
    for start in range(0, T, chunk if T > 1.5 * chunk else T):
        stop = min(T, start + chunk) if T > 1.5 * chunk else T
        lo, hi = max(0, start - win), min(T, stop + win)
        tg = librosa.feature.tempogram(onset_envelope=onset[lo:hi], sr=frame_rate, hop_length=1,
                                       win_length=win)  # [win, hi - lo]
        total += tg[:, start - lo:stop - lo].sum(axis=1, keepdims=True)
    tempo = librosa.feature.tempo(tg=total / T, sr=frame_rate, hop_length=1, start_bpm=start_bpm,
                                  aggregate=None)
    return float(np.asarray(tempo).reshape(-1)[0])


def track_beats(onset: np.ndarray, *, frame_rate: float, duration_s: float,
                default_tempo_bpm: float = 100.0, min_beats: int = 4,
                start_bpm: float = 110.0, max_shift_s: float = 0.06) -> BeatGrid:
    """Beat-track an onset envelope and extend the beats over the clip.

    Args:
        onset: [T] onset strength on the project grid (``frame_rate`` frames/s).
        frame_rate: frames per second of ``onset``.
        duration_s: clip length, seconds.
        default_tempo_bpm: tempo of the fallback grid.
        min_beats: fewer tracked beats than this -> the default grid.
        start_bpm: the tracker's tempo prior.
        max_shift_s: largest latency correction (see the code comment).

    Returns:
        A :class:`BeatGrid` covering the clip.
    """
    onset = np.asarray(onset, dtype=np.float64)
    if onset.ndim != 1 or onset.size == 0:
        raise EnsembleError(f"onset envelope must be [T >= 1], got {onset.shape}")
    if not np.any(onset > 1e-6):
        return default_grid(duration_s, default_tempo_bpm)
    bpm = estimate_tempo(onset, frame_rate=frame_rate, start_bpm=start_bpm)
    _, frames = librosa.beat.beat_track(onset_envelope=onset, sr=frame_rate, hop_length=1,
                                        bpm=bpm, units="frames", trim=True)
    frames = np.unique(np.asarray(frames, dtype=np.int64))
    shift = 0.0
    if len(frames):
        # The tracker puts beats on onset-envelope peaks, which trail the notes' starts by 20-45 ms
        # (soft attacks, a 128 ms analysis window). One shift per clip -- the median distance back
        # to the preceding envelope minimum, at most max_shift_s -- keeps the grid regular.
        back = librosa.onset.onset_backtrack(frames, onset)
        shift = float(np.clip(np.median(frames - back), 0.0, max_shift_s * frame_rate))
    beats = (frames - shift) / frame_rate
    if len(beats) < max(2, min_beats):
        grid = default_grid(duration_s, default_tempo_bpm)
        return BeatGrid(grid.times_s, grid.tempo_bpm, "default", len(beats))
    times = extend_grid(beats, duration_s)
    return BeatGrid(times, round(60.0 / float(np.median(np.diff(beats))), 3), "tracked", len(beats))


def beat_phase(times_s: np.ndarray, n_frames: int, frame_rate: float) -> np.ndarray:
    """[T] position of each frame within its beat, in [0, 1), for a grid that spans the clip."""
    t = np.arange(int(n_frames)) / float(frame_rate)
    times = np.asarray(times_s, dtype=np.float64)
    if times.ndim != 1 or len(times) < 2 or np.any(np.diff(times) <= 0):
        raise EnsembleError(f"need at least 2 increasing beat times, got {len(np.atleast_1d(times))}")
    i = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
    phase = (t - times[i]) / (times[i + 1] - times[i])
    return np.clip(phase, 0.0, np.nextafter(1.0, 0.0))


def beat_phase_features(times_s: np.ndarray, n_frames: int, frame_rate: float,
                        harmonics: int = BEAT_HARMONICS) -> np.ndarray:
    """[T, 2 * harmonics] float32: sin and cos of 2*pi*k*phase, k = 1..harmonics."""
    phase = beat_phase(times_s, n_frames, frame_rate)
    k = np.arange(1, harmonics + 1)
    ang = 2.0 * np.pi * phase[:, None] * k[None, :]
    return np.concatenate([np.sin(ang), np.cos(ang)], axis=1).astype(np.float32)
