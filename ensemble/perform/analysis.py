"""The leader analysed once (features, activity, beats, key) and the harmony plan built on it.

:func:`analyze_leader` runs every analysis the performer needs on the 100 frames/s grid:
fast YIN f0, A-weighted loudness, chroma, onset strength (:func:`ensemble.features.analyze`), the
beat grid (:mod:`.rhythm`), the per-frame pitch-class evidence and the key (:mod:`.harmony`).

:func:`plan_harmony` turns it into what the bass and keys play: a root per harmonic unit (beat,
half bar or bar) decoded by a :class:`~ensemble.perform.harmony.HarmonyModel`, the diatonic chord on
it, the bass note of every beat and the keys voicing of every unit, plus frame-level f0 curves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ensemble.audio import is_silent
from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig, Features, analyze, loudness_db, n_frames
from ensemble.music import Key, estimate_key, hz_to_midi, midi_to_hz
from ensemble.perform.config import PerformConfig
from ensemble.perform.harmony import (
    HarmonyModel,
    bass_midi,
    chord_for_root,
    chord_name,
    decode_roots,
    keys_voicings,
    pitch_class_evidence,
    unit_evidence,
)
from ensemble.perform.rhythm import BeatGrid, default_grid, track_beats

__all__ = ["LeaderAnalysis", "HarmonyPlan", "analyze_leader", "chunked_features", "chunked_loudness",
           "unit_bounds",
           "plan_harmony"]


@dataclass(frozen=True)
class LeaderAnalysis:
    """Everything the performer reads from the leader.

    Attributes:
        features: f0 [T] Hz, voiced [T], loudness_db [T] dB, rms [T], chroma [12, T], onset [T].
        active: [T] bool, loudness above ``activity_db``.
        silent: no active frame at all.
        voiced_fraction: voiced frames among active ones (0 when silent).
        pitched: ``voiced_fraction >= min_voiced_fraction``.
        beats: the beat grid covering the clip.
        evidence: [T, 12] pitch-class evidence (0 where inactive).
        key: the key estimate.
        n_samples: clip length in samples.
    """

    features: Features
    active: np.ndarray
    silent: bool
    voiced_fraction: float
    pitched: bool
    beats: BeatGrid
    evidence: np.ndarray
    key: Key
    n_samples: int

    @property
    def n_frames(self) -> int:
        return self.features.n_frames

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.features.config.sample_rate


def _features(audio: np.ndarray, config: FeatureConfig) -> Features:
    if is_silent(audio):  # chroma's tuning estimate has nothing to work on (and warns)
        feats = analyze(audio, config=config, f0_method="yin", with_chroma=False)
        return replace(feats, chroma=np.zeros((12, feats.n_frames), np.float32))
    return analyze(audio, config=config, f0_method="yin")


def chunked_features(audio: np.ndarray, config: FeatureConfig = FeatureConfig(), *,
                     chunk_seconds: float = 30.0) -> Features:
    """:func:`ensemble.features.analyze` (fast YIN) in chunks, to bound memory on long clips.

    A 10-minute clip analysed whole holds several GB of spectrograms (chroma's 4096-point STFT alone
    is 1 GB, its tuning estimate several times that); analysed in chunks the peak no longer grows
    with the clip (~0.3 GB per 30 s of chunk, measured). Each chunk is analysed with
    ``pad`` extra samples on both sides (more than the longest analysis window) and only its own
    frames are kept, so spectral features match the whole-clip analysis; what is decided per clip
    becomes per chunk: YIN's relative voicing gate (40 dB below the loudest frame), chroma's
    tuning estimate and the onset envelope's dB reference (measured on a 150 s clip: f0, voicing,
    loudness and RMS identical, chroma within float32 rounding -- its filter-bank product runs
    through BLAS, whose blocking depends on the matrix width -- onset strength within 0.001 on
    average). Clips shorter than 1.5 chunks are analysed whole.

    Returns:
        :class:`Features` with ``1 + n_samples // hop`` frames.
    """
    hop = config.hop_length
    n = len(audio)
    chunk = int(round(chunk_seconds * config.sample_rate / hop)) * hop
    if chunk <= 0 or n <= 1.5 * chunk:
        return _features(audio, config)
    pad = (max(config.chroma_n_fft, config.frame_length, 2048) // hop + 2) * hop
    T = n_frames(n, config)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("f0_hz", "voiced", "loudness_db", "rms",
                                                           "chroma", "onset")}
    for start in range(0, n, chunk):
        lo = max(0, start - pad)
        seg = audio[lo:min(n, start + chunk + pad)]
        f = _features(seg, config)
        first = (start - lo) // hop
        count = (min(start + chunk, n) - start) // hop + (1 if start + chunk >= n else 0)
        count = min(count, T - start // hop)
        for k in parts:
            v = getattr(f, k)
            parts[k].append(v[..., first:first + count])
    out = {k: np.concatenate(v, axis=-1) for k, v in parts.items()}
    if out["f0_hz"].shape[-1] != T:
        raise EnsembleError(f"chunked analysis produced {out['f0_hz'].shape[-1]} frames, expected {T}")
    return Features(config=config, **out)


def chunked_loudness(audio: np.ndarray, config: FeatureConfig = FeatureConfig(), *,
                     chunk_seconds: float = 30.0) -> np.ndarray:
    """[T] :func:`ensemble.features.loudness_db` computed in padded chunks (identical result,
    bounded memory)."""
    hop = config.hop_length
    n = len(audio)
    chunk = int(round(chunk_seconds * config.sample_rate / hop)) * hop
    if chunk <= 0 or n <= 1.5 * chunk:
        return loudness_db(audio, config=config)
    pad = (config.loudness_n_fft // hop + 2) * hop
    out = []
    for start in range(0, n, chunk):
        lo = max(0, start - pad)
        ld = loudness_db(audio[lo:min(n, start + chunk + pad)], config=config)
        first = (start - lo) // hop
        out.append(ld[first:] if start + chunk >= n else ld[first:first + chunk // hop])
    return np.concatenate(out)[: n_frames(n, config)]


def analyze_leader(audio: np.ndarray, config: PerformConfig = PerformConfig(), *,
                   features: FeatureConfig = FeatureConfig()) -> LeaderAnalysis:
    """Analyse a leader clip once.

    Args:
        audio: [n_samples] float mono at ``features.sample_rate``.

    Returns:
        A :class:`LeaderAnalysis`.
    """
    feats = chunked_features(audio, features, chunk_seconds=config.analysis_chunk_seconds)
    active = feats.loudness_db > config.activity_db
    silent = not bool(active.any())
    voiced_fraction = float((feats.voiced & active).sum() / max(int(active.sum()), 1))
    pitched = (not silent) and voiced_fraction >= config.min_voiced_fraction
    duration = len(audio) / features.sample_rate
    if silent:
        beats = default_grid(duration, config.default_tempo_bpm)
    else:
        beats = track_beats(feats.onset, frame_rate=features.frame_rate, duration_s=duration,
                            default_tempo_bpm=config.default_tempo_bpm, min_beats=config.min_beats)
    evidence = pitch_class_evidence(feats.f0_hz, feats.voiced, feats.chroma,
                                    active.astype(np.float64), f0_weight=config.f0_weight)
    key = Key(0, "major", 0.0)
    if pitched:
        notes = np.flatnonzero(feats.voiced & active)
        final_pc = int(np.round(hz_to_midi(feats.f0_hz[notes[-1]])) % 12)
        key = estimate_key(evidence.sum(axis=0), final_pc=final_pc,
                           final_bonus=config.key_final_bonus)
    return LeaderAnalysis(feats, active, silent, round(voiced_fraction, 4), pitched, beats,
                          evidence, key, len(audio))


def unit_bounds(beats_s: np.ndarray, *, unit: str = "beat", beats_per_bar: int | None = None,
                downbeat: int = 0) -> np.ndarray:
    """Indices into ``beats_s`` where harmonic units start (and the last beat, where they end).

    Args:
        beats_s: [B] beat times.
        unit: "beat", "half_bar" or "bar".
        beats_per_bar: meter; None -> every beat is a unit.
        downbeat: index of a beat that starts a bar.

    Returns:
        [U + 1] increasing beat indices, first 0 and last ``B - 1``.
    """
    B = len(beats_s)
    if B < 2:
        raise EnsembleError(f"need at least 2 beats to make harmonic units, got {B}")
    if unit == "beat" or not beats_per_bar or beats_per_bar < 2:
        return np.arange(B)
    if unit == "half_bar" and beats_per_bar % 2 == 0 and beats_per_bar >= 4:
        group = beats_per_bar // 2
    elif unit in ("half_bar", "bar"):
        group = beats_per_bar
    else:
        raise EnsembleError(f"harmony unit {unit!r}; allowed: beat, half_bar, bar")
    idx = np.arange(B)
    starts = idx[(idx - downbeat) % group == 0]
    return np.unique(np.concatenate([[0], starts, [B - 1]]))


@dataclass(frozen=True)
class HarmonyPlan:
    """What the bass and keys play.

    Attributes:
        key: the key used.
        model: the harmony model's name.
        beat_times_s: [B] beat grid (covering the clip).
        unit_of_beat: [B - 1] harmonic unit of each beat interval.
        roots: [U] root pitch class per unit.
        chords: U (root, quality, pitch classes) triads.
        beat_active: [B - 1] bool, the leader is active somewhere in the beat.
        bass_midi: [B - 1] bass note per beat (MIDI; sounding only where ``beat_active``).
        keys_midi: [U, 3] keys voicing per unit.
        bass_f0_hz: [T] Hz, 0 where the bass rests.
        keys_f0_hz: [3, T] Hz, 0 where the keys rest.
        beat_frames: [B] frame index of each beat (clipped to [0, T]).
    """

    key: Key
    model: str
    beat_times_s: np.ndarray
    unit_of_beat: np.ndarray
    roots: np.ndarray
    chords: list[tuple[int, str, tuple[int, int, int]]]
    beat_active: np.ndarray
    bass_midi: np.ndarray
    keys_midi: np.ndarray
    bass_f0_hz: np.ndarray
    keys_f0_hz: np.ndarray
    beat_frames: np.ndarray

    def chord_names(self) -> list[str]:
        return [chord_name(r, q) for r, q, _ in self.chords]


def plan_harmony(analysis: LeaderAnalysis, model: HarmonyModel, config: PerformConfig = PerformConfig(),
                 *, beats_per_bar: int | None = None, downbeat: int = 0) -> HarmonyPlan:
    """Roots, chords, bass notes and keys voicings for a leader (see the module docstring).

    Args:
        analysis: from :func:`analyze_leader`.
        model: the harmony HMM.
        beats_per_bar, downbeat: bar structure for "half_bar"/"bar" units (from the drum choice).

    Returns:
        A :class:`HarmonyPlan`.
    """
    fr = analysis.features.config.frame_rate
    T = analysis.n_frames
    beats = analysis.beats.times_s
    bf = np.clip(np.round(beats * fr).astype(np.int64), 0, T)  # [B] frame of each beat
    csum = np.concatenate([[0], np.cumsum(analysis.active)])
    beat_active = (csum[bf[1:]] - csum[bf[:-1]]) > 0  # [B-1]
    ub = unit_bounds(beats, unit=config.harmony_unit, beats_per_bar=beats_per_bar,
                     downbeat=downbeat)
    units = unit_evidence(analysis.evidence, bf[ub])  # [U, 12]
    unit_of_beat = np.searchsorted(ub, np.arange(len(beats) - 1), side="right") - 1
    unit_active = np.zeros(len(ub) - 1, bool)
    np.logical_or.at(unit_active, unit_of_beat, beat_active)
    roots = decode_roots(units, analysis.key, model, unit_active)
    chords = [chord_for_root(int(r), analysis.key) for r in roots]
    bass = bass_midi(roots[unit_of_beat], low=config.bass_low_midi, high=config.bass_high_midi,
                     start=(config.bass_low_midi + config.bass_high_midi) / 2.0)
    keys = keys_voicings([c[2] for c in chords], low=config.keys_low_midi, high=config.keys_high_midi)
    sounding = analysis.pitched
    bass_f0 = np.zeros(T)
    keys_f0 = np.zeros((3, T))
    for j in range(len(beats) - 1):
        a, b = bf[j], bf[j + 1]
        if b <= a or not (sounding and beat_active[j]):
            continue
        bass_f0[a:b] = midi_to_hz(bass[j])
        keys_f0[:, a:b] = midi_to_hz(keys[unit_of_beat[j]])[:, None]
    return HarmonyPlan(analysis.key, model.name, beats, unit_of_beat, roots, chords, beat_active,
                       bass, keys, bass_f0.astype(np.float32), keys_f0.astype(np.float32), bf)
