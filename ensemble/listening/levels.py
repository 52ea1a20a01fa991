"""Levels for loudness-matched listening: a clip's integrated loudness and the gain that matches it.

The level is the power mean of the A-weighted frame loudness (:func:`ensemble.features.loudness_db`)
over the frames within ``LOUDNESS_GATE_DB`` of the loudest (rests and a quiet tail are gated out);
a matched copy never peaks above ``MATCH_PEAK_DBFS``.
"""

from __future__ import annotations

import numpy as np

from ensemble.audio import peak_dbfs
from ensemble.features import FeatureConfig, loudness_db

__all__ = ["MATCH_PEAK_DBFS", "LOUDNESS_GATE_DB", "integrated_loudness_db", "match_gain_db"]

MATCH_PEAK_DBFS = -1.0  # loudness matching never pushes a mix above this peak
LOUDNESS_GATE_DB = 40.0  # frames this far below the loudest frame are left out of the level


def integrated_loudness_db(audio: np.ndarray, *, features: FeatureConfig = FeatureConfig()) -> float | None:
    """Power mean of the A-weighted frame loudness over non-silent frames, dB (None for silence).

    Frames more than ``LOUDNESS_GATE_DB`` below the loudest frame (rests, the tail) are gated out,
    so a candidate with a long quiet ending is not judged quieter than it sounds while playing.
    """
    loud = loudness_db(np.asarray(audio, np.float32), config=features).astype(np.float64)
    if loud.size == 0 or loud.max() <= features.loudness_floor_db + 1.0:
        return None
    keep = loud >= loud.max() - LOUDNESS_GATE_DB
    return float(10.0 * np.log10(np.mean(10.0 ** (loud[keep] / 10.0))))


def match_gain_db(audio: np.ndarray, reference_db: float | None, *,
                  features: FeatureConfig = FeatureConfig(),
                  played: np.ndarray | None = None) -> tuple[float, bool]:
    """Gain (dB) that brings ``audio`` to ``reference_db``, and whether the peak ceiling cut it.

    Args:
        audio: [n] mono at the grid's rate (16 kHz): what the level is measured on.
        reference_db: the level to reach (:func:`integrated_loudness_db` of the input).
        played: the audio the gain will be applied to, when it is another rendering of ``audio``
            (e.g. the mix at the recording's own rate and channels, [n, channels]); its peak is
            the one kept below :data:`MATCH_PEAK_DBFS`. Default ``audio``.
    """
    level = integrated_loudness_db(audio, features=features)
    if level is None or reference_db is None:
        return 0.0, False
    gain = reference_db - level
    headroom = MATCH_PEAK_DBFS - peak_dbfs(audio if played is None else played)
    if gain > headroom:
        return float(headroom), True
    return float(gain), False
