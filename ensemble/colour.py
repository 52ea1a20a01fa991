"""Spectral colour matching: make a rendering carry the long-term spectral envelope of a recording.

A continuation is rendered by the leader decoder, whose harmonic balance is its training
instrument's (BabyBand's General-MIDI guitar: in the 150-300 Hz register its third harmonic is
~5 dB above the fundamental). A violin or a flute upload has another balance, and the listener
hears the colour change at the seam; even the pitch-class content heard (an audio chroma) moves
towards the fifth when the third harmonic dominates.

The static part of that difference is measured once per request and removed with one fixed filter:

1. the decoder resynthesises the user's own last seconds from their own controls (f0, voicing,
   loudness), so the only difference between the two signals is the instrument's colour;
2. :func:`long_term_spectrum` of each, over its active frames: each frame's power spectrum is
   smoothed over ``smoothing_octaves`` on a log-frequency axis (so single harmonics are not carved),
   and the frames' levels in dB are averaged (``average="log"``, the default: every active frame
   counts for its colour, as the ear and a cepstral envelope weigh it; ``average="power"`` averages
   power first, so the loudest attacks decide the colour);
3. the filter's gain per frequency is recording minus resynthesis (dB), centred on its
   power-weighted mean (the level is matched afterwards, on what is heard) and clipped to
   +-``max_gain_db``;
4. :func:`apply_filter` convolves each rendering with the linear-phase FIR of that gain (delay
   compensated: the output is sample-aligned with the input).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from ensemble.errors import EnsembleError

AVERAGES = ("log", "power")

__all__ = ["ColourConfig", "ColourMatch", "long_term_spectrum", "colour_match", "apply_filter"]


@dataclass(frozen=True)
class ColourConfig:
    """Settings of the colour match (the limits are declared here, once).

    Attributes:
        n_fft: STFT size of the long-term spectrum and the FIR length - 1 (16 kHz: 7.8 Hz bins).
        hop_length: STFT hop, samples.
        smoothing_octaves: width of the log-frequency smoothing (1/3 octave: wider than a harmonic's
            spacing above the 3rd harmonic, narrower than the fundamental-to-3rd-harmonic span).
        max_gain_db: the filter's gain is clipped to +-this (a filter never rebuilds a missing band).
        active_range_db: frames within this of the loudest frame count as playing.
        floor_below_peak_db: bins whose recording spectrum is this far below its peak keep gain 0
            relative to the nearest evidenced bin (no boosting of what the user never played).
        min_active_frames: fewer active frames on either side: no filter (gain 0).
        average: how frames are averaged: ``"log"`` (mean of the smoothed frames' dB) or
            ``"power"`` (dB of the mean power).
    """

    n_fft: int = 2048
    hop_length: int = 512
    smoothing_octaves: float = 1.0 / 3.0
    max_gain_db: float = 12.0
    active_range_db: float = 40.0
    floor_below_peak_db: float = 60.0
    min_active_frames: int = 20
    average: str = "log"

    def __post_init__(self) -> None:
        if self.n_fft < 64 or self.n_fft & (self.n_fft - 1):
            raise EnsembleError(f"colour n_fft = {self.n_fft}; allowed: a power of 2 >= 64")
        if not 0 < self.hop_length <= self.n_fft:
            raise EnsembleError(f"colour hop_length = {self.hop_length}; allowed: 1..n_fft ({self.n_fft})")
        if not 0.0 < self.smoothing_octaves <= 2.0:
            raise EnsembleError(f"colour smoothing_octaves = {self.smoothing_octaves}; allowed: (0, 2]")
        if not 0.0 <= self.max_gain_db <= 40.0:
            raise EnsembleError(f"colour max_gain_db = {self.max_gain_db}; allowed: 0..40")
        if self.average not in AVERAGES:
            raise EnsembleError(f"colour average = {self.average!r}; allowed: one of {AVERAGES}")


@dataclass(frozen=True)
class ColourMatch:
    """A fixed filter that moves a rendering's colour to a recording's.

    Attributes:
        freqs_hz: [F] bin centres, Hz.
        gain_db: [F] the filter's gain per bin, dB (all 0 when there was too little evidence).
        applied: False when the filter is the identity (too little evidence on either side).
    """

    freqs_hz: np.ndarray
    gain_db: np.ndarray
    applied: bool

    def summary(self) -> dict:
        """A few numbers for the record: the gain's range and its value at octave points."""
        pts = [125, 250, 500, 1000, 2000, 4000]
        return {"applied": self.applied,
                "max_boost_db": round(float(self.gain_db.max()), 2),
                "max_cut_db": round(float(self.gain_db.min()), 2),
                "gain_db_at_hz": {str(p): round(float(np.interp(p, self.freqs_hz, self.gain_db)), 2)
                                  for p in pts}}


def _check(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise EnsembleError(f"{name} must be finite mono audio [n_samples >= 1], got shape {x.shape}")
    return x


def long_term_spectrum(audio: np.ndarray, *, sample_rate: int,
                       config: ColourConfig = ColourConfig()) -> tuple[np.ndarray, np.ndarray, int]:
    """The smoothed long-term power spectrum of ``audio`` over its active frames.

    Args:
        audio: [n_samples] mono.
        sample_rate: Hz.

    Returns:
        (freqs_hz [F], spectrum_db [F] smoothed, active frames used).
    """
    x = _check("audio", audio)
    n, hop = config.n_fft, config.hop_length
    if len(x) < n:
        x = np.pad(x, (0, n - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop]  # [M, n_fft]
    power = np.abs(np.fft.rfft(frames * np.hanning(n), axis=1)) ** 2  # [M, F]
    e_db = 10.0 * np.log10(power.sum(axis=1) + 1e-20)
    active = e_db >= e_db.max() - config.active_range_db
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    if not active.any():
        active[:] = True
    # smoothing on a log-frequency axis: each bin averages the bins within +-half the width
    half = 2.0 ** (config.smoothing_octaves / 2.0)
    lo = np.searchsorted(freqs, freqs / half, side="left")
    hi = np.searchsorted(freqs, freqs * half, side="right")
    hi = np.maximum(hi, lo + 1)
    if config.average == "power":
        cum = np.concatenate([[0.0], np.cumsum(power[active].mean(axis=0))])
        return freqs, 10.0 * np.log10((cum[hi] - cum[lo]) / (hi - lo) + 1e-20), int(active.sum())
    p = power[active]
    cum = np.concatenate([np.zeros((len(p), 1)), np.cumsum(p, axis=1)], axis=1)
    smooth = (cum[:, hi] - cum[:, lo]) / (hi - lo)  # [M_active, F]
    return freqs, (10.0 * np.log10(smooth + 1e-20)).mean(axis=0), int(active.sum())


def colour_match(recording: np.ndarray, resynthesis: np.ndarray, *, sample_rate: int,
                 config: ColourConfig = ColourConfig()) -> ColourMatch:
    """The fixed filter that gives ``resynthesis`` (and anything rendered like it) the recording's colour.

    Args:
        recording: [n] the user's audio (mono, ``sample_rate``).
        resynthesis: [m] the same passage rendered by the decoder from the recording's controls.

    Returns:
        A :class:`ColourMatch` (identity when either side has fewer than ``min_active_frames``
        active frames).
    """
    freqs, rec_db, n_rec = long_term_spectrum(recording, sample_rate=sample_rate, config=config)
    _, syn_db, n_syn = long_term_spectrum(resynthesis, sample_rate=sample_rate, config=config)
    zero = np.zeros_like(freqs)
    if min(n_rec, n_syn) < config.min_active_frames or rec_db.max() < -150 or syn_db.max() < -150:
        return ColourMatch(freqs, zero, False)
    gain = rec_db - syn_db
    evidenced = (rec_db >= rec_db.max() - config.floor_below_peak_db) & \
                (syn_db >= syn_db.max() - config.floor_below_peak_db)
    if not evidenced.any():
        return ColourMatch(freqs, zero, False)
    # bins without evidence take the nearest evidenced bin's gain (a flat continuation of the filter)
    idx = np.flatnonzero(evidenced)
    nearest = idx[np.clip(np.searchsorted(idx, np.arange(len(freqs))), 0, len(idx) - 1)]
    gain = gain[nearest]
    w = 10.0 ** (syn_db / 10.0)  # centre on the power-weighted mean: the level is matched later
    gain = gain - float(np.sum(w * gain) / np.sum(w))
    return ColourMatch(freqs, np.clip(gain, -config.max_gain_db, config.max_gain_db), True)


def apply_filter(audio: np.ndarray, match: ColourMatch) -> np.ndarray:
    """``audio`` ([..., n_samples]) through the linear-phase FIR of ``match`` (same length, aligned).

    Returns:
        float32 array shaped like ``audio``; ``audio`` unchanged when the match is the identity.
    """
    x = np.asarray(audio, np.float32)
    if not match.applied or x.shape[-1] == 0:
        return x.copy()
    n_fft = 2 * (len(match.freqs_hz) - 1)
    amp = 10.0 ** (match.gain_db / 20.0)
    ir = np.fft.fftshift(np.fft.irfft(amp, n_fft)) * np.hanning(n_fft)  # [n_fft] linear phase
    ir = ir.reshape((1,) * (x.ndim - 1) + (-1,))
    y = fftconvolve(x, ir, mode="full", axes=-1)
    start = n_fft // 2  # the FIR's delay
    return y[..., start:start + x.shape[-1]].astype(np.float32)
