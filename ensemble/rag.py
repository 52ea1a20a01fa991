"""Audio RAG: retrieve Top-K database segments that continue a user's clip, by relevance + coherence.

Database (``python -m ensemble index build``), over the leader (Guitar) stems of a corpus:

* the corpus is cut on ``chunk_seconds`` (2.0 s) base chunks; a *candidate* is the segment that
  starts at a chunk start and runs on through its track;
* per chunk start, for each lookback L (7.0/7.5/8.0/8.5 s): a **context** vector of the L seconds
  before the start, and one **segment** vector of the ``segment_seconds`` after it. A vector is
  ``[GRU embedding (PCA to embed_dims, L2-normalised), chroma (12-d, L2-normalised)]``; GRU
  embeddings are window means of the Guitar decoder's LayerNorm'd GRU states, run once over the
  whole track (cumulative sums make every window mean O(1));
* RMS mean and std of the continuation window (``segment_seconds`` after the start), and seam
  features: median voiced f0 (cents re A4) and mean loudness (dB) of the first ``seam_seconds``
  after the start (the *entry*) and of the last ``seam_seconds`` before it (the *approach*, what
  the source played into the segment);
* per track: f0 (Hz, fp16), voicing and loudness (dB, fp16) at 100 frames/s, and the Guitar audio as
  Ogg Vorbis (segments are decoded with a seek).

Query: the user's own clip is analysed once (YIN f0, loudness, chroma, RMS; the GRU run over the
clip), giving one query vector per lookback (the last L seconds, or what there is down to 2 s) and
the seam = the user's **own** last ``seam_seconds`` of f0 and loudness.

Scores (all vectorised over candidates):

* relevance(L) = ``context_weight`` * <q_L, context_L> + (1 - ``context_weight``) * <q_L, segment>,
  with <a, b> = (1 - ``chroma_weight``) * cos(emb) + ``chroma_weight`` * cos(chroma); the best
  lookback per candidate is kept. Range [-1, 1].
* coherence = mean(exp(-a * pitch_penalty_semitones), exp(-b * loudness_penalty_dB)) with
  a = ln 2 / ``pitch_halflife_semitones`` (2 st -> 0.5) and b = ln 2 / ``loudness_halflife_db``
  (6 dB -> 0.5). Each penalty compares the user's seam (their last ``seam_seconds``) with the
  candidate by a rule, ``seam_match`` for pitch and ``loudness_match`` for loudness:

  - ``"join"``: with the candidate's entry -- the jump heard at the join;
  - ``"approach"``: with the candidate's approach -- how far the user's last note is from what the
    source played into this segment (0 when the join repeats a move the source itself made);
  - ``"either"``: the smaller of the two: smooth, or the source's own move.

  Defaults: pitch ``"approach"``, loudness ``"either"``. Melodies move by steps and leaps, and the
  true continuation of a phrase usually starts on a *new* note: judged at the join it is a
  several-semitone jump, below the 0.70 coherence floor, so ``"join"`` for both (the reference
  design's rule) keeps the true continuation out of the Top-10 (recall@10 0.18 on the valid split
  vs 0.82 with the defaults; ``benchmarks/rag_quality.py`` measures all nine combinations with three
  relevance variants, chosen on valid, reported on test). The joins still sound continuous: the
  Top-1's median pitch jump at the join is one or two semitones (vs ~6 for random candidates).

  A side without voiced frames gives no pitch evidence; with none the pitch term is 0.5 (likewise
  loudness at a track's start). Range (0, 1]. ``seam_pitch_jump_cents`` / ``seam_loudness_jump_db``
  of a result are always the jump at the join (what the listener hears).
* composite = alpha * relevance + beta * coherence.

Strict pass: RMS mean and std within ``rms_tolerance`` (+-20 %) of the input's last
``segment_seconds``, coherence >= ``coherence_floor``. If that yields fewer than K, a fallback pass
(alpha 0.95, beta 0.05, no floor, no RMS filter) fills the list; those rows carry ``fallback=True``.
Top-K are distinct and non-overlapping (two segments of one track overlap when their starts are less
than the continuation length apart).

With ``transpose`` every candidate is also scored shifted by -6..+6 semitones (chroma rolled, seam f0
shifted); a transposed winner is re-synthesised in the user's key by the Guitar decoder from the
segment's stored f0/loudness.

Relevance pre-selection uses faiss: an exact ``IndexFlatIP`` per lookback (an IVF index above
``ivf_threshold`` chunks). Top-N by relevance is fetched and N doubled until the N-th relevance
proves no unfetched candidate can beat the K-th composite (alpha * rel_N + beta * 1 < composite_K),
so with the flat index the Top-K is exactly that of scoring every candidate.
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
from ensemble.features import FeatureConfig, chroma, f0_yin, loudness_db, rms
from ensemble.files import sha256_file
from ensemble.models.decoder import InstrumentDecoder
from ensemble.music import hz_to_cents

__all__ = [
    "RagConfig",
    "RagDatabase",
    "Query",
    "Candidate",
    "analyze_query",
    "retrieve",
    "reference_retrieve",
    "segment_audio",
]

DB_FORMAT = 2  # 2: approach seam features (pre_pitch, pre_loud)
SEAM_MATCHES = ("join", "approach", "either")
# faiss-cpu ships its own OpenMP OpenBLAS; once it is loaded, numpy's small matrix products on 2
# threads take ~16 ms instead of ~0.05 ms (measured here). Scoring runs with BLAS on one thread.
_THREADS = ThreadpoolController()


@dataclass(frozen=True)
class RagConfig:
    """Database layout and retrieval settings (see the module docstring for the formulas)."""

    chunk_seconds: float = 2.0
    lookbacks: tuple[float, ...] = (7.0, 7.5, 8.0, 8.5)
    segment_seconds: float = 8.0
    seam_seconds: float = 0.4
    min_remaining_seconds: float = 4.0
    min_input_seconds: float = 2.0
    embed_dims: int = 64
    chroma_weight: float = 0.3
    context_weight: float = 0.5
    alpha: float = 0.8
    beta: float = 0.6
    fallback_alpha: float = 0.95
    fallback_beta: float = 0.05
    rms_tolerance: float = 0.2
    coherence_floor: float = 0.70
    seam_match: str = "approach"
    loudness_match: str = "either"
    pitch_halflife_semitones: float = 2.0
    loudness_halflife_db: float = 6.0
    transpose_semitones: int = 6
    crossfade_seconds: float = 0.1
    ivf_threshold: int = 200_000
    ivf_nprobe: int = 16
    faiss_threads: int = 1  # one query at a time: extra OpenMP threads only spin (40x slower here)
    vorbis_quality: float = 0.4

    def __post_init__(self) -> None:
        if not self.lookbacks or min(self.lookbacks) <= 0:
            raise EnsembleError(f"lookbacks {self.lookbacks} must be positive seconds")
        for name in ("seam_match", "loudness_match"):
            if getattr(self, name) not in SEAM_MATCHES:
                raise EnsembleError(f"{name} {getattr(self, name)!r}; allowed: {list(SEAM_MATCHES)}")
        for name in ("chroma_weight", "context_weight", "rms_tolerance", "coherence_floor"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise EnsembleError(f"{name} = {v} must be in [0, 1]")

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


@dataclass
class SignalAnalysis:
    f0: np.ndarray
    voiced: np.ndarray
    loud: np.ndarray
    rms: np.ndarray
    chroma: np.ndarray  # [T, 12]
    states: np.ndarray  # [T, H]


def analyze_signal(audio: np.ndarray, decoder: InstrumentDecoder, features: FeatureConfig) -> SignalAnalysis:
    """YIN f0 and voicing, loudness, RMS, chroma and the decoder's GRU states of a signal [n] at 16 kHz."""
    f0, voiced = f0_yin(audio, config=features)
    loud = loudness_db(audio, config=features)
    with torch.inference_mode():
        states = decoder.gru_states(torch.tensor(f0, dtype=torch.float32)[None, :, None],
                                    torch.tensor(loud, dtype=torch.float32)[None, :, None])
    return SignalAnalysis(f0, voiced, loud, rms(audio, config=features), chroma(audio, config=features).T,
                          states[0].numpy().astype(np.float32))


# ----------------------------------------------------------------------------- database

@dataclass
class RagDatabase:
    """A loaded retrieval database (arrays in memory, audio decoded on demand)."""

    root: Path
    config: RagConfig
    manifest: dict
    track_names: list[str]
    track_offsets: np.ndarray  # [n_tracks + 1] frame offsets into the concatenated arrays
    f0: np.ndarray  # [F_total] Hz (float32)
    voiced: np.ndarray  # [F_total] bool
    loud: np.ndarray  # [F_total] dB
    chunk_track: np.ndarray  # [N] int32
    chunk_start: np.ndarray  # [N] int32 frame within its track
    chunk_remaining: np.ndarray  # [N] int32 frames from start to track end
    ctx: np.ndarray  # [n_lookbacks, N, D + 12] context vectors (emb | chroma), float32
    seg: np.ndarray  # [N, D + 12] segment vectors
    rms_mean: np.ndarray  # [N]
    rms_std: np.ndarray  # [N]
    seam_pitch: np.ndarray  # [N] entry: cents re A4 (NaN = unvoiced)
    seam_loud: np.ndarray  # [N] entry: dB
    pre_pitch: np.ndarray  # [N] approach (the seam_seconds before the start): cents re A4 or NaN
    pre_loud: np.ndarray  # [N] approach: dB (NaN at a track's start)
    pca_mean: np.ndarray  # [H]
    pca_components: np.ndarray  # [D, H]
    indexes: list = field(default_factory=list)  # one faiss index per lookback
    features: FeatureConfig = field(default_factory=FeatureConfig)  # the frame grid it was built on

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
        for li in range(len(self.config.lookbacks)):
            vecs = np.ascontiguousarray(np.concatenate([self.ctx[li], self.seg], axis=1), np.float32)
            dim = vecs.shape[1]
            if self.n_chunks > self.config.ivf_threshold:
                nlist = int(math.sqrt(self.n_chunks))  # 1000 lists at 1M
                quant = faiss.IndexFlatIP(dim)
                index = faiss.IndexIVFFlat(quant, dim, nlist, faiss.METRIC_INNER_PRODUCT)
                rng = np.random.default_rng(0)
                sample = vecs[rng.choice(len(vecs), min(len(vecs), 30 * nlist), replace=False)]
                index.train(sample)
                index.add(vecs)
                index.nprobe = self.config.ivf_nprobe
            else:
                index = faiss.IndexFlatIP(dim)
                index.add(vecs)
            self.indexes.append(index)

    @classmethod
    def load(cls, root: str | os.PathLike, *, features: FeatureConfig = FeatureConfig()) -> RagDatabase:
        """Load and check a database folder.

        Args:
            root: the folder written by ``python -m ensemble index build``.
            features: the frame grid its per-frame arrays use (the project's one grid).

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
                arrays = {k: z[k] for k in z.files}
            with np.load(root / "tracks.npz") as z:
                tracks = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError) as exc:
            raise EnsembleError(f"RAG database {str(root)!r} cannot be read ({exc})") from None
        config = RagConfig.from_dict(manifest["config"])
        db = cls(root=root, config=config, manifest=manifest,
                 track_names=[str(x) for x in tracks["names"]],
                 track_offsets=tracks["offsets"].astype(np.int64),
                 f0=tracks["f0_hz"].astype(np.float32), voiced=tracks["voiced"].astype(bool),
                 loud=tracks["loudness_db"].astype(np.float32),
                 chunk_track=arrays["track"].astype(np.int32),
                 chunk_start=arrays["start"].astype(np.int32),
                 chunk_remaining=arrays["remaining"].astype(np.int32),
                 ctx=arrays["ctx"].astype(np.float32), seg=arrays["seg"].astype(np.float32),
                 rms_mean=arrays["rms_mean"].astype(np.float32),
                 rms_std=arrays["rms_std"].astype(np.float32),
                 seam_pitch=arrays["seam_pitch"].astype(np.float32),
                 seam_loud=arrays["seam_loud"].astype(np.float32),
                 pre_pitch=arrays["pre_pitch"].astype(np.float32),
                 pre_loud=arrays["pre_loud"].astype(np.float32),
                 pca_mean=arrays["pca_mean"].astype(np.float32),
                 pca_components=arrays["pca_components"].astype(np.float32), features=features)
        if db.ctx.shape[:2] != (len(config.lookbacks), db.n_chunks) or db.n_chunks == 0:
            raise EnsembleError(f"RAG database {str(root)!r} is empty or inconsistent "
                                f"(ctx {db.ctx.shape}, {db.n_chunks} chunks)")
        db.build_indexes()
        return db


def project_embeddings(states_mean: np.ndarray, mean: np.ndarray, comps: np.ndarray) -> np.ndarray:
    return l2_normalize((states_mean - mean) @ comps.T)


def segment_audio(db: RagDatabase, chunk: int, n_samples: int) -> np.ndarray:
    """Decode ``n_samples`` of the leader audio from a chunk's start (zero-padded at track end)."""
    track = int(db.chunk_track[chunk])
    path = db.root / "audio" / f"{db.track_names[track]}.ogg"
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
    seam_pitch: float  # cents re A4, NaN if unvoiced
    seam_loud: float  # dB
    rms_mean: float
    rms_std: float
    seconds: float
    notes: tuple[str, ...] = ()


def analyze_query(audio: np.ndarray, db: RagDatabase, decoder: InstrumentDecoder) -> Query:
    """Query vectors, seam and RMS stats of the user's clip [n_samples] at 16 kHz.

    Raises:
        EnsembleError: shorter than ``min_input_seconds`` or silent.
    """
    cfg = db.config
    seconds = len(audio) / db.features.sample_rate
    if seconds < cfg.min_input_seconds:
        raise EnsembleError(f"input is {seconds:.2f} s long; allowed: at least {cfg.min_input_seconds:g} s")
    if float(np.max(np.abs(audio))) < 10 ** (-70 / 20):
        raise EnsembleError("input is silent (peak below -70 dBFS): nothing to continue")
    an = analyze_signal(audio, decoder, db.features)
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
    seam = int(round(cfg.seam_seconds * db.fps))
    pitch, loud = seam_stats(an.f0[-seam:], an.voiced[-seam:], an.loud[-seam:])
    if math.isnan(pitch):
        notes.append("the input's last 0.4 s is unvoiced: pitch coherence is neutral (0.5)")
    w = int(round(cfg.segment_seconds * db.fps))
    tail = an.rms[-w:]
    return Query(np.stack(vecs).astype(np.float32), tuple(used), pitch, loud, float(tail.mean()),
                 float(tail.std()), seconds, tuple(notes))


@dataclass(frozen=True)
class Candidate:
    """One retrieved continuation."""

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

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _query_matrix(q: Query, cfg: RagConfig, transposes: np.ndarray) -> np.ndarray:
    """[n_lookbacks, n_transposes, 2 * (D + 12)] queries against [context | segment] vectors.

    Transposing a candidate up by t semitones rolls its chroma by +t; equivalently the query's
    chroma is rolled by -t.
    """
    D = q.vectors.shape[1] - 12
    w, lam = cfg.chroma_weight, cfg.context_weight
    out = []
    for li in range(q.vectors.shape[0]):
        e, c = q.vectors[li, :D], q.vectors[li, D:]
        rows = []
        for t in transposes:
            cr = np.roll(c, -int(t))
            part = np.concatenate([(1 - w) * e, w * cr])
            rows.append(np.concatenate([lam * part, (1 - lam) * part]))
        out.append(rows)
    return np.asarray(out, np.float32)


def _penalties(join: np.ndarray, approach: np.ndarray, mode: str) -> np.ndarray:
    """|difference| per the seam_match mode; NaN where no comparison has evidence."""
    if mode == "join":
        return np.abs(join)
    if mode == "approach":
        return np.abs(approach)
    return np.fmin(np.abs(join), np.abs(approach))  # fmin: the other one where either is NaN


def _coherence(db: RagDatabase, q: Query, idx: np.ndarray, transposes: np.ndarray, cfg: RagConfig):
    """Coherence [n, n_t], pitch jump at the join in cents [n, n_t], loudness jump at the join dB [n]."""
    shift = 100.0 * transposes[None, :]
    pitch_jump = (db.seam_pitch[idx][:, None] + shift) - q.seam_pitch
    pitch_pen = _penalties(pitch_jump, (db.pre_pitch[idx][:, None] + shift) - q.seam_pitch, cfg.seam_match)
    loud_jump = db.seam_loud[idx] - q.seam_loud
    loud_pen = _penalties(loud_jump, db.pre_loud[idx] - q.seam_loud, cfg.loudness_match)
    a = math.log(2) / cfg.pitch_halflife_semitones
    b = math.log(2) / cfg.loudness_halflife_db
    p_term = np.where(np.isnan(pitch_pen), 0.5, np.exp(-a * np.nan_to_num(pitch_pen) / 100.0))
    l_term = np.where(np.isnan(loud_pen), 0.5, np.exp(-b * np.nan_to_num(loud_pen)))[:, None]
    return 0.5 * (p_term + l_term), pitch_jump, loud_jump


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
               alpha: float, beta: float, mask: np.ndarray):
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
    coh, pj, lj = _coherence(db, q, idx, transposes, cfg)
    return {"rel": rel, "best_l": best_l, "coh": coh, "pj": pj, "lj": np.broadcast_to(lj[:, None], rel.shape),
            "comp": alpha * rel + beta * coh}


def retrieve(db: RagDatabase, q: Query, k: int = 10, *, alpha: float | None = None,
             beta: float | None = None, transpose: bool = False,
             continuation_seconds: float | None = None,
             lookback_mask: np.ndarray | None = None) -> list[Candidate]:
    with _THREADS.limit(limits=1, user_api="blas"):
        return _retrieve(db, q, k, alpha=alpha, beta=beta, transpose=transpose,
                         continuation_seconds=continuation_seconds, lookback_mask=lookback_mask)


def _retrieve(db: RagDatabase, q: Query, k: int = 10, *, alpha: float | None = None,
              beta: float | None = None, transpose: bool = False,
              continuation_seconds: float | None = None,
              lookback_mask: np.ndarray | None = None) -> list[Candidate]:
    """Top-K candidates (see the module docstring). Vectorised; exact with flat indexes.

    Args:
        k: 1..n; fewer are returned only if the database has fewer non-overlapping segments.
        continuation_seconds: length each segment will be used for (sets the overlap rule and
            excludes chunks that end too soon); default ``segment_seconds``.
        lookback_mask: [n_lookbacks] bool, which of the database's lookbacks may be used
            (default all).

    Raises:
        EnsembleError: bad k/alpha/beta.
    """
    cfg = db.config
    alpha = cfg.alpha if alpha is None else float(alpha)
    beta = cfg.beta if beta is None else float(beta)
    if not 1 <= int(k) <= 100:
        raise EnsembleError(f"k = {k}; allowed: 1..100")
    if not (math.isfinite(alpha) and math.isfinite(beta) and alpha >= 0 and beta >= 0):
        raise EnsembleError(f"alpha = {alpha}, beta = {beta}; allowed: finite and >= 0")
    cont = cfg.segment_seconds if continuation_seconds is None else continuation_seconds
    min_gap = int(round(cont * db.fps))
    transposes = np.arange(-cfg.transpose_semitones, cfg.transpose_semitones + 1) if transpose \
        else np.array([0])
    long_enough = db.chunk_remaining >= min(min_gap, int(round(cfg.min_remaining_seconds * db.fps)))
    mask = np.ones(len(cfg.lookbacks), bool) if lookback_mask is None else np.asarray(lookback_mask, bool)
    if mask.shape != (len(cfg.lookbacks),) or not mask.any():
        raise EnsembleError(f"lookback_mask must select some of {list(cfg.lookbacks)}")

    # faiss pre-selection by relevance; if that cannot be proven exact (flat index), score all
    all_idx = np.flatnonzero(long_enough)
    n_pre = max(256, 64 * k)
    ivf = isinstance(db.indexes[0], faiss.IndexIVFFlat)
    if n_pre * 4 >= db.n_chunks and not ivf:
        return _finish(db, _rank(db, q, all_idx, transposes, cfg, alpha, beta, k, min_gap, mask), transposes)
    Q = _query_matrix(q, cfg, transposes)
    ids, worst = [], []
    for li, index in enumerate(db.indexes):
        if mask[li]:
            scores, found = index.search(np.ascontiguousarray(Q[li]), n_pre)
            ids.append(found.ravel())
            worst.append(float(scores[:, -1].max()))
    idx = np.unique(np.concatenate(ids))
    idx = idx[(idx >= 0)]
    idx = idx[long_enough[idx]]
    picks = _rank(db, q, idx, transposes, cfg, alpha, beta, k, min_gap, mask)
    if ivf:
        return _finish(db, picks, transposes)  # approximate by design above ivf_threshold
    # An unfetched candidate's relevance is below every query's n_pre-th score, so its composite
    # is at most alpha * max(worst) + beta: if the K-th pick beats that, nothing unfetched can
    # enter the Top-K. A fallback pass means the strict pass ran short, which only scoring
    # everything can confirm.
    exact = len(picks) >= k and not any(p[4] for p in picks) and \
        min(p[2] for p in picks) > alpha * max(worst) + beta
    if not exact:
        picks = _rank(db, q, all_idx, transposes, cfg, alpha, beta, k, min_gap, mask)
    return _finish(db, picks, transposes)


def _finish(db: RagDatabase, picks: list, transposes: np.ndarray) -> list[Candidate]:
    return [_candidate(db, r + 1, *p, transposes=transposes) for r, p in enumerate(picks)]


def _rank(db, q, idx, transposes, cfg, alpha, beta, k, min_gap, mask):
    """Strict pass then fallback over candidates ``idx`` -> [(chunk, t_index, composite, scores, fb)]."""
    if len(idx) == 0:
        return []
    s = _score_all(db, q, idx, transposes, cfg, alpha, beta, mask)
    n, nt = s["comp"].shape
    flat_i = np.repeat(np.arange(n), nt)
    flat_t = np.tile(np.arange(nt), n)
    ok_rms = (np.abs(db.rms_mean[idx] - q.rms_mean) <= cfg.rms_tolerance * q.rms_mean) & \
             (np.abs(db.rms_std[idx] - q.rms_std) <= cfg.rms_tolerance * q.rms_std)
    strict = (s["coh"] >= cfg.coherence_floor) & ok_rms[:, None]
    comp = s["comp"].ravel()
    order = np.lexsort((idx[flat_i], -comp))  # ties broken by chunk index
    order = order[strict.ravel()[order]]
    picks = _select(order, idx[flat_i], flat_t, db, k, min_gap, [])
    out = [(c, t, None, False) for c, t in picks]
    if len(out) < k:
        fb = (cfg.fallback_alpha * s["rel"] + cfg.fallback_beta * s["coh"]).ravel()
        order = np.lexsort((idx[flat_i], -fb))
        more = _select(order, idx[flat_i], flat_t, db, k, min_gap, picks)
        out += [(c, t, None, True) for c, t in more]
    res = []
    for c, t, _, fallback in out:
        i = int(np.searchsorted(idx, c))
        comp_v = (cfg.fallback_alpha * s["rel"][i, t] + cfg.fallback_beta * s["coh"][i, t]) if fallback \
            else s["comp"][i, t]
        res.append((c, t, float(comp_v), {key: s[key][i, t] for key in ("rel", "coh", "pj", "lj", "best_l")},
                    fallback))
    return res


def _candidate(db, rank, chunk, t_i, comp, sc, fallback, *, transposes) -> Candidate:
    cfg = db.config
    return Candidate(rank=rank, chunk=int(chunk), track=db.track_names[db.chunk_track[chunk]],
                     start_seconds=round(int(db.chunk_start[chunk]) / db.fps, 2), composite=round(comp, 6),
                     relevance=round(float(sc["rel"]), 6), coherence=round(float(sc["coh"]), 6),
                     lookback=float(cfg.lookbacks[int(sc["best_l"])]), transpose=int(transposes[t_i]),
                     seam_pitch_jump_cents=round(float(sc["pj"]), 2),
                     seam_loudness_jump_db=round(float(sc["lj"]), 3), fallback=bool(fallback))


def reference_retrieve(db: RagDatabase, q: Query, k: int = 10, *, alpha: float | None = None,
                       beta: float | None = None, transpose: bool = False,
                       continuation_seconds: float | None = None,
                       lookback_mask: np.ndarray | None = None) -> list[tuple[int, int, bool]]:
    """The unvectorised oracle: a Python loop scoring every candidate one by one, as the reference
    design did. Returns [(chunk, transpose, fallback)] in rank order. For tests and benchmarks."""
    cfg = db.config
    alpha = cfg.alpha if alpha is None else alpha
    beta = cfg.beta if beta is None else beta
    cont = cfg.segment_seconds if continuation_seconds is None else continuation_seconds
    min_gap = int(round(cont * db.fps))
    ts = range(-cfg.transpose_semitones, cfg.transpose_semitones + 1) if transpose else [0]
    D = q.vectors.shape[1] - 12
    w, lam = cfg.chroma_weight, cfg.context_weight
    a = math.log(2) / cfg.pitch_halflife_semitones
    b = math.log(2) / cfg.loudness_halflife_db
    scored = []
    for c in range(db.n_chunks):
        if db.chunk_remaining[c] < min(min_gap, int(round(cfg.min_remaining_seconds * db.fps))):
            continue
        for t in ts:
            rels = []
            for li in range(len(cfg.lookbacks)):
                if lookback_mask is not None and not lookback_mask[li]:
                    continue
                qe, qc = q.vectors[li, :D], np.roll(q.vectors[li, D:], -t)
                def sim(v, qe=qe, qc=qc):
                    return (1 - w) * float(np.dot(qe, v[:D])) + w * float(np.dot(qc, v[D:]))
                rels.append(lam * sim(db.ctx[li, c]) + (1 - lam) * sim(db.seg[c]))
            rel = max(rels)
            pp = _reference_penalty(float(db.seam_pitch[c]) + 100 * t - q.seam_pitch,
                                    float(db.pre_pitch[c]) + 100 * t - q.seam_pitch, cfg.seam_match)
            lp = _reference_penalty(float(db.seam_loud[c]) - q.seam_loud,
                                    float(db.pre_loud[c]) - q.seam_loud, cfg.loudness_match)
            pt = 0.5 if math.isnan(pp) else math.exp(-a * pp / 100)
            lt = 0.5 if math.isnan(lp) else math.exp(-b * lp)
            coh = 0.5 * (pt + lt)
            rms_ok = abs(db.rms_mean[c] - q.rms_mean) <= cfg.rms_tolerance * q.rms_mean and \
                abs(db.rms_std[c] - q.rms_std) <= cfg.rms_tolerance * q.rms_std
            scored.append((c, t, rel, coh, rms_ok))

    def pick(entries, score, taken):
        out = []
        for c, t, *_ in sorted(entries, key=lambda e: (-score(e), e[0])):
            if any(db.chunk_track[o] == db.chunk_track[c] and
                   abs(int(db.chunk_start[o]) - int(db.chunk_start[c])) < min_gap for o, _ in taken + out):
                continue
            out.append((c, t))
            if len(taken) + len(out) >= k:
                break
        return out

    strict = [e for e in scored if e[3] >= cfg.coherence_floor and e[4]]
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
