"""The leader's beat grid (tracked by :mod:`ensemble.beats`, re-exported here) and the drum grids
derived from it.

:func:`drum_grids` derives the grids a drum loop can be laid on from the leader's beats: the beats
themselves, each beat split in 2 or 3 (the loop counts faster), or every 2nd / 3rd beat (slower),
with every phase of the latter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ensemble.beats import BeatGrid, default_grid, estimate_tempo, extend_grid, track_beats
from ensemble.errors import EnsembleError

__all__ = ["BeatGrid", "track_beats", "estimate_tempo", "default_grid", "extend_grid", "DrumGrid", "drum_grids"]


@dataclass(frozen=True)
class DrumGrid:
    """A grid of drum-loop beats derived from the leader's beats.

    Attributes:
        times_s: [M] drum-beat times (covering the clip like :attr:`BeatGrid.times_s`).
        ratio: drum beats per leader beat (1/3, 1/2, 1, 2 or 3).
        phase: for ratios below 1, which leader beat (0..1/ratio-1) the first drum beat is on.
        tempo_bpm: drum beats per minute.
    """

    times_s: np.ndarray
    ratio: float
    phase: int
    tempo_bpm: float


def drum_grids(beats: BeatGrid, duration_s: float,
               ratios: tuple[float, ...] = (1 / 3, 0.5, 1.0, 2.0, 3.0)) -> list[DrumGrid]:
    """Every drum grid a loop may be laid on (see the module docstring).

    Args:
        beats: the leader's grid (covering the clip).
        duration_s: clip length, seconds.
        ratios: drum beats per leader beat to consider.

    Returns:
        One :class:`DrumGrid` per ratio (and per phase for ratios below 1), each covering the clip.
    """
    t = np.asarray(beats.times_s, dtype=np.float64)
    out = []
    for r in ratios:
        if r >= 1:
            k = int(round(r))
            if abs(k - r) > 1e-6:
                raise EnsembleError(f"drum grid ratio {r} must be an integer or 1/integer")
            frac = np.arange(k) / k
            times = (t[:-1, None] + np.diff(t)[:, None] * frac[None, :]).reshape(-1)  # [B-1, k]
            out.append(DrumGrid(np.append(times, t[-1]), float(k), 0, beats.tempo_bpm * k))
        else:
            k = int(round(1 / r))
            if abs(1 / k - r) > 1e-6:
                raise EnsembleError(f"drum grid ratio {r} must be an integer or 1/integer")
            for phase in range(k):
                times = t[phase::k]
                if len(times) >= 2:
                    out.append(DrumGrid(extend_grid(times, duration_s), 1.0 / k, phase,
                                        beats.tempo_bpm / k))
    return out
