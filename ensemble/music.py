"""Music helpers of the ground floor: pitch conversions, pitch-class names, key profiles, key estimation.

One home for what the runtime and the offline jobs both need:

* :func:`hz_to_midi`, :func:`midi_to_hz`, :func:`hz_to_cents`, :func:`cents_between` -- A4 = MIDI 69 =
  440 Hz; Hz <= 0 (unvoiced) maps to NaN. ``hz_to_midi`` also takes a torch tensor (the decoders'
  input normalisation), computed with the same formula in torch.
* :data:`PC_NAMES`, :data:`MODES`, :class:`Key` and :func:`estimate_key` -- Krumhansl-Kessler key
  profiles correlated with a 12-bin pitch-class histogram (C first), with an optional bonus for the
  key whose tonic is the clip's final note (tunes end on their tonic, which settles the usual
  confusion between a key and its dominant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ensemble.errors import EnsembleError

__all__ = [
    "A4_HZ",
    "A4_MIDI",
    "PC_NAMES",
    "MODES",
    "KK_MAJOR",
    "KK_MINOR",
    "Key",
    "estimate_key",
    "hz_to_midi",
    "midi_to_hz",
    "hz_to_cents",
    "cents_between",
]

A4_HZ = 440.0
A4_MIDI = 69.0
PC_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
# Krumhansl & Kessler (1982) probe-tone profiles, C first.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


# ----------------------------------------------------------------------------- pitch


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray:
    """MIDI note number -> Hz (A4 = 69 = 440 Hz), float64."""
    return A4_HZ * 2.0 ** ((np.asarray(midi, dtype=np.float64) - A4_MIDI) / 12.0)


def hz_to_midi(f_hz: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Hz -> fractional MIDI note number.

    Args:
        f_hz: an array (any shape; float64 result, NaN where f <= 0) or a torch tensor (same
            dtype; the caller keeps it > 0, e.g. with ``clamp_min``).
    """
    if isinstance(f_hz, torch.Tensor):
        return A4_MIDI + 12.0 * torch.log2(f_hz / A4_HZ)
    f = np.asarray(f_hz, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, A4_MIDI + 12.0 * np.log2(f / A4_HZ), np.nan)


def hz_to_cents(f_hz: np.ndarray, ref_hz: float = A4_HZ, *, dtype: np.dtype | None = np.float64) -> np.ndarray:
    """Cents above ``ref_hz`` (NaN where f <= 0).

    Args:
        f_hz: frequencies, Hz.
        ref_hz: the 0-cent reference, Hz.
        dtype: computation dtype; ``None`` keeps a floating input's own (a float32 f0 track stays
            float32, as the retrieval database stores it).
    """
    f = np.asarray(f_hz)
    if dtype is not None or not np.issubdtype(f.dtype, np.floating):
        f = f.astype(np.float64 if dtype is None else dtype, copy=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, 1200.0 * np.log2(f / ref_hz), np.nan)


def cents_between(f_hz: np.ndarray | float, ref_hz: np.ndarray | float) -> np.ndarray | float:
    """Signed interval from ``ref`` to ``f``, ``1200 log2(f / ref)`` cents (+200 = up a whole tone).

    Two Python/NumPy scalars give a float (computed with :func:`math.log2`); arrays give a float64
    array. NaN where either frequency is <= 0.
    """
    if np.ndim(f_hz) == 0 and np.ndim(ref_hz) == 0:
        f, r = float(f_hz), float(ref_hz)
        return 1200.0 * math.log2(f / r) if f > 0 and r > 0 else math.nan
    f = np.asarray(f_hz, dtype=np.float64)
    r = np.asarray(ref_hz, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((f > 0) & (r > 0), 1200.0 * np.log2(f / r), np.nan)


# ----------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class Key:
    """A key estimate.

    Attributes:
        tonic: pitch class 0..11 (0 = C).
        mode: "major" or "minor".
        confidence: correlation of the clip's pitch-class histogram with the key's profile
            (-1..1, plus the final-note bonus when it applied; 0 when there was no pitch content).
    """

    tonic: int
    mode: str
    confidence: float

    @property
    def name(self) -> str:
        return f"{PC_NAMES[self.tonic]} {self.mode}"

    @property
    def mode_index(self) -> int:
        return MODES.index(self.mode)


def estimate_key(histogram: np.ndarray, *, final_pc: int = -1, final_bonus: float = 0.0) -> Key:
    """Krumhansl-Kessler key estimate from a 12-bin pitch-class histogram (C first).

    Args:
        histogram: [12] pitch-class weights (e.g. note durations).
        final_pc: pitch class of the clip's last note (-1: unknown).
        final_bonus: added to the correlation of keys whose tonic is ``final_pc``.

    Returns:
        The best of the 24 keys (major before minor, lower tonic first on ties); C major with
        confidence 0 when the histogram is flat or empty.

    Raises:
        EnsembleError: a histogram that does not have 12 bins.
    """
    h = np.asarray(histogram, dtype=np.float64).reshape(-1)
    if h.shape != (12,):
        raise EnsembleError(f"key histogram must have 12 bins, got {h.shape}")
    if not np.all(np.isfinite(h)) or h.std() <= 1e-12:
        return Key(0, "major", 0.0)
    best = (-np.inf, 0, "major")
    for tonic in range(12):
        rolled = np.roll(h, -tonic)
        for mode, prof in (("major", KK_MAJOR), ("minor", KK_MINOR)):
            r = float(np.corrcoef(rolled, prof)[0, 1]) + (final_bonus if tonic == final_pc else 0.0)
            if r > best[0]:
                best = (r, tonic, mode)
    return Key(best[1], best[2], round(best[0], 4))
