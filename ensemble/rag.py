"""Audio RAG: retrieve Top-K database segments whose *controls* continue a user's clip.

Database (``python -m ensemble index build``), over every melodic line of a corpus (the Guitar
stems and the Keys top line of BabyBand), **controls and features only** -- no audio unless built
with ``--keep-audio`` for the splice comparison mode:

* per line (a track's stem): f0 (Hz), voicing and A-weighted loudness (dB) at 100 frames/s, the
  track's tempo (BPM; beat 0 at 0 s, as the corpus renders its scores);
* the line is cut on ``chunk_seconds`` (2.0 s) base chunks; a *candidate* is the segment that
  starts at a chunk start and runs on through its line;
* per chunk start, for each lookback L (7.0/7.5/8.0/8.5 s): a **context** vector of the L seconds
  before the start, and one **segment** vector of the ``segment_seconds`` after it. A vector is
  ``[GRU embedding (PCA to embed_dims, L2-normalised), pitch-class profile (12-d, L2-normalised)]``.
  Both halves are **level- and timbre-invariant**: the GRU (the leader decoder's, over f0 and
  loudness) reads the loudness *relative to the line's own level* (:func:`phrase_level`) shifted to
  a fixed reference, and the pitch-class profile is the histogram of the voiced f0's pitch classes
  (:func:`f0_chroma`), not an audio chroma;
* per chunk: the window's **dynamics** (std of active-frame loudness, dB: a contour, not a level),
  its phrase level, and seam features: median voiced f0 (cents re A4) and loudness *relative to the
  window's level* of the first ``seam_seconds`` after the start (the *entry*) and of the last
  ``seam_seconds`` before it (the *approach*).

Query: the user's clip analysed once (YIN f0, loudness; the same GRU over the level-normalised
loudness), one vector per lookback (the last L seconds, or what there is down to 2 s), the
pitch-class profile of the whole clip (its key), its last ``seam_seconds`` (pitch; loudness relative
to its own level), its dynamics and its tempo (from the performer's beat tracking).

Scores, for every candidate at every key shift t in -6..+6 semitones (vectorised):

* relevance(L, t) = ``context_weight`` * <q_L, context_L> + (1 - ``context_weight``) * <q_L,
  segment>, with <a, b> = (1 - ``chroma_weight``) * cos(emb) + ``chroma_weight`` * cos(profile of b
  shifted by t); the best lookback is kept. Range [-1, 1].
* **key fit** (t) = Pearson correlation of the clip's profile with the segment's profile shifted by
  t. Only shifts within ``key_margin`` of the candidate's best key fit are allowed: a candidate is
  always played in the input's key.
* **octave**: after the shift, the segment moves by whole octaves: of the octave that puts its
  entry note nearest the input's last note and the two next to it, the one with the best sum of the
  pitch and register closeness below (a line that starts on the input's last note but lives an
  octave below the input's register moves up), kept inside ``register_hz`` (80-1300 Hz, where the
  leader decoder renders a clean pitch).
* coherence = mean of five terms: the key fit (clipped to [0, 1]) and four of the form
  exp(-ln 2 * penalty / half-life):
  pitch -- |jump| in semitones (half-life 2) by ``seam_match`` (``join``, the default: the jump heard
  at the join, after the shift and octave;
  ``approach``: the user's last note vs what the source played into the segment; ``either``: the
  smaller), after shift and octave; loudness -- the same with loudness relative to each side's own
  level (half-life 6 dB); tempo -- |log2| of the time stretch the segment needs to play at the
  input's tempo (folded to within half an octave of tempo, half-life ``tempo_halflife_octaves``).
  register -- |difference| in semitones between the mean voiced pitch of what the candidate plays
  (after shift and octave) and of the input's last ``segment_seconds`` (half-life
  ``register_halflife_semitones``, 7: a fifth).
  A side without evidence gives 0.5 for that term.
* composite = alpha * relevance + beta * coherence.

Strict pass: dynamics within ``dynamics_tolerance_db`` of the input's last ``segment_seconds``,
key fit >= ``key_floor`` (the candidate is in the input's key) and coherence >= ``coherence_floor``.
If that yields fewer than K, a fallback pass (alpha 0.95, beta 0.05, no floor, no dynamics or key
filter) fills the list; those rows carry ``fallback=True``.

Only segments that can be **played to the end** are candidates: the line must have enough frames
for the continuation at the stretch it needs, and be voiced within ``end_voiced_seconds`` of the
window's end (no candidate runs into the silence after its line ends). Top-K are distinct and
non-overlapping (two segments of one line overlap when their starts are less than the continuation
length apart).

Relevance pre-selection uses faiss (an exact ``IndexFlatIP`` per lookback). Above ``ivf_threshold``
one IVF index (HNSW quantizer, measured recall) whose vectors estimate the whole composite fetches,
and exact bounds decide what is scored (:mod:`ensemble.rag_index`).
Top-N by relevance is fetched and N doubled until the N-th relevance proves no unfetched candidate
can beat the K-th composite (alpha * rel_N + beta * 1 < composite_K), so with the flat index the
Top-K is exactly that of scoring every candidate.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np
import soundfile as sf
import torch
from threadpoolctl import ThreadpoolController

from ensemble.config import config_from_dict
from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig, f0_yin, loudness_db
from ensemble.files import sha256_file
from ensemble.models.decoder import InstrumentDecoder
from ensemble.music import hz_to_cents, hz_to_midi

__all__ = [
    "RagConfig",
    "RagDatabase",
    "Query",
    "Candidate",
    "analyze_query",
    "retrieve",
    "reference_retrieve",
    "segment_audio",
    "phrase_level",
    "f0_chroma",
    "fold_stretch",
    "RANKINGS",
]

DB_FORMAT = 3  # 3: controls only, several stems, level/key-invariant vectors, tempo per line
SEAM_MATCHES = ("join", "approach", "either")
RANKINGS = ("composite", "random")
HAND_SET = "hand-set"  # Candidate.weights when the composite ranked it (ensemble.ratings.fit.HAND_SET)
REFERENCE_LEVEL_DB = -30.0  # loudness the GRU reads a line's phrase level as (level invariance)
# faiss-cpu ships its own OpenMP OpenBLAS; once it is loaded, numpy's small matrix products on 2
# threads take ~16 ms instead of ~0.05 ms (measured here). Scoring runs with BLAS on one thread.
_THREADS = ThreadpoolController()


@dataclass(frozen=True)
class RagConfig:
    """Database layout and retrieval settings (see the module docstring for the formulas)."""

    stems: tuple[str, ...] = ("Guitar", "Keys")
    chunk_seconds: float = 2.0
    lookbacks: tuple[float, ...] = (7.0, 7.5, 8.0, 8.5)
    segment_seconds: float = 8.0
    seam_seconds: float = 0.4
    min_remaining_seconds: float = 4.0
    min_input_seconds: float = 2.0
    end_voiced_seconds: float = 0.3
    embed_dims: int = 32
    chroma_weight: float = 0.3
    context_weight: float = 0.5
    alpha: float = 0.8
    beta: float = 0.6
    fallback_alpha: float = 0.95
    fallback_beta: float = 0.05
    dynamics_tolerance_db: float = 4.0
    coherence_floor: float = 0.70
    seam_match: str = "join"
    loudness_match: str = "either"
    pitch_halflife_semitones: float = 2.0
    loudness_halflife_db: float = 6.0
    tempo_halflife_octaves: float = 0.25
    register_halflife_semitones: float = 7.0
    key_margin: float = 0.05
    key_floor: float = 0.85
    register_hz: tuple[float, float] = (80.0, 1300.0)
    transpose_semitones: int = 6
    crossfade_seconds: float = 0.1
    ivf_threshold: int = 200_000
    ivf_nprobe: int = 16
    faiss_threads: int = 1  # one query at a time: extra OpenMP threads only spin (40x slower here)
    vorbis_quality: float = 0.4

    def __post_init__(self) -> None:
        if not self.lookbacks or min(self.lookbacks) <= 0:
            raise EnsembleError(f"lookbacks {self.lookbacks} must be positive seconds")
        if not self.stems:
            raise EnsembleError("stems must name at least one melodic stem")
        for name in ("seam_match", "loudness_match"):
            if getattr(self, name) not in SEAM_MATCHES:
                raise EnsembleError(f"{name} {getattr(self, name)!r}; allowed: {list(SEAM_MATCHES)}")
        for name in ("chroma_weight", "context_weight", "coherence_floor"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise EnsembleError(f"{name} = {v} must be in [0, 1]")
        for name in ("dynamics_tolerance_db", "key_margin", "tempo_halflife_octaves", "end_voiced_seconds",
                     "register_halflife_semitones"):
            if not getattr(self, name) > 0:
                raise EnsembleError(f"{name} = {getattr(self, name)} must be > 0")

    @classmethod
    def from_dict(cls, d: dict) -> RagConfig:
        """From a manifest's ``config`` (unknown keys refused: rebuild a database of another version)."""
        return config_from_dict(cls, d)


# ----------------------------------------------------------------------------- shared analysis

def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, 1e-8)


def window_means(cum: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Means of rows [start, end) from a cumulative sum with a leading zero row."""
    ends = np.maximum(ends, starts + 1)
    return (cum[ends] - cum[starts]) / (ends - starts)[:, None]


def cumsum0(x: np.ndarray) -> np.ndarray:
    """[T, C] -> [T + 1, C] cumulative sum with a zero first row (float64)."""
    return np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0, dtype=np.float64)])


def seam_stats(f0_hz: np.ndarray, voiced: np.ndarray, loud: np.ndarray) -> tuple[float, float]:
    """(median voiced f0 in cents re A4 or NaN, mean loudness dB) of a short window."""
    v = voiced & (f0_hz > 0)
    pitch = float(np.median(hz_to_cents(f0_hz[v], dtype=None))) if v.any() else float("nan")
    return pitch, float(np.mean(loud)) if len(loud) else float("nan")


def phrase_level(loud_db: np.ndarray, *, below_peak_db: float = 30.0) -> float:
    """The level a phrase is played at: median loudness (dB) of its active frames (those within
    ``below_peak_db`` of its loudest), NaN for an empty window."""
    x = np.asarray(loud_db, np.float64)
    if x.size == 0:
        return float("nan")
    active = x[x >= x.max() - below_peak_db]
    return float(np.median(active))


def dynamics_db(loud_db: np.ndarray, *, below_peak_db: float = 30.0) -> float:
    """How much a phrase's loudness moves: std (dB) of its active frames (level-invariant)."""
    x = np.asarray(loud_db, np.float64)
    if x.size == 0:
        return float("nan")
    return float(np.std(x[x >= x.max() - below_peak_db]))


def f0_chroma(f0_hz: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """[T, 12] one-hot pitch class of each voiced frame (0 where unvoiced): a timbre- and
    level-invariant pitch-class profile once averaged."""
    f0 = np.asarray(f0_hz, np.float64)
    ok = np.asarray(voiced, bool) & (f0 > 0)
    out = np.zeros((len(f0), 12), np.float32)
    pcs = np.mod(np.round(hz_to_midi(np.where(ok, f0, 440.0))), 12).astype(int)
    out[np.flatnonzero(ok), pcs[ok]] = 1.0
    return out


def fold_stretch(ratio: np.ndarray | float) -> np.ndarray:
    """A tempo ratio (input / source) moved by octaves into [2^-0.5, 2^0.5]: the time factor that
    plays a source at the input's tempo (a source at half the tempo counts in half beats)."""
    r = np.asarray(ratio, np.float64)
    return r * 2.0 ** (-np.round(np.log2(np.where(r > 0, r, 1.0))))


@dataclass
class ControlsAnalysis:
    """A line's controls and what retrieval reads from them (all on the 100 frames/s grid)."""

    f0: np.ndarray  # [T] Hz, 0 where unvoiced
    voiced: np.ndarray  # [T] bool
    loud: np.ndarray  # [T] dB
    chroma: np.ndarray  # [T, 12] f0 pitch-class one-hot
    states: np.ndarray  # [T, H] GRU states over the level-normalised loudness
    level: float  # the line's phrase level, dB


def analyze_controls(f0_hz: np.ndarray, voiced: np.ndarray, loud_db: np.ndarray,
                     decoder: InstrumentDecoder) -> ControlsAnalysis:
    """Pitch-class profile and level-normalised GRU states of a line's controls."""
    f0 = np.where(voiced, f0_hz, 0.0).astype(np.float32)
    loud = np.asarray(loud_db, np.float32)
    level = phrase_level(loud)
    norm = loud - np.float32(level) + np.float32(REFERENCE_LEVEL_DB)
    with torch.inference_mode():
        states = decoder.gru_states(torch.from_numpy(f0)[None, :, None],
                                    torch.from_numpy(norm)[None, :, None])
    return ControlsAnalysis(f0, np.asarray(voiced, bool), loud, f0_chroma(f0, voiced),
                            states[0].numpy().astype(np.float32), level)


def project_embeddings(states_mean: np.ndarray, mean: np.ndarray, comps: np.ndarray) -> np.ndarray:
    return l2_normalize((states_mean - mean) @ comps.T)


# ----------------------------------------------------------------------------- database

@dataclass
class RagDatabase:
    """A loaded retrieval database (arrays in memory)."""

    root: Path
    config: RagConfig
    manifest: dict
    track_names: list[str]  # one per line: "TrackNNNNN/<Stem>"
    track_offsets: np.ndarray  # [n_lines + 1] frame offsets into the concatenated arrays
    tempo_bpm: np.ndarray  # [n_lines] BPM (NaN when unknown)
    f0: np.ndarray  # [F_total] Hz (float32)
    voiced: np.ndarray  # [F_total] bool
    loud: np.ndarray  # [F_total] dB
    chunk_track: np.ndarray  # [N] int32 line index
    chunk_start: np.ndarray  # [N] int32 frame within its line
    chunk_remaining: np.ndarray  # [N] int32 frames from start to the line's end
    ctx: np.ndarray  # [n_lookbacks, N, D + 12] context vectors (emb | profile), float32
    seg: np.ndarray  # [N, D + 12] segment vectors
    dynamics: np.ndarray  # [N] dB, std of the window's active loudness
    level: np.ndarray  # [N] dB, the window's phrase level
    seam_pitch: np.ndarray  # [N] entry: cents re A4 (NaN = unvoiced)
    seam_loud: np.ndarray  # [N] entry: dB relative to the window's level
    pre_pitch: np.ndarray  # [N] approach: cents re A4 or NaN
    pre_loud: np.ndarray  # [N] approach: dB relative to the window's level (NaN at a line's start)
    pca_mean: np.ndarray  # [H]
    pca_components: np.ndarray  # [D, H]
    indexes: list = field(default_factory=list)  # one faiss index per lookback
    features: FeatureConfig = field(default_factory=FeatureConfig)  # the frame grid it was built on
    cum_voiced: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))  # [F_total + 1]
    cum_cents: np.ndarray = field(default_factory=lambda: np.zeros(1))  # [F_total + 1] voiced cents
    cum_loud: np.ndarray = field(default_factory=lambda: np.zeros(1))  # [F_total + 1] dB
    # Fitted weights that rank instead of the composite (ensemble.ratings.fit.Weights: ``version`` and
    # ``utility(columns)``); attached by Engine.load when a weights file is configured. None: alpha/beta.
    utility: object | None = None
    # Above ``config.ivf_threshold`` chunks: the approximate index (ensemble.rag_index.AnnIndex) that
    # retrieve() fetches through; None: exact search.
    ann: object | None = None

    @property
    def fps(self) -> int:
        """Frames per second of every per-frame array (100)."""
        return int(self.features.frame_rate)

    @property
    def n_chunks(self) -> int:
        return len(self.chunk_track)

    @property
    def version(self) -> str:
        return self.manifest.get("version", "unknown")

    @property
    def has_audio(self) -> bool:
        """Whether the database keeps its lines' audio (needed by the splice comparison mode)."""
        return bool(self.manifest.get("keep_audio"))

    def track_features(self, track: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = self.track_offsets[track], self.track_offsets[track + 1]
        return self.f0[a:b], self.voiced[a:b], self.loud[a:b]

    def build_indexes(self) -> None:
        """(Re)build one faiss inner-product index per lookback over [context | segment] vectors.

        Sets faiss's OpenMP thread count to ``config.faiss_threads`` (faiss has only this global
        setting): searches here are single queries, where more threads only add spinning.
        """
        faiss.omp_set_num_threads(max(1, self.config.faiss_threads))
        self.indexes = []
        if self.n_chunks > self.config.ivf_threshold:
            # IVF + HNSW quantizer, recall measured (ensemble.rag_index); imported here: it imports rag
            from ensemble.rag_index import build_ann, load_ann

            if self.manifest.get("ann", {}).get("files"):
                self.ann = load_ann(self.root, self.manifest["ann"])  # saved by the build
            else:
                self.ann, self.manifest["ann"] = build_ann(self)
            self.indexes = list(self.ann.indexes)
            return
        for li in range(len(self.config.lookbacks)):
            vecs = np.ascontiguousarray(np.concatenate([self.ctx[li], self.seg], axis=1), np.float32)
            index = faiss.IndexFlatIP(vecs.shape[1])
            index.add(vecs)
            self.indexes.append(index)

    @classmethod
    def load(cls, root: str | os.PathLike, *, features: FeatureConfig = FeatureConfig(),
             index: bool = True) -> RagDatabase:
        """Load and check a database folder.

        Args:
            root: the folder written by ``python -m ensemble index build``.
            features: the frame grid its per-frame arrays use (the project's one grid).
            index: build or read its index (False: the arrays only, e.g. to rebuild the index).

        Raises:
            EnsembleError: missing folder or files, a sha256 mismatch with the manifest, or
                arrays that do not fit together.
        """
        root = Path(root)
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise EnsembleError(f"RAG database {str(root)!r} has no manifest.json; build it with "
                                "`python -m ensemble index build`")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EnsembleError(f"{str(manifest_path)!r} is not valid JSON") from None
        if manifest.get("format") != DB_FORMAT:
            raise EnsembleError(f"RAG database {str(root)!r} has format {manifest.get('format')!r}; this "
                                f"version reads format {DB_FORMAT}: rebuild it with "
                                "`python -m ensemble index build`")
        for name, digest in manifest.get("files", {}).items():
            path = root / name
            if not path.is_file():
                raise EnsembleError(f"RAG database file {str(path)!r} is missing")
            if name.endswith(".npz") and sha256_file(path) != digest:
                raise EnsembleError(f"RAG database file {str(path)!r} does not match its sha256 in "
                                    "manifest.json (damaged or replaced); rebuild the database")
        try:
            with np.load(root / "chunks.npz") as z:
                a = {k: z[k] for k in z.files}
            with np.load(root / "tracks.npz") as z:
                t = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError) as exc:
            raise EnsembleError(f"RAG database {str(root)!r} cannot be read ({exc})") from None
        config = RagConfig.from_dict(manifest["config"])
        try:
            f32 = {k: a[k].astype(np.float32) for k in ("ctx", "seg", "dynamics", "level", "seam_pitch",
                                                         "seam_loud", "pre_pitch", "pre_loud", "pca_mean",
                                                         "pca_components")}
            db = cls(root=root, config=config, manifest=manifest,
                     track_names=[str(x) for x in t["names"]],
                     track_offsets=t["offsets"].astype(np.int64), tempo_bpm=t["tempo_bpm"].astype(np.float64),
                     f0=t["f0_hz"].astype(np.float32), voiced=t["voiced"].astype(bool),
                     loud=t["loudness_db"].astype(np.float32),
                     chunk_track=a["track"].astype(np.int32), chunk_start=a["start"].astype(np.int32),
                     chunk_remaining=a["remaining"].astype(np.int32), features=features, **f32)
        except KeyError as exc:
            raise EnsembleError(f"RAG database {str(root)!r} lacks array {exc}; rebuild it") from None
        if db.ctx.shape[:2] != (len(config.lookbacks), db.n_chunks) or db.n_chunks == 0:
            raise EnsembleError(f"RAG database {str(root)!r} is empty or inconsistent "
                                f"(ctx {db.ctx.shape}, {db.n_chunks} chunks)")
        db.cum_voiced = np.concatenate([[0], np.cumsum(db.voiced, dtype=np.int64)])
        cents = np.where(db.voiced & (db.f0 > 0), hz_to_cents(np.maximum(db.f0, 1e-3), dtype=None), 0.0)
        db.cum_cents = np.concatenate([[0.0], np.cumsum(cents)])
        db.cum_loud = np.concatenate([[0.0], np.cumsum(db.loud, dtype=np.float64)])
        if index:
            db.build_indexes()
        return db


def segment_audio(db: RagDatabase, chunk: int, n_samples: int) -> np.ndarray:
    """Decode ``n_samples`` of a line's audio from a chunk's start (zero-padded at the line's end).

    Raises:
        EnsembleError: the database keeps no audio (built without ``--keep-audio``) or the file
            cannot be read.
    """
    track = int(db.chunk_track[chunk])
    name = db.track_names[track]
    path = db.root / "audio" / f"{name.replace('/', '_')}.ogg"
    if not path.is_file():
        raise EnsembleError(f"the RAG database {str(db.root)!r} keeps no audio for {name!r}; the splice "
                            "mode needs a database built with `python -m ensemble index build --keep-audio`")
    start = int(db.chunk_start[chunk]) * db.features.hop_length
    try:
        with sf.SoundFile(path) as f:
            f.seek(min(start, f.frames))
            audio = f.read(n_samples, dtype="float32")
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise EnsembleError(f"RAG audio {str(path)!r} cannot be read ({exc})") from None
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return np.pad(audio, (0, n_samples - len(audio)))


# ----------------------------------------------------------------------------- query & scoring

@dataclass(frozen=True)
class Query:
    """What retrieval needs from the user's clip."""

    vectors: np.ndarray  # [n_lookbacks, D + 12]
    lookbacks_used: tuple[float, ...]  # seconds actually used per lookback (short inputs)
    seam_pitch: float  # cents re A4 of the last voiced note near the end, NaN if none
    seam_loud: float  # dB of the last seam_seconds relative to ``level``
    level: float  # dB, phrase level of the last segment_seconds
    dynamics: float  # dB, std of the last segment_seconds' active loudness
    profile: np.ndarray  # [12] pitch-class profile of the whole clip (its key)
    tempo_bpm: float  # NaN when unknown
    seconds: float
    voiced_fraction: float
    notes: tuple[str, ...] = ()
    beat_s: float = float("nan")  # the input's beat period, s (NaN: no grid)
    beat_phase_s: float = 0.0  # where its grid's beats fall, s after the continuation's start (mod beat_s)
    register_pitch: float = float("nan")  # cents re A4: mean voiced pitch of the last segment_seconds


def analyze_query(audio: np.ndarray, db: RagDatabase, decoder: InstrumentDecoder, *,
                  f0_hz: np.ndarray | None = None, voiced: np.ndarray | None = None,
                  loud_db: np.ndarray | None = None, tempo_bpm: float = float("nan"),
                  grid_s: np.ndarray | None = None) -> Query:
    """Query vectors, seam, level, dynamics and key profile of the user's clip [n] at 16 kHz.

    Args:
        audio: the clip (mono, the database's sample rate).
        f0_hz, voiced, loud_db: its [T] analysis when the caller already has it (the performer's);
            else YIN and loudness run here.
        tempo_bpm: the clip's tempo (beat tracking), NaN when unknown.
        grid_s: the clip's beat times relative to where the continuation starts (s), to place
            each segment's beats on them; None: segments keep their stored starts.

    Raises:
        EnsembleError: shorter than ``min_input_seconds`` or silent.
    """
    cfg = db.config
    seconds = len(audio) / db.features.sample_rate
    if seconds < cfg.min_input_seconds:
        raise EnsembleError(f"input is {seconds:.2f} s long; allowed: at least {cfg.min_input_seconds:g} s")
    if float(np.max(np.abs(audio))) < 10 ** (-70 / 20):
        raise EnsembleError("input is silent (peak below -70 dBFS): nothing to continue")
    if f0_hz is None or voiced is None:
        f0_hz, voiced = f0_yin(audio, config=db.features)
    if loud_db is None:
        loud_db = loudness_db(audio, config=db.features)
    an = analyze_controls(f0_hz, voiced, loud_db, decoder)
    T = len(an.f0)
    cs, cc = cumsum0(an.states), cumsum0(an.chroma)
    notes, used, vecs = [], [], []
    for L in cfg.lookbacks:
        lf = min(int(round(L * db.fps)), T)
        used.append(round(min(L, seconds), 2))
        e = window_means(cs, np.array([T - lf]), np.array([T]))
        c = window_means(cc, np.array([T - lf]), np.array([T]))
        vecs.append(np.concatenate([project_embeddings(e, db.pca_mean, db.pca_components)[0], l2_normalize(c)[0]]))
    if seconds < min(cfg.lookbacks):
        notes.append(f"input is {seconds:.2f} s, shorter than the smallest lookback "
                     f"{min(cfg.lookbacks):g} s: the whole input was used as the query")
    w = int(round(cfg.segment_seconds * db.fps))
    tail = an.loud[-w:]
    level = phrase_level(tail)
    active = an.loud >= an.loud.max() - 30.0
    voiced_fraction = float((an.voiced & active).sum() / max(int(active.sum()), 1))
    seam = int(round(cfg.seam_seconds * db.fps))
    pitch, loud = seam_stats(an.f0[-seam:], an.voiced[-seam:], an.loud[-seam:])
    if math.isnan(pitch):  # a rest at the very end: the last note played is what the join follows
        last = np.flatnonzero(an.voiced[-int(2 * db.fps):])
        if len(last):
            pitch = float(hz_to_cents(np.array([an.f0[-int(2 * db.fps):][last[-1]]]), dtype=None)[0])
        else:
            notes.append("the input's last 2 s are unvoiced: pitch coherence is neutral (0.5)")
    if voiced_fraction < 0.3:
        notes.append(f"the input is mostly unpitched ({100 * voiced_fraction:.0f} % of its sounding frames "
                     "have a pitch): the database holds melodies, so these continuations may not fit it")
    profile = an.chroma.sum(axis=0).astype(np.float64)
    tail_v = an.voiced[-w:] & (an.f0[-w:] > 0)
    register = float(np.mean(hz_to_cents(an.f0[-w:][tail_v], dtype=None))) if tail_v.any() else float("nan")
    beat, phase = float("nan"), 0.0
    if grid_s is not None and len(grid_s) >= 2 and math.isfinite(tempo_bpm):
        beat = float(np.median(np.diff(grid_s)))
        phase = float(grid_s[0]) % beat
    return Query(np.stack(vecs).astype(np.float32), tuple(used), pitch, loud - level, level,
                 dynamics_db(tail), profile, float(tempo_bpm), seconds, round(voiced_fraction, 4),
                 tuple(notes), beat, phase, register)


@dataclass(frozen=True)
class Candidate:
    """One retrieved continuation and how it is conformed to the input.

    Attributes:
        transpose: semitones the segment is shifted by (key shift plus octaves).
        stretch: time factor its controls are stretched by to play at the input's tempo (> 1 =
            slower, longer); 1 when either tempo is unknown or conforming is off.
        key_fit: correlation of the input's pitch-class profile with the shifted segment's.
        source_start_seconds: where in its line it is played from (``start_seconds`` moved so its
            beats land on the input's grid).
        seam_pitch_jump_cents, seam_loudness_jump_db: the jump at the seam, signed (after minus
            before). Retrieval fills in its prediction from stored features; :func:`ensemble.extend.
            extend` replaces them by the jump measured on the rendered audio.
        weights: which weights ranked it: :data:`HAND_SET` (the composite) or the version hash of
            the fitted weights the database's ``utility`` holds (``"pl-..."``).
    """

    rank: int
    chunk: int
    track: str
    start_seconds: float
    composite: float
    relevance: float
    coherence: float
    lookback: float
    transpose: int
    seam_pitch_jump_cents: float
    seam_loudness_jump_db: float
    fallback: bool
    stretch: float = 1.0
    key_fit: float = float("nan")
    source_start_seconds: float = float("nan")
    weights: str = "hand-set"

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _query_matrix(q: Query, cfg: RagConfig, transposes: np.ndarray) -> np.ndarray:
    """[n_lookbacks, n_transposes, 2 * (D + 12)] queries against [context | segment] vectors.

    Transposing a candidate up by t semitones rolls its profile by +t; equivalently the query's
    profile is rolled by -t.
    """
    D = q.vectors.shape[1] - 12
    w, lam = cfg.chroma_weight, cfg.context_weight
    n_l, n_t = q.vectors.shape[0], len(transposes)
    roll = (np.arange(12)[None, :] + np.asarray(transposes, np.int64)[:, None]) % 12  # [n_t, 12]: np.roll(c, -t)
    part = np.concatenate([np.broadcast_to(((1 - w) * q.vectors[:, :D])[:, None, :], (n_l, n_t, D)),
                           w * q.vectors[:, D:][:, roll]], axis=2)  # [L, n_t, D + 12]
    return np.concatenate([lam * part, (1 - lam) * part], axis=2).astype(np.float32)


def _penalties(join: np.ndarray, approach: np.ndarray, mode: str) -> np.ndarray:
    """|difference| per the seam_match mode; NaN where no comparison has evidence."""
    if mode == "join":
        return np.abs(join)
    if mode == "approach":
        return np.abs(approach)
    return np.fmin(np.abs(join), np.abs(approach))  # fmin: the other one where either is NaN


def _key_fit(db: RagDatabase, q: Query, idx: np.ndarray, transposes: np.ndarray) -> np.ndarray:
    """[n, n_t] Pearson correlation of the query's profile with each segment's, shifted by t."""
    D = db.seg.shape[1] - 12
    prof = db.seg[idx, D:].astype(np.float64)  # [n, 12] L2-normalised
    qp = q.profile - q.profile.mean()
    qn = np.linalg.norm(qp)
    out = np.empty((len(idx), len(transposes)))
    pc = prof - prof.mean(axis=1, keepdims=True)
    pn = np.linalg.norm(pc, axis=1)
    for j, t in enumerate(transposes):
        out[:, j] = (np.roll(pc, int(t), axis=1) @ qp) / np.maximum(pn * qn, 1e-9)
    return np.where((pn[:, None] > 1e-9) & (qn > 1e-9), out, 0.0)


def _octaves(pitch_jump: np.ndarray) -> np.ndarray:
    """Whole octaves (in semitones) that bring a jump in cents nearest 0 (0 where unknown)."""
    return np.where(np.isnan(pitch_jump), 0, -12 * np.round(np.nan_to_num(pitch_jump) / 1200.0)).astype(int)


def track_stretch(db: RagDatabase, q: Query) -> np.ndarray:
    """[n_tracks] time factor that plays each line at the query's tempo (1 where either is unknown)."""
    src = db.tempo_bpm
    ok = np.isfinite(src) & (src > 0) & math.isfinite(q.tempo_bpm) & (q.tempo_bpm > 0)
    ratio = np.where(ok, src / np.where(ok, q.tempo_bpm, 1.0), 1.0)  # source beats per input beat
    return np.where(ok, fold_stretch(ratio), 1.0)


def _stretch(db: RagDatabase, q: Query, idx: np.ndarray) -> np.ndarray:
    """[n] time factor that plays each candidate at the query's tempo (1 where unknown)."""
    return track_stretch(db, q)[db.chunk_track[idx]]


def _closeness(cents: np.ndarray, halflife_semitones: float) -> np.ndarray:
    """exp(-ln 2 * |cents| / 100 / half-life): 1 at 0, 0.5 at the half-life; 0.5 where NaN."""
    a = math.log(2) / halflife_semitones
    return np.where(np.isnan(cents), 0.5, np.exp(-a * np.abs(np.nan_to_num(cents)) / 100.0))


def _coherence(db: RagDatabase, q: Query, idx: np.ndarray, transposes: np.ndarray, cfg: RagConfig,
               stretch: np.ndarray, starts: np.ndarray, key_fit: np.ndarray, register: np.ndarray):
    """Coherence [n, n_t], join pitch jump (cents) [n, n_t], octave shift [n, n_t] (semitones),
    join loudness jump (dB, relative levels) [n], stretch [n] -- at the aligned starts.

    ``register``: [n] mean voiced pitch (cents) of each candidate's played window."""
    e_pitch, e_loud, a_pitch, a_loud = _entry(db, idx, starts)
    shift = 100.0 * transposes[None, :]
    join = (e_pitch[:, None] + shift) - q.seam_pitch
    reg = (register[:, None] + shift) - q.register_pitch  # [n, n_t] cents, before octaves
    octv = _octaves(join)
    # of the entry's octave and its neighbours, the one where the join and the register fit best
    # together (a line that starts on the input's last note but lives an octave below it moves)
    options = np.stack([octv - 12, octv, octv + 12])  # [3, n, n_t]
    fit = _closeness(join[None] + 100.0 * options, cfg.pitch_halflife_semitones) + \
        _closeness(reg[None] + 100.0 * options, cfg.register_halflife_semitones)
    octv = np.take_along_axis(options, np.argmax(fit + 1e-9 * (options == octv[None]), axis=0)[None], 0)[0]
    # the leader decoder renders pitch cleanly within ``register_hz``: keep the entry inside it
    lo, hi = (float(hz_to_cents(np.array([x]), dtype=None)[0]) for x in cfg.register_hz)
    entry = e_pitch[:, None] + shift + 100.0 * octv
    octv = octv - 12 * (entry > hi) + 12 * (entry < lo)
    join = (e_pitch[:, None] + shift) - q.seam_pitch + 100.0 * octv
    approach = (a_pitch[:, None] + shift + 100.0 * octv) - q.seam_pitch
    pitch_pen = _penalties(join, approach, cfg.seam_match)
    loud_jump = e_loud - q.seam_loud
    loud_pen = _penalties(loud_jump, a_loud - q.seam_loud, cfg.loudness_match)
    b = math.log(2) / cfg.loudness_halflife_db
    c = math.log(2) / cfg.tempo_halflife_octaves
    p_term = _closeness(pitch_pen, cfg.pitch_halflife_semitones)
    r_term = _closeness(reg + 100.0 * octv, cfg.register_halflife_semitones)
    l_term = np.where(np.isnan(loud_pen), 0.5, np.exp(-b * np.nan_to_num(loud_pen)))[:, None]
    known = math.isfinite(q.tempo_bpm) & np.isfinite(db.tempo_bpm[db.chunk_track[idx]])
    t_term = np.where(known, np.exp(-c * np.abs(np.log2(stretch))), 0.5)[:, None]
    k_term = np.clip(key_fit, 0.0, 1.0)
    return (p_term + l_term + t_term + k_term + r_term) / 5.0, join, octv, loud_jump, stretch


def aligned_starts(db: RagDatabase, q: Query, idx: np.ndarray, stretch: np.ndarray,
                   cont_frames: int) -> np.ndarray:
    """[n] source frame (float) where each candidate starts so that its beats land on the input's grid.

    Output time tau after the continuation's start plays source time s + tau / stretch. The
    corpus renders beat 0 at 0 s, so the source's beats are multiples of its beat, itself a
    power-of-two multiple of ``period`` = (the input's beat) / stretch; they land on the input's
    beats (``q.beat_phase_s`` + m * ``q.beat_s``) when s = -phase / stretch (mod period). The chunk
    start moves by less than half a period to the nearest such s (earlier when the window would
    run past the line's end). Unchanged where either tempo is unknown.
    """
    fps = db.fps
    start = db.chunk_start[idx].astype(np.float64) / fps
    tempo = db.tempo_bpm[db.chunk_track[idx]]
    ok = np.isfinite(tempo) & (tempo > 0) & math.isfinite(q.beat_s)
    if not ok.any():
        return start * fps
    period = np.where(ok, (q.beat_s if math.isfinite(q.beat_s) else 1.0) / stretch, 1.0)
    want = np.mod(-q.beat_phase_s / stretch, period)
    s = start + (np.mod(want - start + period / 2, period) - period / 2)
    s = np.where(s < 0, s + period, s)
    line = (db.track_offsets[db.chunk_track[idx] + 1] - db.track_offsets[db.chunk_track[idx]]) / fps
    over = np.maximum(s + cont_frames / fps / stretch - line, 0.0)
    s = s - period * np.ceil(over / period)
    return np.where(ok, np.maximum(s, 0.0), start) * fps


def _entry(db: RagDatabase, idx: np.ndarray, start_frames: np.ndarray) -> tuple[np.ndarray, ...]:
    """At each aligned start: (entry pitch cents, entry loudness re level, approach pitch, approach
    loudness re level) -- mean voiced cents and mean loudness of ``seam_seconds`` after / before."""
    seam = int(round(db.config.seam_seconds * db.fps))
    line0 = db.track_offsets[db.chunk_track[idx]]
    line1 = db.track_offsets[db.chunk_track[idx] + 1]
    a = np.minimum(line0 + np.round(start_frames).astype(np.int64), line1 - 1)

    def stats(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nv = db.cum_voiced[hi] - db.cum_voiced[lo]
        pitch = np.where(nv > 0, (db.cum_cents[hi] - db.cum_cents[lo]) / np.maximum(nv, 1), np.nan)
        loud = np.where(hi > lo, (db.cum_loud[hi] - db.cum_loud[lo]) / np.maximum(hi - lo, 1), np.nan)
        return pitch, loud - db.level[idx]

    ep, el = stats(a, np.minimum(a + seam, line1))
    pp, pl = stats(np.maximum(a - seam, line0), a)
    return ep, el, pp, pl


def window_pitch(db: RagDatabase, idx: np.ndarray, cont_frames: int, stretch: np.ndarray,
                 start_frames: np.ndarray) -> np.ndarray:
    """[n] mean voiced pitch (cents re A4) of what each candidate plays: the source frames from its
    aligned start for ``cont_frames`` output frames at its stretch (NaN when none is voiced)."""
    need = np.ceil(cont_frames / stretch).astype(np.int64)
    line0 = db.track_offsets[db.chunk_track[idx]]
    line1 = db.track_offsets[db.chunk_track[idx] + 1]
    a = np.minimum(line0 + np.round(start_frames).astype(np.int64), line1 - 1)
    b = np.minimum(a + need, line1)
    nv = db.cum_voiced[b] - db.cum_voiced[a]
    return np.where(nv > 0, (db.cum_cents[b] - db.cum_cents[a]) / np.maximum(nv, 1), np.nan)


def _playable(db: RagDatabase, idx: np.ndarray, cont_frames: int, stretch: np.ndarray,
              start_frames: np.ndarray) -> np.ndarray:
    """[n] bool: the line has the frames the continuation needs at its stretch and is voiced within
    ``end_voiced_seconds`` of where that window ends (it does not run into silence)."""
    need = np.ceil(cont_frames / stretch).astype(np.int64)  # source frames
    line0 = db.track_offsets[db.chunk_track[idx]]
    line1 = db.track_offsets[db.chunk_track[idx] + 1]
    end = line0 + np.round(start_frames).astype(np.int64) + need
    ok = end <= line1
    end = np.minimum(end, line1)
    tail = max(1, int(round(db.config.end_voiced_seconds * db.fps)))
    return ok & (db.cum_voiced[end] - db.cum_voiced[np.maximum(end - tail, 0)] > 0)


def _select(order_keys: np.ndarray, idx: np.ndarray, t_idx: np.ndarray, db: RagDatabase, k: int,
            min_gap: int, taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Greedy non-overlapping pick in descending score order. taken: (chunk, transpose index)."""
    out = []
    for j in order_keys:
        c = int(idx[j])
        tr, st = db.chunk_track[c], db.chunk_start[c]
        clash = any(db.chunk_track[o] == tr and abs(int(db.chunk_start[o]) - int(st)) < min_gap
                    for o, _ in taken + out)
        if not clash:
            out.append((c, int(t_idx[j])))
            if len(taken) + len(out) >= k:
                break
    return out


def _score_all(db: RagDatabase, q: Query, idx: np.ndarray, transposes: np.ndarray, cfg: RagConfig,
               alpha: float, beta: float, mask: np.ndarray, stretch_all: np.ndarray, starts_all: np.ndarray,
               register_all: np.ndarray):
    """Exact scores of candidates ``idx`` for every transpose: dict of [n, n_t] arrays."""
    Q = _query_matrix(q, cfg, transposes)  # [L, n_t, 2d]
    d = db.seg.shape[1]
    everything = len(idx) == db.n_chunks
    seg = db.seg if everything else db.seg[idx]  # [n, d]
    rel_l = np.empty((len(cfg.lookbacks), len(idx), len(transposes)), np.float32)
    for li in range(len(cfg.lookbacks)):
        if not mask[li]:
            rel_l[li] = -np.inf
            continue
        ctx = db.ctx[li] if everything else db.ctx[li, idx]  # [n, d]
        rel_l[li] = ctx @ Q[li, :, :d].T + seg @ Q[li, :, d:].T  # [n, n_t]
    best_l = np.argmax(rel_l, axis=0)  # [n, n_t]
    rel = np.max(rel_l, axis=0)
    kf = _key_fit(db, q, idx, transposes)
    allowed = kf >= kf.max(axis=1, keepdims=True) - cfg.key_margin
    stretch, starts = stretch_all[idx], starts_all[idx]
    coh, pj, octv, lj, stretch = _coherence(db, q, idx, transposes, cfg, stretch, starts, kf, register_all[idx])
    comp = np.where(allowed, alpha * rel + beta * coh, -np.inf)
    order = comp
    if db.utility is not None:  # fitted weights rank; the composite is still recorded
        order = np.where(allowed, db.utility.utility({
            "relevance": rel, "coherence": coh, "seam_pitch_jump_cents": pj,
            "seam_loudness_jump_db": lj[:, None]}), -np.inf)
    return {"rel": rel, "best_l": best_l, "coh": coh, "pj": pj, "oct": octv, "kf": kf, "allowed": allowed,
            "lj": np.broadcast_to(lj[:, None], rel.shape),
            "stretch": np.broadcast_to(stretch[:, None], rel.shape),
            "start": np.broadcast_to(starts[:, None], rel.shape), "comp": comp, "order": order}


def retrieve(db: RagDatabase, q: Query, k: int = 10, *, alpha: float | None = None,
             beta: float | None = None, transpose: bool = True,
             continuation_seconds: float | None = None,
             lookback_mask: np.ndarray | None = None, ranking: str = "composite",
             conform: bool = True, seed: int = 0) -> list[Candidate]:
    """Top-K candidates (see the module docstring). Vectorised; exact with flat indexes.

    Args:
        k: 1..100; fewer are returned only if the database has fewer playable non-overlapping
            segments.
        transpose: allow key shifts (-6..+6 semitones); octaves always follow the register.
        continuation_seconds: length each segment will be played for, at the input's tempo (sets
            the overlap rule and which segments are long enough); default ``segment_seconds``.
        lookback_mask: [n_lookbacks] bool, which of the database's lookbacks may be used.
        ranking: "composite" (the scores above) or "random" (K playable segments drawn with
            ``seed``: the naive baseline).
        conform: False plays segments as stored (no key shift, octave or stretch): a baseline.

    Raises:
        EnsembleError: bad k/alpha/beta/ranking.
    """
    with _THREADS.limit(limits=1, user_api="blas"):
        return _retrieve(db, q, k, alpha=alpha, beta=beta, transpose=transpose and conform,
                         continuation_seconds=continuation_seconds, lookback_mask=lookback_mask,
                         ranking=ranking, conform=conform, seed=seed)


def _retrieve(db, q, k, *, alpha, beta, transpose, continuation_seconds, lookback_mask, ranking,
              conform, seed) -> list[Candidate]:
    cfg = db.config
    alpha = cfg.alpha if alpha is None else float(alpha)
    beta = cfg.beta if beta is None else float(beta)
    if not 1 <= int(k) <= 100:
        raise EnsembleError(f"k = {k}; allowed: 1..100")
    if not (math.isfinite(alpha) and math.isfinite(beta) and alpha >= 0 and beta >= 0):
        raise EnsembleError(f"alpha = {alpha}, beta = {beta}; allowed: finite and >= 0")
    if ranking not in RANKINGS:
        raise EnsembleError(f"ranking {ranking!r}; allowed: {list(RANKINGS)}")
    cont = cfg.segment_seconds if continuation_seconds is None else continuation_seconds
    cont_frames = int(round(cont * db.fps))
    min_gap = cont_frames
    transposes = np.arange(-cfg.transpose_semitones, cfg.transpose_semitones + 1) if transpose \
        else np.array([0])
    mask = np.ones(len(cfg.lookbacks), bool) if lookback_mask is None else np.asarray(lookback_mask, bool)
    if mask.shape != (len(cfg.lookbacks),) or not mask.any():
        raise EnsembleError(f"lookback_mask must select some of {list(cfg.lookbacks)}")
    if db.ann is not None and ranking == "composite" and db.utility is None:
        # above ivf_threshold: fetch through the IVF index, score those exactly (ensemble.rag_index)
        from ensemble.rag_index import retrieve_ann

        return retrieve_ann(db, q, k, alpha=alpha, beta=beta, transposes=transposes, cont_frames=cont_frames,
                            mask=mask, conform=conform)
    every = np.arange(db.n_chunks)
    stretch_all = _stretch(db, q, every) if conform else np.ones(db.n_chunks)
    starts_all = aligned_starts(db, q, every, stretch_all, cont_frames) if conform \
        else db.chunk_start.astype(np.float64)
    playable = _playable(db, every, cont_frames, stretch_all, starts_all)
    all_idx = np.flatnonzero(playable)
    extra = (stretch_all, starts_all, window_pitch(db, every, cont_frames, stretch_all, starts_all))
    if ranking == "random":
        return _random(db, q, all_idx, k, min_gap, transposes, cfg, alpha, beta, mask, conform, seed, extra)

    # faiss pre-selection by relevance; if that cannot be proven exact (flat index), score all
    n_pre = max(256, 64 * k)
    ivf = isinstance(db.indexes[0], faiss.IndexIVFFlat)
    if (n_pre * 4 >= db.n_chunks and not ivf) or db.utility is not None:
        # (a fitted utility has no relevance bound that would prove the pre-selection exact)
        picks = _rank(db, q, all_idx, transposes, cfg, alpha, beta, k, min_gap, mask, extra)
        return _finish(db, picks, transposes, conform)
    Q = _query_matrix(q, cfg, transposes)
    ids, worst = [], []
    for li, index in enumerate(db.indexes):
        if mask[li]:
            scores, found = index.search(np.ascontiguousarray(Q[li]), n_pre)
            ids.append(found.ravel())
            worst.append(float(scores[:, -1].max()))
    idx = np.unique(np.concatenate(ids))
    idx = idx[(idx >= 0)]
    idx = idx[playable[idx]]
    picks = _rank(db, q, idx, transposes, cfg, alpha, beta, k, min_gap, mask, extra)
    if ivf:
        return _finish(db, picks, transposes, conform)  # approximate by design above ivf_threshold
    # An unfetched candidate's relevance is below every query's n_pre-th score, so its composite
    # is at most alpha * max(worst) + beta: if the K-th pick beats that, nothing unfetched can
    # enter the Top-K. A fallback pass means the strict pass ran short, which only scoring
    # everything can confirm.
    exact = len(picks) >= k and not any(p[4] for p in picks) and \
        min(p[2] for p in picks) > alpha * max(worst) + beta
    if not exact:
        picks = _rank(db, q, all_idx, transposes, cfg, alpha, beta, k, min_gap, mask, extra)
    return _finish(db, picks, transposes, conform)


def _random(db, q, all_idx, k, min_gap, transposes, cfg, alpha, beta, mask, conform, seed, extra):
    """K playable, non-overlapping segments in a seeded random order (scored for the record; each
    at its best allowed shift when conforming)."""
    if len(all_idx) == 0:
        return []
    order = np.random.default_rng(seed).permutation(len(all_idx))
    picks = _select(order, all_idx, np.zeros(len(all_idx), int), db, k, min_gap, [])
    idx = np.array(sorted(c for c, _ in picks), np.int64)
    s = _score_all(db, q, idx, transposes, cfg, alpha, beta, mask, *extra)
    res = []
    for c, _ in picks:
        i = int(np.searchsorted(idx, c))
        t = int(np.argmax(s["comp"][i]))
        res.append((c, t, float(s["comp"][i, t]), {key: s[key][i, t] for key in _KEEP}, False))
    return _finish(db, res, transposes, conform)


_KEEP = ("rel", "coh", "pj", "lj", "best_l", "oct", "kf", "stretch", "start")


def _finish(db: RagDatabase, picks: list, transposes: np.ndarray, conform: bool) -> list[Candidate]:
    return [_candidate(db, r + 1, *p, transposes=transposes, conform=conform) for r, p in enumerate(picks)]


def _rank(db, q, idx, transposes, cfg, alpha, beta, k, min_gap, mask, extra):
    """Strict pass then fallback over candidates ``idx`` -> [(chunk, t_index, composite, scores, fb)]."""
    if len(idx) == 0:
        return []
    s = _score_all(db, q, idx, transposes, cfg, alpha, beta, mask, *extra)
    n, nt = s["comp"].shape
    flat_i = np.repeat(np.arange(n), nt)
    flat_t = np.tile(np.arange(nt), n)
    dyn_ok = np.abs(db.dynamics[idx] - q.dynamics) <= cfg.dynamics_tolerance_db
    if not math.isfinite(q.dynamics):
        dyn_ok = np.ones(n, bool)
    strict = (s["coh"] >= cfg.coherence_floor) & dyn_ok[:, None] & s["allowed"] & (s["kf"] >= cfg.key_floor)
    comp = s["order"].ravel()  # the composite, or the fitted utility
    order = np.lexsort((idx[flat_i], -comp))  # ties broken by chunk index
    order = order[strict.ravel()[order]]
    picks = _select(order, idx[flat_i], flat_t, db, k, min_gap, [])
    out = [(c, t, False) for c, t in picks]
    if len(out) < k:
        fb = np.where(s["allowed"], cfg.fallback_alpha * s["rel"] + cfg.fallback_beta * s["coh"], -np.inf).ravel() \
            if db.utility is None else s["order"].ravel()
        order = np.lexsort((idx[flat_i], -fb))
        order = order[s["allowed"].ravel()[order]]
        more = _select(order, idx[flat_i], flat_t, db, k, min_gap, picks)
        out += [(c, t, True) for c, t in more]
    res = []
    for c, t, fallback in out:
        i = int(np.searchsorted(idx, c))
        comp_v = (cfg.fallback_alpha * s["rel"][i, t] + cfg.fallback_beta * s["coh"][i, t]) if fallback \
            else s["comp"][i, t]
        res.append((c, t, float(comp_v), {key: s[key][i, t] for key in _KEEP}, fallback))
    return res


def _candidate(db, rank, chunk, t_i, comp, sc, fallback, *, transposes, conform) -> Candidate:
    cfg = db.config
    shift = int(transposes[t_i]) + int(sc["oct"]) if conform else 0
    pj = float(sc["pj"]) if conform else float(sc["pj"]) - 100.0 * (int(transposes[t_i]) + int(sc["oct"]))
    return Candidate(rank=rank, chunk=int(chunk), track=db.track_names[db.chunk_track[chunk]],
                     start_seconds=round(int(db.chunk_start[chunk]) / db.fps, 2), composite=round(comp, 6),
                     relevance=round(float(sc["rel"]), 6), coherence=round(float(sc["coh"]), 6),
                     lookback=float(cfg.lookbacks[int(sc["best_l"])]), transpose=shift,
                     seam_pitch_jump_cents=round(pj, 2),
                     seam_loudness_jump_db=round(float(sc["lj"]), 3), fallback=bool(fallback),
                     stretch=round(float(sc["stretch"]), 6) if conform else 1.0,
                     key_fit=round(float(sc["kf"]), 4),
                     source_start_seconds=round(float(sc["start"]) / db.fps, 4),
                     weights=HAND_SET if db.utility is None else str(db.utility.version))


def reference_retrieve(db: RagDatabase, q: Query, k: int = 10, *, alpha: float | None = None,
                       beta: float | None = None, transpose: bool = True,
                       continuation_seconds: float | None = None,
                       lookback_mask: np.ndarray | None = None) -> list[tuple[int, int, bool]]:
    """The unvectorised oracle: a Python loop scoring every candidate one by one. Returns
    [(chunk, transpose incl. octaves, fallback)] in rank order. For tests and benchmarks."""
    cfg = db.config
    alpha = cfg.alpha if alpha is None else alpha
    beta = cfg.beta if beta is None else beta
    cont = cfg.segment_seconds if continuation_seconds is None else continuation_seconds
    cont_frames = int(round(cont * db.fps))
    ts = range(-cfg.transpose_semitones, cfg.transpose_semitones + 1) if transpose else [0]
    D = q.vectors.shape[1] - 12
    w, lam = cfg.chroma_weight, cfg.context_weight
    a = math.log(2) / cfg.pitch_halflife_semitones
    b = math.log(2) / cfg.loudness_halflife_db
    cc = math.log(2) / cfg.tempo_halflife_octaves
    transpose_or_conform = True  # the oracle scores conformed candidates, as retrieve() does by default
    scored = []
    for c in range(db.n_chunks):
        line = int(db.chunk_track[c])
        src = float(db.tempo_bpm[line])
        known = math.isfinite(src) and src > 0 and math.isfinite(q.tempo_bpm) and q.tempo_bpm > 0
        stretch = 1.0
        if known:
            r = src / q.tempo_bpm
            stretch = r * 2.0 ** (-round(math.log2(r)))
        one = np.array([c])
        start = aligned_starts(db, q, one, np.array([stretch]), cont_frames) if transpose_or_conform \
            else db.chunk_start[one].astype(np.float64)
        if not _playable(db, one, cont_frames, np.array([stretch]), start)[0]:
            continue
        e_pitch, e_loud, a_pitch, a_loud = (float(x[0]) for x in _entry(db, one, start))
        w_pitch = float(window_pitch(db, one, cont_frames, np.array([stretch]), start)[0])
        prof = db.seg[c, D:].astype(np.float64)
        fits = {}
        for t in ts:
            x, y = np.roll(prof, t) - np.roll(prof, t).mean(), q.profile - q.profile.mean()
            den = np.linalg.norm(x) * np.linalg.norm(y)
            fits[t] = float(x @ y / den) if den > 1e-9 else 0.0
        best_fit = max(fits.values())
        for t in ts:
            if fits[t] < best_fit - cfg.key_margin:
                continue
            rels = []
            for li in range(len(cfg.lookbacks)):
                if lookback_mask is not None and not lookback_mask[li]:
                    continue
                qe, qc = q.vectors[li, :D], np.roll(q.vectors[li, D:], -t)
                def sim(v, qe=qe, qc=qc):
                    return (1 - w) * float(np.dot(qe, v[:D])) + w * float(np.dot(qc, v[D:]))
                rels.append(lam * sim(db.ctx[li, c]) + (1 - lam) * sim(db.seg[c]))
            rel = max(rels)
            join = e_pitch + 100 * t - q.seam_pitch
            reg = w_pitch + 100 * t - q.register_pitch
            octv0 = 0 if math.isnan(join) else -12 * round(join / 1200.0)

            def closeness(x: float, hl: float) -> float:
                return 0.5 if math.isnan(x) else math.exp(-math.log(2) * abs(x) / 100 / hl)

            fits_o = {o: closeness(join + 100 * o, cfg.pitch_halflife_semitones)
                      + closeness(reg + 100 * o, cfg.register_halflife_semitones)
                      for o in (octv0 - 12, octv0, octv0 + 12)}
            octv = max(fits_o, key=lambda o: (fits_o[o] + (1e-9 if o == octv0 else 0.0)))
            entry = e_pitch + 100 * (t + octv)
            lo, hi = (1200 * math.log2(x / 440.0) for x in cfg.register_hz)
            octv += -12 * (entry > hi) + 12 * (entry < lo)
            pp = _reference_penalty(join + 100 * octv, a_pitch + 100 * (t + octv) - q.seam_pitch, cfg.seam_match)
            lp = _reference_penalty(e_loud - q.seam_loud, a_loud - q.seam_loud, cfg.loudness_match)
            pt = 0.5 if math.isnan(pp) else math.exp(-a * pp / 100)
            lt = 0.5 if math.isnan(lp) else math.exp(-b * lp)
            tt = math.exp(-cc * abs(math.log2(stretch))) if known else 0.5
            rt = closeness(reg + 100 * octv, cfg.register_halflife_semitones)
            coh = (pt + lt + tt + min(max(fits[t], 0.0), 1.0) + rt) / 5.0
            dyn_ok = abs(float(db.dynamics[c]) - q.dynamics) <= cfg.dynamics_tolerance_db \
                or not math.isfinite(q.dynamics)
            scored.append((c, t + octv, rel, coh, dyn_ok, fits[t]))

    def pick(entries, score, taken):
        out = []
        for c, t, *_ in sorted(entries, key=lambda e: (-score(e), e[0])):
            if any(db.chunk_track[o] == db.chunk_track[c] and
                   abs(int(db.chunk_start[o]) - int(db.chunk_start[c])) < cont_frames for o, _ in taken + out):
                continue
            out.append((c, t))
            if len(taken) + len(out) >= k:
                break
        return out

    strict = [e for e in scored if e[3] >= cfg.coherence_floor and e[4] and e[5] >= cfg.key_floor]
    first = pick(strict, lambda e: alpha * e[2] + beta * e[3], [])
    result = [(c, t, False) for c, t in first]
    if len(result) < k:
        more = pick(scored, lambda e: cfg.fallback_alpha * e[2] + cfg.fallback_beta * e[3], first)
        result += [(c, t, True) for c, t in more]
    return result


def _reference_penalty(join: float, approach: float, mode: str) -> float:
    options = {"join": [join], "approach": [approach], "either": [join, approach]}[mode]
    known = [abs(x) for x in options if not math.isnan(x)]
    return min(known) if known else float("nan")
