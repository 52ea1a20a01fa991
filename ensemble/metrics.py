"""Analysis behind the report card: melody (pYIN), RMS dynamics and seams of a clip and of candidates.

The metrics of the reference design, computed on the project's one frame grid
(:class:`~ensemble.features.FeatureConfig`: 16 kHz, hop 160 = 100 frames/s):

* :func:`analyze_clip` -> :class:`Analysis`: per-frame f0 (pYIN, the reference; ``"yin"`` for fast
  paths; ``"crepe"`` when torchcrepe is installed), voicing, RMS, A-weighted loudness and a min/max
  waveform envelope. Results are cached by the SHA-256 of the audio (:class:`AnalysisCache`), so a
  clip is analysed once however many candidates are built on it.
* :func:`clip_scores` -> :class:`Scores`: energy, dynamics, melodic complexity, voiced ratio,
  duration (definitions on :class:`Scores`).
* :func:`seam_metrics` -> :class:`SeamMetrics`: pitch jump (cents) and loudness jump (dB) across a
  seam (definitions on :class:`SeamMetrics`); :func:`seam_jump_text` words them the one way every
  card, table and CLI line shows them. Sign convention: after minus before, so + is up / louder.
* :func:`candidate_analysis` -> :class:`CandidateAnalysis`: an input's analysis joined to a retrieved
  segment's *stored* features (:class:`SegmentFeatures`), without running a pitch tracker again.

The figures drawn from these analyses (report card, candidate comparison) live in
:mod:`ensemble.figures.report`; this module draws nothing and does not import matplotlib.

Candidate timeline (the :func:`ensemble.dsp.crossfade` convention): the crossfade of
``crossfade_s`` seconds is centred on the seam at ``seam_s``; the input is kept up to
``seam_s + crossfade_s / 2`` and the segment starts at ``seam_s - crossfade_s / 2``. By default the
whole input is kept, i.e. ``seam_s = input duration - crossfade_s / 2``. The joined curves take the
input's frames before the seam and the segment's from the seam on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ensemble.audio import SILENCE_DBFS, LoadedAudio
from ensemble.errors import EnsembleError
from ensemble.features import (
    FeatureConfig,
    Features,
    f0_pyin,
    f0_yin,
    frame_times,
    loudness_db,
    n_frames,
    rms,
)
from ensemble.files import atomic_write
from ensemble.music import cents_between

__all__ = [
    "F0_METHODS",
    "MetricsConfig",
    "Analysis",
    "Scores",
    "SeamMetrics",
    "SegmentFeatures",
    "CandidateAnalysis",
    "AnalysisCache",
    "default_cache",
    "audio_sha256",
    "analyze_clip",
    "clip_scores",
    "seam_metrics",
    "seam_jump_text",
    "split_at_seam",
    "candidate_analysis",
    "dynamics_levels",
    "NO_PITCH_TEXT",
    "RMS_FLOOR_DB",
]

F0_METHODS = ("pyin", "yin", "crepe")
NO_PITCH_TEXT = "no pitch detected"  # what a figure of a clip without voiced frames says
RMS_FLOOR_DB = -120.0  # rms_db of digital silence
_CACHE_FORMAT = 1  # bump when the on-disk npz layout or the analysis itself changes


@dataclass(frozen=True)
class MetricsConfig:
    """Settings of the scores and seam metrics (the frame grid is ``features``).

    Attributes:
        features: the frame grid and f0/loudness settings shared with :mod:`ensemble.features`.
        silence_dbfs: frames whose RMS is below this (dBFS) are silent and left out of dynamics.
        dynamics_floor_db: ... as are frames more than this many dB below the loudest frame.
        dynamics_percentiles: (low, high) percentiles of RMS dB whose difference is the dynamics
            score; robust percentiles rather than min/max so one click or a fade does not dominate.
        complexity_full_scale_semitones: pitch standard deviation (semitones) that scores 1.0 in
            melodic complexity (12 = an octave).
        seam_window_s: seconds on each side of the seam searched for voiced frames.
        seam_pitch_frames: how many voiced frames nearest the seam (each side) give the pitch there
            (their median, in cents). 20 frames = 0.2 s spans a whole vibrato cycle (>= 5 Hz), so
            vibrato does not bias the pitch, and the median still picks the note at the seam when
            it lasts at least 0.1 s.
        seam_loudness_s: seconds on each side of the seam whose median loudness is compared.
        seam_guard_s: frames this close to the seam (or to the crossfade's edge) are skipped: their
            analysis window (``frame_length`` samples) straddles the join.
    """

    features: FeatureConfig = field(default_factory=FeatureConfig)
    silence_dbfs: float = SILENCE_DBFS
    dynamics_floor_db: float = 60.0
    dynamics_percentiles: tuple[float, float] = (5.0, 95.0)
    complexity_full_scale_semitones: float = 12.0
    seam_window_s: float = 0.4
    seam_pitch_frames: int = 20
    seam_loudness_s: float = 0.2
    seam_guard_s: float = 0.04

    def __post_init__(self) -> None:
        lo, hi = self.dynamics_percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise EnsembleError(
                f"dynamics_percentiles {self.dynamics_percentiles} must satisfy 0 <= low < high <= 100")
        if not self.complexity_full_scale_semitones > 0:
            raise EnsembleError(f"complexity_full_scale_semitones must be > 0, "
                                f"got {self.complexity_full_scale_semitones}")
        frame_s = 1.0 / self.features.frame_rate
        if not self.seam_window_s >= frame_s or not self.seam_loudness_s >= frame_s:
            raise EnsembleError(
                f"seam windows must be at least one frame ({frame_s:g} s), got "
                f"seam_window_s={self.seam_window_s}, seam_loudness_s={self.seam_loudness_s}")
        if self.seam_pitch_frames < 1:
            raise EnsembleError(f"seam_pitch_frames must be >= 1, got {self.seam_pitch_frames}")
        if not self.seam_guard_s >= 0 or not self.dynamics_floor_db > 0:
            raise EnsembleError(f"need seam_guard_s >= 0 and dynamics_floor_db > 0, got "
                                f"{self.seam_guard_s} and {self.dynamics_floor_db}")

    def to_dict(self) -> dict:
        return asdict(self)


def _readonly(x: np.ndarray, dtype) -> np.ndarray:
    """A read-only contiguous array; a writeable input is copied first (never freeze the caller's)."""
    x = np.asarray(x)
    if x.dtype == dtype and not x.flags.writeable and x.flags.c_contiguous:
        return x
    x = np.array(x, dtype=dtype, order="C")
    x.flags.writeable = False
    return x


@dataclass(frozen=True)
class Analysis:
    """Frame-level analysis of one clip (or of a candidate joined from stored features).

    All curves are [T] on ``config``'s grid, ``T = 1 + n_samples // hop_length``; frame ``t`` is
    centred at ``t * hop_length / sample_rate`` seconds. Arrays are read-only: an ``Analysis`` may be
    shared through :class:`AnalysisCache`.

    Attributes:
        times: [T] s, frame centres.
        f0_hz: [T] Hz, 0 where unvoiced.
        voiced: [T] bool.
        rms: [T] linear RMS over ``frame_length`` windows (full scale sine = 0.707); NaN where
            unknown (a candidate segment stored without RMS).
        rms_db: [T] dBFS, ``20 log10 rms`` floored at -120 (NaN where ``rms`` is).
        loudness_db: [T] dB, A-weighted loudness (0 dB = full-scale 1 kHz sine), see
            :func:`ensemble.features.loudness_db`.
        envelope: [T, 2] min and max sample in each frame's hop (``[t*hop - hop/2, t*hop + hop/2)``),
            for drawing the waveform fast; NaN where the waveform is unknown (a candidate segment
            stored without one).
        duration_s: s, ``n_samples / sample_rate``.
        sha256: hex SHA-256 of the audio's float32 samples (:func:`audio_sha256`); for a candidate, a
            hash of its parts.
        f0_method: the tracker that made ``f0_hz`` (``"pyin"``, ``"yin"``, ``"crepe"``; a candidate's
            reads ``"<input>+<segment>"`` when they differ).
        config: the frame grid.
    """

    times: np.ndarray
    f0_hz: np.ndarray
    voiced: np.ndarray
    rms: np.ndarray
    rms_db: np.ndarray
    loudness_db: np.ndarray
    envelope: np.ndarray
    duration_s: float
    sha256: str
    f0_method: str
    config: FeatureConfig

    def __post_init__(self) -> None:
        n = len(self.times)
        for name in ("f0_hz", "voiced", "rms", "rms_db", "loudness_db", "envelope"):
            if len(getattr(self, name)) != n:
                raise EnsembleError(f"Analysis.{name} has {len(getattr(self, name))} frames, "
                                    f"times has {n}; all curves must share one grid")
        for name, dtype in (("times", np.float64), ("f0_hz", np.float32), ("voiced", bool),
                            ("rms", np.float32), ("rms_db", np.float32),
                            ("loudness_db", np.float32), ("envelope", np.float32)):
            object.__setattr__(self, name, _readonly(getattr(self, name), dtype))

    @property
    def n_frames(self) -> int:
        return len(self.times)

    @property
    def has_pitch(self) -> bool:
        """True when at least one frame is voiced."""
        return bool(self.voiced.any())


@dataclass(frozen=True)
class Scores:
    """Clip-level scores (None where a score is undefined, e.g. no voiced frame for complexity).

    Attributes:
        duration_s: s.
        energy_rms: mean of the frame RMS curve over all frames (linear, full scale sine = 0.707);
            frames of unknown RMS (a segment stored without it) are left out.
        energy_dbfs: ``20 log10 energy_rms`` (dBFS); None for digital silence.
        dynamics_db: RMS range in dB: high minus low percentile
            (:attr:`MetricsConfig.dynamics_percentiles`, 95th - 5th by default) of the frame RMS in dBFS
            over non-silent frames (above ``silence_dbfs`` and within ``dynamics_floor_db`` of the
            loudest frame). A tone that steps between two levels a dB apart scores a; a steady tone ~0.
            None with fewer than 2 non-silent frames.
        melodic_complexity: the pitch standard deviation over voiced frames, in semitones, divided
            by ``complexity_full_scale_semitones`` (12: i.e. in octaves) and clipped to [0, 1].
            A steady tone scores ~0 (vibrato of +-40 cents ~0.02), a melody wandering an octave with
            a 3-semitone spread ~0.25. None with fewer than 2 voiced frames.
        pitch_std_semitones: the unnormalised standard deviation behind ``melodic_complexity``.
        median_f0_hz: Hz, median f0 over voiced frames (None without voiced frames).
        voiced_ratio: voiced frames / all frames, in [0, 1].
        rms_coverage: fraction of frames whose RMS is known (1.0 unless a candidate's segment was
            stored without RMS; energy and dynamics then describe that fraction only).
    """

    duration_s: float
    energy_rms: float
    energy_dbfs: float | None
    dynamics_db: float | None
    melodic_complexity: float | None
    pitch_std_semitones: float | None
    median_f0_hz: float | None
    voiced_ratio: float
    rms_coverage: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SeamMetrics:
    """What happens across a seam (a join between an input and its continuation).

    Pitch on each side is the median, in cents, of the ``seam_pitch_frames`` voiced frames nearest
    the seam within ``seam_window_s`` of it (skipping ``seam_guard_s`` next to the join and the
    crossfade). Loudness on each side is the median A-weighted loudness over ``seam_loudness_s``
    (same skipping); RMS level likewise in dBFS.

    Attributes:
        seam_s: s, the seam's time in the joined clip (centre of the crossfade).
        crossfade_s: s, crossfade length centred on the seam (0 = butt joint).
        pitch_before_hz, pitch_after_hz: Hz, or None where that side has no voiced frame.
        pitch_jump_cents: ``1200 log2(after / before)`` (+200 = up a whole tone); None when either
            side is unvoiced (see ``pitch_note``).
        loudness_before_db, loudness_after_db: dB, A-weighted loudness each side.
        loudness_jump_db: after - before, dB.
        rms_jump_db: after - before, dB, of the RMS level (dBFS); None when a side's RMS is unknown.
        pitch_note: "" when the pitch jump is defined, else why not (e.g. "no pitch before the seam").
    """

    seam_s: float
    crossfade_s: float
    pitch_before_hz: float | None
    pitch_after_hz: float | None
    pitch_jump_cents: float | None
    loudness_before_db: float
    loudness_after_db: float
    loudness_jump_db: float
    rms_jump_db: float | None
    pitch_note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SegmentFeatures:
    """A retrieved segment's stored features, as a database keeps them per chunk.

    All curves are [T] on ``config``'s grid (the same grid as the input's analysis). The RAG
    database (:mod:`ensemble.rag`) stores f0, voicing and loudness per track at 100 frames/s (slice
    them from the chunk's start frame); with the segment's audio at hand, :meth:`from_audio` adds
    RMS and the waveform envelope (cheap: no pitch tracking).

    Attributes:
        f0_hz: [T] Hz, 0 where unvoiced.
        voiced: [T] bool.
        loudness_db: [T] dB, A-weighted loudness (:func:`ensemble.features.loudness_db`).
        rms: [T] linear RMS, or None when not stored: the candidate's RMS is then unknown (NaN)
            after the seam, and its energy and dynamics cover the input part only.
        config: the grid they were computed on.
        envelope: [T, 2] waveform min/max per frame, or None when not stored.
        duration_s: s; None means ``(T - 1) * hop / sample_rate`` (the shortest audio with T frames).
        f0_method: which tracker made ``f0_hz`` ("yin", "pyin", ... or "unknown").
        label: a name for legends, e.g. ``"chunk 38773"``.
    """

    f0_hz: np.ndarray
    voiced: np.ndarray
    loudness_db: np.ndarray
    rms: np.ndarray | None = None
    config: FeatureConfig = field(default_factory=FeatureConfig)
    envelope: np.ndarray | None = None
    duration_s: float | None = None
    f0_method: str = "unknown"
    label: str = ""

    def __post_init__(self) -> None:
        n = len(self.f0_hz)
        if n < 1:
            raise EnsembleError("segment features have 0 frames; need at least 1")
        for name in ("voiced", "loudness_db", "rms", "envelope"):
            if getattr(self, name) is not None and len(getattr(self, name)) != n:
                raise EnsembleError(f"segment {name} has {len(getattr(self, name))} frames, "
                                    f"f0_hz has {n}; all curves must share one grid")
        if self.duration_s is None:
            object.__setattr__(self, "duration_s", (n - 1) / self.config.frame_rate)

    @property
    def n_frames(self) -> int:
        return len(self.f0_hz)

    @classmethod
    def from_features(cls, features: Features, *, label: str = "", f0_method: str = "unknown",
                      duration_s: float | None = None) -> SegmentFeatures:
        """Wrap :class:`ensemble.features.Features` (what ``features.analyze`` returns)."""
        return cls(f0_hz=features.f0_hz, voiced=features.voiced, loudness_db=features.loudness_db,
                   rms=features.rms, config=features.config, duration_s=duration_s,
                   f0_method=f0_method, label=label)

    @classmethod
    def from_audio(cls, audio: np.ndarray, *, f0_hz: np.ndarray, voiced: np.ndarray,
                   config: FeatureConfig = FeatureConfig(), label: str = "",
                   f0_method: str = "unknown") -> SegmentFeatures:
        """Stored pitch + the segment's audio: loudness, RMS and envelope computed, f0 not.

        Args:
            audio: [n_samples] mono float at ``config.sample_rate``, the segment as it is joined.
            f0_hz, voiced: [1 + n_samples // hop] stored pitch curves of that audio.

        Raises:
            EnsembleError: the stored curves do not have ``1 + n_samples // hop`` frames.
        """
        audio = np.asarray(audio, dtype=np.float32)
        n = n_frames(len(audio), config)
        if len(f0_hz) != n or len(voiced) != n:
            raise EnsembleError(f"stored f0/voicing have {len(f0_hz)}/{len(voiced)} frames but "
                                f"{len(audio)} samples need {n} (1 + n_samples // {config.hop_length})")
        return cls(f0_hz=f0_hz, voiced=voiced, loudness_db=loudness_db(audio, config=config),
                   rms=rms(audio, config=config), config=config, envelope=_envelope(audio, config),
                   duration_s=len(audio) / config.sample_rate, f0_method=f0_method, label=label)

    def transposed(self, semitones: float) -> SegmentFeatures:
        """The same segment with f0 shifted by ``semitones`` (as the RAG re-synthesises a
        transposed winner); loudness and RMS unchanged."""
        return replace(self, f0_hz=np.asarray(self.f0_hz, np.float32) * 2.0 ** (semitones / 12.0))

    @classmethod
    def from_analysis(cls, analysis: Analysis, *, label: str = "") -> SegmentFeatures:
        """Use a full :class:`Analysis` (with its waveform envelope) as a segment."""
        return cls(f0_hz=analysis.f0_hz, voiced=analysis.voiced, loudness_db=analysis.loudness_db,
                   rms=analysis.rms, config=analysis.config, envelope=analysis.envelope,
                   duration_s=analysis.duration_s, f0_method=analysis.f0_method, label=label)


@dataclass(frozen=True)
class CandidateAnalysis:
    """One continuation candidate: input + retrieved segment, analysed from stored curves.

    Attributes:
        analysis: the joined curves (input before the seam, segment from it on).
        scores: :func:`clip_scores` of the joined clip.
        seam: :func:`seam_metrics` at the seam.
        label: legend name.
    """

    analysis: Analysis
    scores: Scores
    seam: SeamMetrics
    label: str


# --------------------------------------------------------------------------------------------------
# analysis and its cache


def audio_sha256(audio: np.ndarray) -> str:
    """Hex SHA-256 of ``audio`` as contiguous little-endian float32 (the cache key's content part)."""
    data = np.ascontiguousarray(np.asarray(audio), dtype="<f4")
    return hashlib.sha256(data.tobytes()).hexdigest()


def _key_name(key: tuple) -> str:
    sha, config, method = key
    cfg = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    return f"{sha}-{method}-{cfg}-v{_CACHE_FORMAT}.npz"


_ARRAYS = ("times", "f0_hz", "voiced", "rms", "rms_db", "loudness_db", "envelope")


class AnalysisCache:
    """Thread-safe LRU of :class:`Analysis` keyed by (audio SHA-256, FeatureConfig, f0 method).

    Args:
        maxsize: analyses kept in memory (least recently used dropped first). An analysis of a
            30 s clip is ~100 kB.
        directory: optional folder for an on-disk npz cache that survives restarts; files are
            written atomically and a file that cannot be read is ignored (recomputed).
    """

    def __init__(self, maxsize: int = 32, directory: str | os.PathLike | None = None) -> None:
        if maxsize < 1:
            raise EnsembleError(f"cache maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.directory = Path(directory) if directory is not None else None
        self._items: OrderedDict[tuple, Analysis] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk stay)."""
        with self._lock:
            self._items.clear()

    def get(self, key: tuple) -> Analysis | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        found = self._load(key)
        if found is not None:
            self._remember(key, found)
        return found

    def put(self, key: tuple, analysis: Analysis) -> None:
        self._remember(key, analysis)
        self._save(key, analysis)

    def _remember(self, key: tuple, analysis: Analysis) -> None:
        with self._lock:
            self._items[key] = analysis
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def _load(self, key: tuple) -> Analysis | None:
        if self.directory is None:
            return None
        path = self.directory / _key_name(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {name: data[name] for name in _ARRAYS}
            if (meta["sha256"], meta["f0_method"], meta["config"]) != (
                    key[0], key[2], key[1].to_dict()):
                return None
            return Analysis(**arrays, duration_s=float(meta["duration_s"]), sha256=meta["sha256"],
                            f0_method=meta["f0_method"], config=key[1])
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EnsembleError):
            return None  # a damaged or foreign file: recompute rather than fail a report

    def _save(self, key: tuple, analysis: Analysis) -> None:
        if self.directory is None:
            return
        meta = {"sha256": analysis.sha256, "f0_method": analysis.f0_method,
                "config": analysis.config.to_dict(), "duration_s": analysis.duration_s,
                "format": _CACHE_FORMAT}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, meta=np.array(json.dumps(meta)),
                         **{name: getattr(analysis, name) for name in _ARRAYS})

        # mode=None keeps mkstemp's owner-only 0o600, as the cache has always been written
        atomic_write(self.directory / _key_name(key), write, mode=None)


# Content-addressed (audio hash + settings), bounded and locked, so sharing it between callers and
# threads cannot leak one user's settings into another's results. Pass ``cache=None`` to bypass it
# or an AnalysisCache of your own (e.g. with an on-disk directory).
default_cache = AnalysisCache()


def _f0(audio: np.ndarray, config: FeatureConfig, f0_method: str) -> tuple[np.ndarray, np.ndarray]:
    if f0_method == "pyin":
        f0, voiced, _ = f0_pyin(audio, config=config)
        return f0, voiced
    if f0_method == "yin":
        return f0_yin(audio, config=config)
    return _f0_crepe(audio, config)


def _f0_crepe(audio: np.ndarray, config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """CREPE (torchcrepe 'tiny', CPU) with periodicity > 0.21 as voicing, as torchcrepe suggests."""
    try:
        import torch
        import torchcrepe
    except ImportError as exc:
        raise EnsembleError(
            f"f0_method 'crepe' needs the optional package torchcrepe, which cannot be imported "
            f"({exc}); allowed here: 'pyin' (reference) or 'yin'") from None
    if config.sample_rate != 16000:
        raise EnsembleError(f"f0_method 'crepe' needs a 16000 Hz grid, got {config.sample_rate} Hz")
    x = torch.as_tensor(audio, dtype=torch.float32)[None]  # [1, n_samples]
    f0, periodicity = torchcrepe.predict(
        x, config.sample_rate, config.hop_length, max(config.fmin, 32.7), min(config.fmax, 1975.5),
        model="tiny", return_periodicity=True, batch_size=512, device="cpu", pad=True)
    periodicity = torchcrepe.filter.median(periodicity, 3)
    f0 = f0[0].numpy()
    voiced = periodicity[0].numpy() > 0.21
    n = n_frames(len(audio), config)
    f0, voiced = _fit_frames(f0, n), _fit_frames(voiced, n)
    return np.where(voiced, f0, 0.0).astype(np.float32), voiced.astype(bool)


def _fit_frames(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or edge-pad axis 0 to ``n`` frames."""
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)])


def _envelope(audio: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """[T, 2] min/max of the samples in each frame's hop, centred on the frame."""
    hop = config.hop_length
    n = n_frames(len(audio), config)
    padded = np.zeros(n * hop, dtype=np.float32)
    start = hop // 2  # frame t covers samples [t*hop - hop/2, t*hop + hop/2)
    take = min(len(audio), n * hop - start)
    padded[start:start + take] = audio[:take]
    blocks = padded.reshape(n, hop)  # [T, hop]
    return np.stack([blocks.min(axis=1), blocks.max(axis=1)], axis=1)


def _rms_db(r: np.ndarray) -> np.ndarray:
    return np.maximum(20.0 * np.log10(np.maximum(r, 1e-12)), RMS_FLOOR_DB).astype(np.float32)


def analyze_clip(
    audio: np.ndarray | LoadedAudio,
    *,
    config: MetricsConfig | FeatureConfig | None = None,
    f0_method: str = "pyin",
    cache: AnalysisCache | None = default_cache,
) -> Analysis:
    """Analyse a clip once: f0, voicing, RMS, loudness and waveform envelope on one grid.

    Args:
        audio: [n_samples] mono float at ``config``'s sample rate, or a :class:`LoadedAudio`
            (its sample rate must match).
        config: the frame grid (a :class:`MetricsConfig` contributes its ``features``); default
            ``FeatureConfig()``.
        f0_method: ``"pyin"`` (reference metric, ~0.5-0.8 s per second of audio here), ``"yin"``
            (fast) or ``"crepe"`` (only when the optional torchcrepe package is importable).
        cache: where to look up / store the result by (audio SHA-256, grid, method); ``None`` to
            always compute. The same audio gives back the same :class:`Analysis` object.

    Returns:
        An :class:`Analysis` with ``1 + n_samples // hop_length`` frames. Silence, noise or a clip
        shorter than one analysis window give an analysis with no voiced frames, not an error.

    Raises:
        EnsembleError: unknown ``f0_method``; crepe without torchcrepe; a sample-rate mismatch;
            empty, non-mono or non-finite audio.
    """
    grid = config.features if isinstance(config, MetricsConfig) else config
    grid = FeatureConfig() if grid is None else grid
    if not isinstance(grid, FeatureConfig):
        raise EnsembleError(f"config of type {type(config).__name__} is not a MetricsConfig or "
                            "FeatureConfig")
    if f0_method not in F0_METHODS:
        raise EnsembleError(f"f0_method {f0_method!r} is not one of {', '.join(map(repr, F0_METHODS))}")
    if isinstance(audio, LoadedAudio):
        if audio.sample_rate != grid.sample_rate:
            raise EnsembleError(f"audio is at {audio.sample_rate} Hz but the analysis grid is at "
                                f"{grid.sample_rate} Hz; load it with sample_rate={grid.sample_rate}")
        audio = audio.audio
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0:
        raise EnsembleError(f"analyze_clip needs mono audio of shape [n_samples] with at least one "
                            f"sample, got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise EnsembleError("analyze_clip needs finite samples; the audio has NaN or Inf")
    audio = audio.astype(np.float32, copy=False)

    sha = audio_sha256(audio)
    key = (sha, grid, f0_method)  # what AnalysisCache is keyed by
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    n = n_frames(len(audio), grid)
    # A clip shorter than one analysis window is zero-padded to it -- the zeros center=True framing
    # would add anyway -- so librosa does not warn, then the frames are trimmed back to n.
    shortest = max(grid.frame_length, grid.loudness_n_fft)
    padded = np.pad(audio, (0, shortest - len(audio))) if len(audio) < shortest else audio
    f0, voiced = _f0(padded, grid, f0_method)
    r = rms(padded, config=grid)[:n]
    analysis = Analysis(
        times=frame_times(n, grid), f0_hz=f0[:n], voiced=voiced[:n], rms=r, rms_db=_rms_db(r),
        loudness_db=loudness_db(padded, config=grid)[:n], envelope=_envelope(audio, grid),
        duration_s=len(audio) / grid.sample_rate, sha256=sha, f0_method=f0_method, config=grid)
    if cache is not None:
        cache.put(key, analysis)
    return analysis


# --------------------------------------------------------------------------------------------------
# scores


def dynamics_levels(analysis: Analysis, config: MetricsConfig) -> tuple[float, float] | None:
    """The two RMS levels whose difference is :attr:`Scores.dynamics_db` (the report card marks them).

    Args:
        analysis: the clip's analysis; frames of unknown RMS (NaN) are left out.
        config: ``dynamics_percentiles``, ``silence_dbfs`` and ``dynamics_floor_db``.

    Returns:
        (low, high) percentile of the frame RMS in dBFS over non-silent frames, or None with fewer
        than 2 non-silent frames.
    """
    db = analysis.rms_db[np.isfinite(analysis.rms_db)]  # RMS of a stored segment may be unknown
    if db.size == 0:
        return None
    loud = (db > config.silence_dbfs) & (db >= db.max() - config.dynamics_floor_db)
    if np.count_nonzero(loud) < 2:
        return None
    lo, hi = np.percentile(db[loud].astype(np.float64), config.dynamics_percentiles)
    return float(lo), float(hi)


def clip_scores(analysis: Analysis, *, config: MetricsConfig = MetricsConfig()) -> Scores:
    """Energy, dynamics, melodic complexity, voiced ratio and duration (see :class:`Scores`)."""
    known = analysis.rms[np.isfinite(analysis.rms)]
    energy = float(np.mean(known, dtype=np.float64)) if known.size else 0.0
    levels = dynamics_levels(analysis, config)
    dynamics = None if levels is None else levels[1] - levels[0]
    f0 = analysis.f0_hz[analysis.voiced].astype(np.float64)
    f0 = f0[f0 > 0]
    std = complexity = median = None
    if len(f0) >= 1:
        median = float(np.median(f0))
    if len(f0) >= 2:
        std = float(np.std(12.0 * np.log2(f0)))
        complexity = float(min(1.0, std / config.complexity_full_scale_semitones))
    return Scores(
        duration_s=float(analysis.duration_s),
        energy_rms=energy,
        energy_dbfs=20.0 * math.log10(energy) if energy > 0 else None,
        dynamics_db=dynamics,
        melodic_complexity=complexity,
        pitch_std_semitones=std,
        median_f0_hz=median,
        voiced_ratio=float(np.count_nonzero(analysis.voiced) / analysis.n_frames),
        rms_coverage=known.size / analysis.n_frames,
    )


def seam_metrics(analysis: Analysis, seam_s: float, *, crossfade_s: float = 0.0,
                 config: MetricsConfig = MetricsConfig()) -> SeamMetrics:
    """Pitch and loudness jumps across a seam in an analysed (joined) clip.

    Args:
        analysis: the joined clip's analysis (input, then continuation).
        seam_s: s, where the continuation takes over (centre of the crossfade), inside the clip.
        crossfade_s: s, the crossfade length centred on the seam; frames inside it are not used.
        config: windows and guards (:class:`MetricsConfig`).

    Returns:
        :class:`SeamMetrics` (definitions there).

    Raises:
        EnsembleError: the seam is not strictly inside the clip, or the crossfade is negative.
    """
    if not 0.0 < seam_s < analysis.duration_s:
        raise EnsembleError(f"seam at {seam_s:g} s is not inside the clip (0 - "
                            f"{analysis.duration_s:.3f} s, exclusive)")
    if not crossfade_s >= 0:
        raise EnsembleError(f"crossfade_s must be >= 0 s, got {crossfade_s}")
    t = analysis.times
    edge_before = seam_s - crossfade_s / 2 - config.seam_guard_s
    edge_after = seam_s + crossfade_s / 2 + config.seam_guard_s

    def pitch(side: str) -> float | None:
        if side == "before":
            sel = (t <= edge_before) & (t > edge_before - config.seam_window_s) & analysis.voiced
            f0 = analysis.f0_hz[sel][-config.seam_pitch_frames:]
        else:
            sel = (t >= edge_after) & (t < edge_after + config.seam_window_s) & analysis.voiced
            f0 = analysis.f0_hz[sel][:config.seam_pitch_frames]
        f0 = f0[f0 > 0].astype(np.float64)
        # median in cents, so an even count averages two pitches geometrically
        return float(2.0 ** np.median(np.log2(f0))) if len(f0) else None

    def level(curve: np.ndarray, side: str) -> float | None:
        if side == "before":
            sel = (t <= edge_before) & (t > edge_before - config.seam_loudness_s)
            if not sel.any():  # seam right at the start: the first frame is all there is
                sel = t == t[0]
        else:
            sel = (t >= edge_after) & (t < edge_after + config.seam_loudness_s)
            if not sel.any():
                sel = t == t[-1]
        values = curve[sel]
        values = values[np.isfinite(values)]  # a stored segment's RMS may be unknown (NaN)
        return float(np.median(values)) if values.size else None

    before, after = pitch("before"), pitch("after")
    note = ""
    if before is None and after is None:
        note = "no pitch on either side of the seam"
    elif before is None:
        note = "no pitch before the seam"
    elif after is None:
        note = "no pitch after the seam"
    jump = cents_between(after, before) if not note else None
    l_before, l_after = level(analysis.loudness_db, "before"), level(analysis.loudness_db, "after")
    r_before, r_after = level(analysis.rms_db, "before"), level(analysis.rms_db, "after")
    rms_jump = None if r_before is None or r_after is None else r_after - r_before
    return SeamMetrics(seam_s=float(seam_s), crossfade_s=float(crossfade_s), pitch_before_hz=before,
                       pitch_after_hz=after, pitch_jump_cents=jump, loudness_before_db=l_before,
                       loudness_after_db=l_after, loudness_jump_db=l_after - l_before,
                       rms_jump_db=rms_jump, pitch_note=note)


def seam_jump_text(pitch_jump_cents: float | None, loudness_jump_db: float | None) -> str:
    """The seam's jumps in words, as cards and CLI tables print them (signed: after minus before).

    Args:
        pitch_jump_cents: ``1200 log2(after / before)``; None or NaN when a side has no pitch.
        loudness_jump_db: after - before, dB; None or NaN when undefined.

    Returns:
        e.g. ``"pitch jump -199 cents, loudness jump +0.3 dB"`` (whole cents, tenths of a dB; ``n/a``
        for an undefined jump).
    """
    def known(x: float | None) -> bool:
        return x is not None and math.isfinite(float(x))

    pitch = f"{pitch_jump_cents:+.0f} cents" if known(pitch_jump_cents) else "n/a (no pitch on a side)"
    loud = f"{loudness_jump_db:+.1f} dB" if known(loudness_jump_db) else "n/a"
    return f"pitch jump {pitch}, loudness jump {loud}"


def split_at_seam(analysis: Analysis, seam_s: float, *,
                  config: MetricsConfig = MetricsConfig()) -> CandidateAnalysis:
    """Treat one analysed clip as input ``[0, seam)`` + continuation ``[seam, end)``.

    What ``python -m ensemble report FILE --seam-at SECONDS`` reports: the scores of the whole clip
    and the seam metrics at ``seam_s``, from one analysis.
    """
    return CandidateAnalysis(analysis=analysis, scores=clip_scores(analysis, config=config),
                             seam=seam_metrics(analysis, seam_s, config=config), label="")


def _join_at_seam(inp: Analysis, segment: SegmentFeatures, seam_s: float,
                  crossfade_s: float) -> Analysis:
    """The input's frames before ``seam_s`` followed by the segment's, on one grid (arguments checked
    by :func:`candidate_analysis`); what the segment did not store (RMS, envelope) is NaN."""
    fps = inp.config.frame_rate
    k = min(int(math.ceil(seam_s * fps - 1e-9)), inp.n_frames)  # input frames with time < seam
    offset = int(round((seam_s - crossfade_s / 2) * fps))  # joined frame of the segment's frame 0
    j0 = min(max(k - offset, 0), segment.n_frames - 1)
    k = offset + j0  # keep the joined curves contiguous on the grid
    seg_env = (segment.envelope if segment.envelope is not None
               else np.full((segment.n_frames, 2), np.nan, np.float32))
    seg_rms = (np.asarray(segment.rms, dtype=np.float32) if segment.rms is not None
               else np.full(segment.n_frames, np.nan, np.float32))

    def join(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([a[:k], np.asarray(b)[j0:]])

    f0 = join(inp.f0_hz, segment.f0_hz)
    voiced = join(inp.voiced, np.asarray(segment.voiced, bool))
    h = hashlib.sha256(inp.sha256.encode())
    for arr in (segment.f0_hz, segment.voiced, segment.loudness_db, seg_rms):
        h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
    h.update(f"{seam_s!r}/{crossfade_s!r}".encode())
    method = (inp.f0_method if segment.f0_method in (inp.f0_method, "unknown")
              else f"{inp.f0_method}+{segment.f0_method}")
    return Analysis(
        times=frame_times(len(f0), inp.config), f0_hz=f0, voiced=voiced,
        rms=join(inp.rms, seg_rms), rms_db=join(inp.rms_db, _rms_db(seg_rms)),
        loudness_db=join(inp.loudness_db, segment.loudness_db), envelope=join(inp.envelope, seg_env),
        duration_s=offset / fps + float(segment.duration_s), sha256=h.hexdigest(), f0_method=method,
        config=inp.config)


def candidate_analysis(
    input_analysis: Analysis,
    segment: SegmentFeatures | Features,
    *,
    seam_s: float | None = None,
    crossfade_s: float = 0.0,
    label: str | None = None,
    config: MetricsConfig = MetricsConfig(),
) -> CandidateAnalysis:
    """Join an input's analysis and a segment's stored features into a scored candidate.

    No pitch tracker runs: the input was analysed once (:func:`analyze_clip`), the segment's curves
    come from the database. Timeline (module docstring): the crossfade is centred on ``seam_s``; the
    segment's frame 0 is placed at ``seam_s - crossfade_s / 2``, rounded to the nearest frame (<= 5 ms
    at 100 frames/s).

    Args:
        input_analysis: the input clip's :class:`Analysis`.
        segment: the retrieved segment's :class:`SegmentFeatures` (or ``features.Features``) on the
            same grid.
        seam_s: s, seam time; default ``input duration - crossfade_s / 2`` (the whole input kept).
            At most that (the input must reach the crossfade's end).
        crossfade_s: s, crossfade length (``dsp.crossfade``'s overlap), >= 0.
        label: legend name; default the segment's label.
        config: scoring and seam settings.

    Returns:
        A :class:`CandidateAnalysis` whose analysis lasts ``seam_s - crossfade_s / 2 + segment duration``.

    Raises:
        EnsembleError: different grids, a seam outside the input, or a crossfade longer than the
            segment.
    """
    if isinstance(segment, Features):
        segment = SegmentFeatures.from_features(segment)
    inp = input_analysis
    if segment.config != inp.config:
        raise EnsembleError(f"segment features are on a different grid ({segment.config}) than the "
                            f"input's analysis ({inp.config}); recompute them on the input's grid")
    if not crossfade_s >= 0:
        raise EnsembleError(f"crossfade_s must be >= 0 s, got {crossfade_s}")
    latest = inp.duration_s - crossfade_s / 2
    if seam_s is None:
        seam_s = latest
    if not crossfade_s / 2 < seam_s <= latest + 1e-9:
        raise EnsembleError(f"seam_s {seam_s:g} s must lie after the crossfade's start and at most "
                            f"{latest:.3f} s (input duration - crossfade_s / 2)")
    if crossfade_s / 2 >= segment.duration_s:
        raise EnsembleError(f"crossfade of {crossfade_s:g} s is too long for a segment of "
                            f"{segment.duration_s:.3f} s")
    joined = _join_at_seam(inp, segment, seam_s, crossfade_s)
    return CandidateAnalysis(
        analysis=joined, scores=clip_scores(joined, config=config),
        seam=seam_metrics(joined, seam_s, crossfade_s=crossfade_s, config=config),
        label=segment.label if label is None else label)
