"""The low anchor's planted seam faults: the continuation shifted in pitch, late and louder.

:func:`plant_seam_faults` takes a candidate's mix and the sample where its continuation begins and
returns the same mix with the continuation (everything after ``cut``) pitch-shifted by
``pitch_semitones`` (duration and RMS kept: :func:`librosa.effects.pitch_shift`), started ``delay_ms`` late
(silence at the seam, the end cut so the length is unchanged) and ``gain_db`` louder. Short fades
(10 ms) on either side of the gap keep the cut itself from clicking: the faults are the ones named,
not an extra one.
"""

from __future__ import annotations

import numpy as np

from ensemble.errors import EnsembleError

__all__ = ["plant_seam_faults", "FADE_MS"]

FADE_MS = 10.0


def plant_seam_faults(mix: np.ndarray, cut: int, *, sample_rate: int, pitch_semitones: float,
                      delay_ms: float, gain_db: float) -> np.ndarray:
    """The low anchor made from one candidate.

    Args:
        mix: [n] float32 mono, the candidate as played.
        cut: first sample of the continuation (0 < cut < n).
        sample_rate: Hz.
        pitch_semitones: shift of the continuation, semitones (+1 = a semitone up).
        delay_ms: how late the continuation starts, ms (>= 0, shorter than the continuation).
        gain_db: level change of the continuation, dB.

    Returns:
        [n] float32 (may exceed full scale: the caller's loudness matching sets the level played).

    Raises:
        EnsembleError: ``cut`` outside the mix or a delay as long as the continuation.
    """
    import librosa

    mix = np.asarray(mix, np.float32)
    n = len(mix)
    if mix.ndim != 1 or not 0 < cut < n:
        raise EnsembleError(f"cut {cut} must lie inside the mix (1..{n - 1} samples), mono [n]")
    delay = int(round(delay_ms * sample_rate / 1000.0))
    if delay < 0 or delay >= n - cut:
        raise EnsembleError(f"delay {delay_ms:g} ms must be >= 0 and shorter than the continuation "
                            f"({(n - cut) / sample_rate * 1000:.0f} ms)")
    cont = mix[cut:]
    if pitch_semitones:
        shifted = librosa.effects.pitch_shift(cont, sr=sample_rate, n_steps=float(pitch_semitones)).astype(np.float32)
        # the phase vocoder loses level on decaying notes (3-4 dB on plucked tones): restore the RMS
        # of the part that is kept, so the level fault is gain_db and nothing else
        kept = n - cut - delay
        before = float(np.sqrt(np.mean(cont[:kept] ** 2)))
        after = float(np.sqrt(np.mean(shifted[:kept] ** 2)))
        cont = shifted * np.float32(before / after) if after > 0 else shifted
    cont = cont * np.float32(10.0 ** (gain_db / 20.0))
    fade = max(1, int(FADE_MS * sample_rate / 1000.0))
    head = mix[:cut].copy()
    f = min(fade, cut)
    head[-f:] *= np.linspace(1.0, 0.0, f, dtype=np.float32)  # the input part fades out at the cut
    tail = cont[:n - cut - delay].copy()
    g = min(fade, len(tail))
    tail[:g] *= np.linspace(0.0, 1.0, g, dtype=np.float32)  # the late continuation fades in
    return np.concatenate([head, np.zeros(delay, np.float32), tail]).astype(np.float32)
