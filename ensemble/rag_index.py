"""The approximate index of a large RAG database, and retrieval through it.

Below ``RagConfig.ivf_threshold`` chunks :mod:`ensemble.rag` searches exactly (a flat inner-product
index, with a bound that proves the Top-K equal to scoring everything). Above it, one faiss **IVF
index with an HNSW coarse quantizer** (finding the lists to probe costs O(log nlist)) holds vectors
whose inner product with a query row *estimates the whole composite*, not only relevance -- what
makes pre-selection sound enough to agree with scoring everything.

**Why relevance alone cannot pre-select.** The composite is ``alpha * relevance + beta *
coherence`` over the strict pass (key fit >= 0.85, dynamics within 4 dB, coherence >= 0.7). Measured
on held-out queries at 100k chunks, the exhaustive Top-10 needed the 22k most relevant chunks
(median; 58k at p90) before every pick was in, and at 0.04 s chunk spacing every pick drags in its
overlapping neighbours too.

**The vector** of a chunk (one index for every alpha and beta: they weigh the query row only)::

    x(c) = [ mean_L v_L(c)                    relevance: v_L = context_weight * ctx_L + (1 - it) * seg
           | p(c), p(c) (x) p(c)              key: the centred, unit pitch-class profile and its products
           | h(entry pitch), h(register), h(log2 tempo), h(entry loudness), h(approach loudness)
           | one-hot 1 dB bin of dynamics ]                                  the dynamics filter

*Exact where the composite allows it.* The key fit is the inner product <p(c), r_t> with the query's
rolled unit profile r_t, and its square is <p (x) p, r_t (x) r_t> (the 78 distinct products), so the
estimate's key part ``w * kf - key_weight * (1 - kf)^2`` is exact (tested to 1e-5): it counts the key
fit at its weight in coherence and pushes chunks out of key down without reordering those in key
(a linear penalty did: it ranked in-key chunks by key fit, not by the composite). *Surrogates where it
does not.* Each other coherence term has the form ``2^(-|x - y| / half-life)`` of a circular distance
(pitch classes, tempo octaves; loudness on a 60 dB circle), and a function of ``x - y`` on a circle is
a Fourier series: ``g(x - y) = a0 + sum_k a_k (cos kx cos ky + sin kx sin ky)`` -- the chunk stores
``h(x) = [cos kx, sin kx]_k`` (and a flag where x is unknown), the query row the coefficients times
``[cos ky, sin ky]`` at its own y (the query's last note shifted by -t for key shift t). A seam term
matched ``either`` way (loudness by default: the better of entry and approach) is a max, which no
inner product is: both sides are stored, each weighed ``either_weight``. The dynamics filter is a
penalty on the dynamics bins wholly outside the tolerance. Relevance uses the mean lookback (a max
over lookbacks is no inner product either). Every block is stored scaled by its default weight, so
the IVF's k-means sees the geometry the default composite ranks by.

**Groups.** The index holds one vector per *group* of ``group`` (10) consecutive chunks of a line:
their mean, whose estimate is exactly the mean of theirs (the estimate is linear). At 0.04 s spacing
neighbours are near-duplicates, so a group ranks where its chunks would (measured: the exhaustive
picks sit as deep in groups as in chunks / 10), the index scans a tenth of the vectors, and a fetched
group brings every one of its chunks to the exact stage. Shifts t and t + 12 give the same row, so 12
distinct rows are searched in one call.

**Exact stages on what is fetched** (:func:`retrieve_ann`). Groups where no chunk can be in key or
within the dynamics tolerance are dropped first (exact: a member's key fit is at most the group
mean's plus the group's radius). The remaining chunks get, from the database's arrays, an *upper
bound* of their strict composite: the exact key fit, key margin and dynamics filter, the exact
relevance (max over the masked lookbacks), and an upper bound of coherence (the exact loudness, tempo
and key terms; the pitch and register terms at the octave-free circular distance, which no octave
choice can beat), on the (chunk, shift) pairs that pass the filters only. A chunk whose coherence
bound is below the floor cannot pass the strict pass and is dropped (provably). The best
``candidates`` by that bound are scored by the full composite (:func:`ensemble.rag._rank`, the code
that scores everything); while the K-th pick does not beat the bound of the best unscored chunk, the
scored set doubles, so among the fetched chunks the result is *certified* equal to scoring them all
(``stats["certified"]``). The filters and the bound run compiled, one pass per chunk
(:mod:`ensemble.rag_bound`), with the stretch, aligned start and register the exact scores then read.
What stays approximate is only which chunks the index fetches;
``benchmarks/scale.py`` measures how often the final Top-K equals scoring every chunk.

**Measured recall.** At build time, query rows made from the database's own chunks (a chunk's
context vectors, its approach note, register, tempo, loudness and dynamics as a clip's would be, at
a random key shift) are searched exactly and through the index at nprobe 1, 2, 4, ...; recall@10
(a returned group whose exact inner product ties the 10th counts) is written into the manifest with
the smallest nprobe that reaches ``target_recall`` (0.95), which the index then uses; retrieval
probes ``probe_factor`` times as many lists (it fetches far deeper than ten).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from ensemble import rag, rag_bound
from ensemble.config import config_from_dict
from ensemble.errors import EnsembleError

__all__ = ["AnnConfig", "AnnIndex", "build_ann", "save_ann", "load_ann", "retrieve_ann", "retrieve_exhaustive",
           "index_vectors", "group_vectors", "group_starts", "query_rows", "strict_bound", "possible_chunks",
           "bounded_chunks", "pseudo_query", "recall_at", "LAYOUT", "ANN_FILE"]

CODES = ("auto", "flat", "sq8", "pq")
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LAYOUT = "composite-2"  # what an index vector holds (module docstring); another layout is rebuilt
ANN_FILE = "ann.faiss"
LOUDNESS_CIRCLE_DB = 60.0  # loudness jumps are compared on a circle this long (wider than any jump met)
DYNAMICS_BINS = 16  # one-hot 1 dB bins of a chunk's dynamics (0..15 dB; the last bin holds what is above)
_GRID = 4096  # samples of one period when the Fourier coefficients are computed
_TRIU = np.triu_indices(12)  # the 78 distinct products p_i p_j (i <= j) of a 12-d profile
_NONE = np.zeros(0)  # what bound_chunks reads for values it computes itself
_TRIU_MULT = np.where(_TRIU[0] == _TRIU[1], 1.0, 2.0)  # each off-diagonal product stands for two


@dataclass(frozen=True)
class AnnConfig:
    """How the approximate index is built and searched.

    Attributes:
        codes: ``flat`` (float32), ``sq8`` (8-bit scalar quantizer) or ``pq`` (``pq_m`` bytes a
            vector); ``auto``: flat while the flat codes fit ``memory_mb``, SQ8 while SQ8 fits, else PQ.
        nlist: inverted lists (0: 2 * sqrt(N), ~2200 at 1.2M chunks).
        hnsw_m: neighbours per node of the HNSW coarse quantizer.
        train_per_list: k-means sample size per list (the sample is drawn with ``seed``).
        kmeans_iters: k-means iterations.
        target_recall: recall@10 the chosen nprobe must reach on the build's queries.
        recall_queries: queries that measure it.
        group: consecutive chunks of a line one index vector stands for (their mean vector); a fetched
            group brings all its chunks to the exact stage.
        fetch: groups fetched per key-shift row (12 distinct rows, one search; a second, by relevance
            alone, when the strict pass runs short and the fallback pass ranks).
        probe_factor: retrieval probes this many times the nprobe chosen for recall@10 (a fetch of
            hundreds per row reaches deeper than a Top-10).
        candidates: fetched chunks scored by the full composite first, best upper bound first
            (doubled until the Top-K is certified among the fetched, at most ``max_scored``).
        harmonics: Fourier harmonics per circular coherence term (pitch, register, tempo).
        loudness_harmonics: those of the loudness term (a half-life of 6 dB on a 60 dB circle is sharper).
        either_weight: weight of each side of a seam term matched ``either`` way (module docstring).
        key_weight: weight c of the estimate's key penalty ``-c * (1 - key fit)^2`` (pushes chunks out of
            key down, barely moves those in key).
        dynamics_weight: the estimate's penalty for dynamics outside the tolerance (1 dB bins).
    """

    codes: str = "auto"
    memory_mb: float = 2048.0
    nlist: int = 0
    hnsw_m: int = 32
    pq_m: int = 47
    train_per_list: int = 40
    kmeans_iters: int = 10
    target_recall: float = 0.95
    recall_queries: int = 200
    group: int = 10
    fetch: int = 384
    candidates: int = 256
    max_scored: int = 4096
    probe_factor: int = 2
    harmonics: int = 4
    loudness_harmonics: int = 8
    either_weight: float = 0.75
    key_weight: float = 3.0
    dynamics_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.codes not in CODES:
            raise EnsembleError(f"ann codes {self.codes!r}; allowed: {list(CODES)}")
        if not 0.0 < self.target_recall <= 1.0:
            raise EnsembleError(f"target_recall = {self.target_recall}; allowed: (0, 1]")
        for name in ("hnsw_m", "pq_m", "train_per_list", "kmeans_iters", "recall_queries", "group", "fetch",
                     "candidates", "max_scored", "harmonics", "loudness_harmonics"):
            if int(getattr(self, name)) < 1:
                raise EnsembleError(f"ann {name} = {getattr(self, name)}; allowed: >= 1")
        if not 0.0 < self.either_weight <= 1.0:
            raise EnsembleError(f"ann either_weight = {self.either_weight}; allowed: (0, 1]")
        if self.nlist < 0 or self.memory_mb <= 0 or self.key_weight < 0 or self.dynamics_weight < 0:
            raise EnsembleError(f"ann nlist = {self.nlist}, memory_mb = {self.memory_mb}, key_weight = "
                                f"{self.key_weight}, dynamics_weight = {self.dynamics_weight}; allowed: nlist >= 0 "
                                "(0 = auto), memory_mb > 0, weights >= 0")

    @classmethod
    def from_dict(cls, d: dict) -> AnnConfig:
        return config_from_dict(cls, d)


@dataclass
class AnnIndex:
    """A database's approximate index (one faiss IVF index) and how it was chosen."""

    index: object
    nprobe: int
    config: AnnConfig
    manifest: dict = field(default_factory=dict)
    starts: np.ndarray | None = None  # [n_groups + 1] first chunk of each group (group_starts), set on first use
    # set with ``starts`` (:func:`_groups`): what the exact filters read, per chunk and per group
    profiles: np.ndarray | None = None  # [N, 12] float32 centred unit pitch-class profiles
    group_profile: np.ndarray | None = None  # [n_groups, 12] their mean per group
    group_radius: np.ndarray | None = None  # [n_groups] max distance of a member's profile from that mean
    group_dynamics: np.ndarray | None = None  # [n_groups, 2] min and max dynamics (dB) of the members
    ctx_norm: np.ndarray | None = None  # [L] the largest context vector norm per lookback (the relevance slack)
    seg_norm: float = 0.0  # the largest segment vector norm

    @property
    def indexes(self) -> list:
        """[the index] (what ``RagDatabase.indexes`` lists)."""
        return [self.index]

    def set_nprobe(self, nprobe: int) -> None:
        _ivf(self.index).nprobe = int(nprobe)
        _set_ef(self.index, nprobe)
        self.nprobe = int(nprobe)


# ----------------------------------------------------------------------------- the vectors

@functools.lru_cache(maxsize=64)  # (the coefficients are read on every query; callers never write them)
def _series(halflife: float, period: float, n: int) -> tuple[float, np.ndarray]:
    """Fourier coefficients (a0, [a_1..a_n]) of g(d) = 2^(-|d| / halflife) on a circle of ``period``
    (d the circular distance): g(x - y) ~ a0 + sum_k a_k cos(2 pi k (x - y) / period)."""
    d = (np.arange(_GRID) / _GRID - 0.5) * period
    g = 2.0 ** (-np.abs(d) / halflife)
    k = np.arange(1, n + 1)
    a = 2.0 * np.mean(g[None, :] * np.cos(2 * np.pi * k[:, None] * d[None, :] / period), axis=1)
    return float(g.mean()), a


def _terms(config: rag.RagConfig, ann: AnnConfig) -> list[tuple[str, str, float, float, int, float]]:
    """(the query value it is compared with, the chunk feature, half-life, period, harmonics, weight) of
    each circular coherence term the vector holds. A seam term matched ``either`` way (the better of
    the entry and the approach) is estimated by both, each with ``either_weight`` (a max is no inner
    product; the sum of the two ranks close to it)."""
    def seam(query: str, mode: str, hl: float, period: float, n: int) -> list:
        sides = {"join": [("entry", 1.0)], "approach": [("approach", 1.0)],
                 "either": [("entry", ann.either_weight), ("approach", ann.either_weight)]}[mode]
        return [(query, f"{side}_{query}", hl, period, n, weight) for side, weight in sides]

    return [*seam("pitch", config.seam_match, 100.0 * config.pitch_halflife_semitones, 1200.0, ann.harmonics),
            ("register", "register", 100.0 * config.register_halflife_semitones, 1200.0, ann.harmonics, 1.0),
            ("tempo", "tempo", config.tempo_halflife_octaves, 1.0, ann.harmonics, 1.0),
            *seam("loudness", config.loudness_match, config.loudness_halflife_db, LOUDNESS_CIRCLE_DB,
                  ann.loudness_harmonics)]


def _harmonics(x: np.ndarray, period: float, n: int) -> np.ndarray:
    """[len(x), 2n + 1]: cos/sin of k * 2 pi x / period, k = 1..n, and a flag 1 where x is NaN (zeros)."""
    x = np.asarray(x, np.float64)
    unknown = ~np.isfinite(x)
    ang = 2 * np.pi * np.outer(np.where(unknown, 0.0, x), np.arange(1, n + 1)) / period
    out = np.concatenate([np.cos(ang), np.sin(ang), unknown[:, None].astype(np.float64)], axis=1)
    out[unknown, :-1] = 0.0
    return out


def _scales(config: rag.RagConfig, ann: AnnConfig, d_rel: int) -> np.ndarray:
    """[d] the weight each stored dimension is scaled by: its weight in the default composite."""
    w = config.beta / 5.0
    out = [np.full(d_rel, config.alpha), np.full(12, w + ann.key_weight), np.full(len(_TRIU_MULT), ann.key_weight)]
    for _, _, hl, period, n, weight in _terms(config, ann):
        a0, a = _series(hl, period, n)
        out += [np.maximum(w * weight * a, 1e-3), np.maximum(w * weight * a, 1e-3),
                [max(w * weight * abs(0.5 - a0), 1e-3)]]
    out.append(np.full(DYNAMICS_BINS, 0.3))  # (one-hot: a moderate scale keeps k-means from splitting on it alone)
    return np.concatenate([np.asarray(x, np.float64) for x in out])


def _centred_profiles(prof: np.ndarray) -> np.ndarray:
    pc = prof - prof.mean(axis=-1, keepdims=True)
    n = np.linalg.norm(pc, axis=-1, keepdims=True)
    return np.where(n > 1e-9, pc / np.maximum(n, 1e-9), 0.0)


def index_vectors(db: rag.RagDatabase, ann: AnnConfig, rows: np.ndarray | None = None) -> np.ndarray:
    """[n, d] float32 stored vectors of chunks ``rows`` (default all; see the module docstring).

    The coherence features are taken at each chunk's stored start and at stretch 1 (the query's
    tempo and beat grid move them a little; the exact stage after the search uses the true ones).
    """
    cfg = db.config
    idx = np.arange(db.n_chunks) if rows is None else np.asarray(rows, np.int64)
    cont = int(round(cfg.segment_seconds * db.fps))
    starts = db.chunk_start[idx].astype(np.float64)
    e_pitch, e_loud, a_pitch, a_loud = rag._entry(db, idx, starts)
    register = rag.window_pitch(db, idx, cont, np.ones(len(idx)), starts)
    tempo = db.tempo_bpm[db.chunk_track[idx]]
    log_tempo = np.where(np.isfinite(tempo) & (tempo > 0), np.log2(np.where(tempo > 0, tempo, 1.0)), np.nan)
    dyn_bin = np.clip(np.nan_to_num(db.dynamics[idx].astype(np.float64)), 0, DYNAMICS_BINS - 1e-6).astype(np.int64)
    dyn = np.zeros((len(idx), DYNAMICS_BINS))
    dyn[np.arange(len(idx)), dyn_bin] = 1.0
    rel = np.mean([cfg.context_weight * db.ctx[li, idx].astype(np.float64) for li in range(len(cfg.lookbacks))],
                  axis=0) + (1 - cfg.context_weight) * db.seg[idx].astype(np.float64)
    pcn = _centred_profiles(db.seg[idx, -12:].astype(np.float64))
    features = {"entry_pitch": e_pitch, "approach_pitch": a_pitch, "register": register, "tempo": log_tempo,
                "entry_loudness": e_loud, "approach_loudness": a_loud}
    blocks = [rel, pcn, pcn[:, _TRIU[0]] * pcn[:, _TRIU[1]],
              *[_harmonics(features[src], period, n) for _, src, _, period, n, _ in _terms(cfg, ann)], dyn]
    x = np.concatenate(blocks, axis=1)
    return np.ascontiguousarray(x * _scales(cfg, ann, rel.shape[1])[None, :], np.float32)


def group_starts(chunk_track: np.ndarray, group: int) -> np.ndarray:
    """[n_groups + 1] index of the first chunk of each group and the number of chunks last: a group is
    up to ``group`` consecutive chunks of one line (chunks are stored in line order).

    Raises:
        EnsembleError: chunks not in line order, or group < 1.
    """
    track = np.asarray(chunk_track)
    if int(group) < 1:
        raise EnsembleError(f"ann group = {group}; allowed: >= 1")
    if len(track) and np.any(np.diff(track) < 0):
        raise EnsembleError("the database's chunks are not in line order: rebuild it")
    new_line = np.r_[True, track[1:] != track[:-1]] if len(track) else np.zeros(0, bool)
    line_first = np.flatnonzero(new_line)
    local = np.arange(len(track)) - line_first[np.cumsum(new_line) - 1]
    return np.r_[np.flatnonzero(local % int(group) == 0), len(track)].astype(np.int64)


def group_members(starts: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """[n] every chunk of groups ``groups`` (ascending when the groups are), from :func:`group_starts`."""
    g = np.asarray(groups, np.int64)
    first, lens = starts[g], starts[g + 1] - starts[g]
    before = np.cumsum(lens) - lens  # where each group's members begin in the output
    return np.repeat(first - before, lens) + np.arange(int(lens.sum()))


def group_vectors(db: rag.RagDatabase, ann: AnnConfig, *, block: int = 1 << 17) -> np.ndarray:
    """[n_groups, d] float32: the mean of each group's :func:`index_vectors`. The estimate is linear
    in the vector, so a group's estimate is exactly the mean of its chunks' estimates.

    Computed ``block`` chunks at a time (whole groups), so a million chunks never hold their float64
    vectors all at once."""
    starts = group_starts(db.chunk_track, ann.group)
    n_groups = len(starts) - 1
    out = None
    g0 = 0
    while g0 < n_groups:
        g1 = int(np.searchsorted(starts, starts[g0] + block, side="right")) - 1
        g1 = min(max(g1, g0 + 1), n_groups)
        vecs = index_vectors(db, ann, np.arange(starts[g0], starts[g1]))
        sums = np.add.reduceat(vecs.astype(np.float64), starts[g0:g1] - starts[g0], axis=0)
        if out is None:
            out = np.empty((n_groups, vecs.shape[1]), np.float32)
        out[g0:g1] = sums / np.diff(starts[g0:g1 + 1])[:, None]
        g0 = g1
    return np.ascontiguousarray(out)


def query_rows(db: rag.RagDatabase, q: rag.Query, transposes: np.ndarray, *, alpha: float, beta: float,
               mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Query rows [n_t, d] float32 and per-row constants [n_t]: <row_t, x(c)> + const_t estimates
    the strict composite of chunk c at key shift t (alpha and beta weigh the row only)."""
    cfg, ann = db.config, db.ann.config if db.ann is not None else AnnConfig()
    mask = np.ones(len(cfg.lookbacks), bool) if mask is None else np.asarray(mask, bool)
    D = q.vectors.shape[1] - 12
    wc = np.float64(cfg.chroma_weight)
    w = beta / 5.0
    n_t = len(transposes)
    vq = q.vectors[mask].astype(np.float64)  # [n_masked, D + 12]: relevance of the mean vector against
    rel = np.empty((n_t, D + 12))  # the mean query part
    rel[:, :D] = (1 - wc) * vq[:, :D].sum(axis=0)
    rel[:, D:] = wc * _rolled(vq[:, D:].sum(axis=0), transposes)
    rel *= alpha / mask.sum()
    qp = _centred_profiles(np.asarray(q.profile, np.float64))
    r = _rolled(qp, transposes)  # [n_t, 12]
    # w * kf - c * (1 - kf)^2 = (w + 2c) kf - c kf^2 - c, kf^2 = <p (x) p, r (x) r> (upper triangle)
    c = ann.key_weight
    key = [r * (w + 2 * c), -c * r[:, _TRIU[0]] * r[:, _TRIU[1]] * _TRIU_MULT[None, :]]
    const = np.full(n_t, -c)
    blocks = [rel, *key]
    shift = 100.0 * np.asarray(transposes, np.float64)
    ys = {"pitch": q.seam_pitch - shift, "register": q.register_pitch - shift,
          "tempo": np.full(n_t, math.log2(q.tempo_bpm) if math.isfinite(q.tempo_bpm) and q.tempo_bpm > 0
                           else np.nan),
          "loudness": np.full(n_t, q.seam_loud)}
    for name, _, hl, period, n, weight in _terms(cfg, ann):
        a0, a = _series(hl, period, n)
        y = np.asarray(ys[name], np.float64)
        if np.all(np.isfinite(y)):
            ang = 2 * np.pi * np.outer(y, np.arange(1, n + 1)) / period
            ww = w * weight
            blocks += [ww * a * np.cos(ang), ww * a * np.sin(ang), np.full((n_t, 1), ww * (0.5 - a0))]
            const += ww * a0
        else:  # the query has no value: the term is 0.5 for every chunk
            blocks += [np.zeros((n_t, 2 * n + 1))]
            const += w * weight * 0.5
    pen = np.zeros(DYNAMICS_BINS)
    if math.isfinite(q.dynamics):  # -dynamics_weight on the 1 dB bins wholly outside the tolerance
        lo = np.arange(DYNAMICS_BINS, dtype=np.float64)
        hi = np.where(lo == DYNAMICS_BINS - 1, np.inf, lo + 1.0)  # the last bin holds everything above
        tol = cfg.dynamics_tolerance_db
        pen[(hi < q.dynamics - tol) | (lo > q.dynamics + tol)] = -ann.dynamics_weight
    blocks.append(np.tile(pen, (n_t, 1)))
    row = np.concatenate(blocks, axis=1) / _scales(cfg, ann, D + 12)[None, :]
    return np.ascontiguousarray(row, np.float32), const


def _ivf(index):
    return faiss.extract_index_ivf(index)


def _set_ef(index, nprobe: int) -> None:
    quant = faiss.downcast_index(_ivf(index).quantizer)
    if isinstance(quant, faiss.IndexHNSW):
        quant.hnsw.efSearch = max(64, 2 * int(nprobe))


def _codes(ann: AnnConfig, n: int, d: int) -> str:
    if ann.codes != "auto":
        return ann.codes
    if 4 * d * n / 2**20 <= ann.memory_mb:
        return "flat"
    if d * n / 2**20 <= ann.memory_mb:
        return "sq8"
    return "pq"


def _new_index(d: int, nlist: int, codes: str, ann: AnnConfig):
    quant = faiss.IndexHNSWFlat(d, ann.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    if codes == "flat":
        index = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
    elif codes == "sq8":
        index = faiss.IndexIVFScalarQuantizer(quant, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
    else:
        if d % ann.pq_m:
            raise EnsembleError(f"ann pq_m = {ann.pq_m} must divide the vector width {d}")
        index = faiss.IndexIVFPQ(quant, d, nlist, ann.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = ann.kmeans_iters
    index.cp.seed = ann.seed
    return index  # (faiss's Python wrapper keeps ``quant`` alive as long as ``index``)


def recall_at(found: np.ndarray, vecs: np.ndarray, queries: np.ndarray, exact_scores: np.ndarray,
              k: int = 10) -> float:
    """Mean recall@k of ``found`` [nq, >= k] ids against the exact k-th score per query
    ([nq, k] exact scores, descending): a found id whose exact inner product is >= the exact k-th
    (within 1e-6) counts, so ties at the k-th place do not count as misses."""
    hits = 0
    for i in range(len(queries)):
        ids = found[i, :k]
        ids = ids[ids >= 0]
        true = vecs[ids] @ queries[i]
        hits += min(k, int(np.sum(true >= exact_scores[i, k - 1] - 1e-6)))
    return hits / (k * len(queries))


def pseudo_query(db: rag.RagDatabase, chunk: int) -> rag.Query:
    """A query made from a chunk of the database as a clip ending at its start would be: its
    context vectors, the note and loudness it is approached by, its line's tempo, its register and
    dynamics, its segment's pitch-class profile (the recall measurement's queries)."""
    idx = np.array([chunk])
    _, _, a_pitch, a_loud = rag._entry(db, idx, db.chunk_start[idx].astype(np.float64))
    cont = int(round(db.config.segment_seconds * db.fps))
    reg = rag.window_pitch(db, idx, cont, np.ones(1), db.chunk_start[idx].astype(np.float64))
    return rag.Query(vectors=db.ctx[:, chunk].astype(np.float32), lookbacks_used=tuple(db.config.lookbacks),
                     seam_pitch=float(a_pitch[0]), seam_loud=float(a_loud[0]), level=float(db.level[chunk]),
                     dynamics=float(db.dynamics[chunk]), profile=db.seg[chunk, -12:].astype(np.float64),
                     tempo_bpm=float(db.tempo_bpm[db.chunk_track[chunk]]), seconds=20.0, voiced_fraction=1.0,
                     register_pitch=float(reg[0]))


def build_ann(db: rag.RagDatabase, ann: AnnConfig = AnnConfig(), *, log=None) -> tuple[AnnIndex, dict]:
    """Train and fill the IVF index, measure recall@10 against exact search and pick nprobe.

    Args:
        db: the database (its arrays; its own index is not used).

    Returns:
        (the index, its manifest section: layout, config, codes, nlist, recall@10 per nprobe, the
        chosen nprobe and its recall, bytes of codes, seconds).
    """
    t0 = time.perf_counter()
    cfg = db.config
    vecs = group_vectors(db, ann)  # one vector per group of ``ann.group`` chunks
    n = len(vecs)
    nlist = ann.nlist or max(16, int(2 * math.sqrt(n)))
    nlist = min(nlist, max(1, n // 39))
    d = vecs.shape[1]
    codes = _codes(ann, n, d)
    rng = np.random.default_rng(ann.seed)
    train_ids = np.sort(rng.choice(n, min(n, ann.train_per_list * nlist), replace=False))
    index = _new_index(d, nlist, codes, ann)
    clustering = faiss.IndexFlatIP(d)  # k-means against a flat index; the centroids then go into the HNSW graph
    index.clustering_index = clustering
    index.train(vecs[train_ids])
    index.clustering_index = None
    index.add(vecs)
    out = AnnIndex(index, 1, ann)
    out.starts = group_starts(db.chunk_track, ann.group)
    # queries: chunks as a clip ending at their start would ask, at a random key shift
    has_ctx = np.flatnonzero(np.abs(db.ctx[0, :, 0]) + np.abs(db.ctx[0, :, 1]) > 0)
    qs = rng.choice(has_ctx if len(has_ctx) else np.arange(db.n_chunks), min(ann.recall_queries, db.n_chunks),
                    replace=False)
    ts = rng.integers(-cfg.transpose_semitones, cfg.transpose_semitones + 1, len(qs))
    db_ann, db.ann = db.ann, out  # query_rows reads the index's config
    try:
        queries = np.concatenate([query_rows(db, pseudo_query(db, int(i)), np.array([t]), alpha=cfg.alpha,
                                             beta=cfg.beta)[0] for i, t in zip(qs, ts, strict=True)])
    finally:
        db.ann = db_ann
    flat = faiss.IndexFlatIP(d)
    flat.add(vecs)
    exact_scores, _ = flat.search(queries, 10)
    del flat
    curve = {}
    for nprobe in NPROBES:
        if nprobe > nlist:
            break
        out.set_nprobe(nprobe)
        _, found = index.search(queries, 10)
        curve[nprobe] = round(recall_at(found, vecs, queries, exact_scores), 4)
        if curve[nprobe] >= 0.999:
            break
    if log:
        log(f"recall@10 by nprobe {curve}")
    nprobe = min((p for p, r in curve.items() if r >= ann.target_recall), default=max(curve))
    out.set_nprobe(nprobe)
    recall = curve[nprobe]
    section = {"layout": LAYOUT, "kind": f"IVF{nlist}_HNSW{ann.hnsw_m},{codes}", "codes": codes, "nlist": nlist,
               "dims": d, "groups": int(n), "chunks": int(db.n_chunks), "config": asdict(ann), "nprobe": nprobe,
               "recall_at_10": {"value": recall, "queries": int(len(qs)),
                                "how": "query rows made from the database's own chunks at random key shifts "
                                       "(pseudo_query), exact inner-product search over the same (group) vectors "
                                       "as the reference; a tie at the 10th place counts",
                                "by_nprobe": {str(k): v for k, v in curve.items()}},
               "reached_target": bool(recall >= ann.target_recall),
               "code_bytes": int(_ivf(index).ntotal * _ivf(index).code_size),
               "build_seconds": round(time.perf_counter() - t0, 1)}
    out.manifest = section
    return out, section


def save_ann(ann: AnnIndex, folder: Path) -> list[str]:
    """Write ``ann.faiss`` into ``folder``; returns the file names."""
    faiss.write_index(ann.index, str(Path(folder) / ANN_FILE))
    return [ANN_FILE]


def load_ann(root: Path, section: dict, *, mmap: bool = False) -> AnnIndex:
    """The saved index of a database folder (``manifest["ann"]``).

    Args:
        mmap: memory-map the inverted lists instead of reading them (many processes, one copy).

    Raises:
        EnsembleError: an index of another layout (rebuild it), a file missing or unreadable.
    """
    if section.get("layout") != LAYOUT:
        raise EnsembleError(f"the approximate index of RAG database {str(root)!r} has layout "
                            f"{section.get('layout', 'relevance-only')!r}; this version reads {LAYOUT!r}: rebuild "
                            "it with ensemble.jobs.index.rebuild_ann (the arrays are kept)")
    path = Path(root) / ANN_FILE
    if not path.is_file():
        raise EnsembleError(f"RAG database index file {str(path)!r} is missing; rebuild the database")
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0)
    except RuntimeError as exc:
        raise EnsembleError(f"RAG database index file {str(path)!r} cannot be read ({exc})") from None
    out = AnnIndex(index, int(section["nprobe"]), AnnConfig.from_dict(section["config"]), section)
    out.set_nprobe(out.nprobe)
    return out


# ----------------------------------------------------------------------------- retrieval

def _circular(cents: np.ndarray) -> np.ndarray:
    """|cents| folded to the nearest octave: what no whole-octave shift can go below (NaN kept)."""
    return np.abs(cents - 1200.0 * np.round(cents / 1200.0))


def _rolled(x: np.ndarray, transposes: np.ndarray) -> np.ndarray:
    """[n_t, 12] the profile ``x`` rolled by -t for each t (np.roll(x, -t), gathered at once)."""
    return x[(np.arange(12)[None, :] + np.asarray(transposes, np.int64)[:, None]) % 12]


def _stage_args(db: rag.RagDatabase, q: rag.Query, transposes: np.ndarray, *, alpha: float, beta: float,
                mask: np.ndarray) -> tuple[tuple, tuple]:
    """The arguments :func:`ensemble.rag_bound.bound_chunks` reads after the chunks and their
    given values: (database arrays, query and configuration)."""
    cfg, ann = db.config, db.ann
    _groups(db)
    qp = _centred_profiles(np.asarray(q.profile, np.float64))
    rolled = _rolled(qp, transposes) if np.linalg.norm(qp) > 1e-9 else np.zeros((len(transposes), 12))
    Q = rag._query_matrix(q, cfg, transposes)  # [L, n_t, 2d] float32, as the exact scores use it
    d = db.seg.shape[1]
    lookbacks = np.flatnonzero(mask).astype(np.int64)
    # gamma_n * sum |x_i y_i| <= 1e-5 * (|ctx| |Q_ctx| + |seg| |Q_seg|) (module docstring of rag_bound)
    q_ctx = np.linalg.norm(Q[:, :, :d].astype(np.float64), axis=2)[lookbacks]  # [n_l, n_t]
    q_seg = np.linalg.norm(Q[:, :, d:].astype(np.float64), axis=2)[lookbacks]
    rel_slack = 1e-5 * (ann.ctx_norm[lookbacks, None] * q_ctx + ann.seg_norm * q_seg).max(axis=0)
    fps = db.fps
    arrays = (ann.profiles, db.dynamics, db.chunk_track, db.chunk_start, db.track_offsets, db.tempo_bpm,
              rag.track_stretch(db, q), db.cum_voiced, db.cum_cents, db.cum_loud, db.level, db.seg, db.ctx, fps,
              int(round(cfg.seam_seconds * fps)), max(1, int(round(cfg.end_voiced_seconds * fps))))
    ln2 = math.log(2)
    # the leading columns of each half the key shift leaves alone (the embedding; the chroma is rolled)
    same = np.all(Q == Q[:, :1], axis=(0, 1))  # [2d]
    shared = int(np.argmin(np.r_[same[:d] & same[d:], False]))
    rest = (rolled, np.asarray(transposes, np.float64), Q, shared, lookbacks, rel_slack, float(q.dynamics),
            float(q.tempo_bpm), float(q.beat_s), float(q.beat_phase_s),
            float(q.seam_pitch), float(q.seam_loud), float(q.register_pitch),
            cfg.key_margin, cfg.key_floor, cfg.dynamics_tolerance_db, cfg.coherence_floor,
            ln2 / cfg.pitch_halflife_semitones / 100.0, ln2 / cfg.register_halflife_semitones / 100.0,
            ln2 / cfg.loudness_halflife_db, ln2 / cfg.tempo_halflife_octaves,
            rag_bound.MODES[cfg.seam_match], rag_bound.MODES[cfg.loudness_match], float(alpha), float(beta))
    return arrays, rest


def strict_bound(db: rag.RagDatabase, q: rag.Query, idx: np.ndarray, transposes: np.ndarray, *, alpha: float,
                 beta: float, mask: np.ndarray, stretch: np.ndarray, starts: np.ndarray,
                 register: np.ndarray) -> np.ndarray:
    """[n] an upper bound of each chunk's best strict-pass composite (-inf: cannot pass it).

    Exact: key fit, key margin, dynamics filter, relevance (max over the masked lookbacks), and the
    loudness, tempo and key terms of coherence. Bounded: the pitch and register terms, at the
    circular (octave-free) distance -- the octave ``ensemble.rag`` picks is a whole octave, so its
    distance is never smaller. A chunk whose coherence bound is below the floor cannot pass.
    Computed by :func:`ensemble.rag_bound.bound_chunks` (the code retrieval runs).

    Args:
        idx: [n] playable chunks; stretch, starts, register: [n] per chunk, as
            :func:`ensemble.rag._score_all` receives them.
    """
    arrays, rest = _stage_args(db, q, transposes, alpha=alpha, beta=beta, mask=mask)
    idx = np.asarray(idx, np.int64)
    every_shift = np.full(len(idx), -1, np.int64)
    bound, *_ = rag_bound.bound_chunks(idx, every_shift, True, np.asarray(stretch, np.float64),
                                       np.asarray(starts, np.float64), np.asarray(register, np.float64), True,
                                       0, *arrays, *rest)
    return bound


def _groups(db: rag.RagDatabase) -> np.ndarray:
    """The loaded index's group starts and per-group filter arrays (computed once from the database)."""
    ann = db.ann
    if ann.starts is None:
        starts = group_starts(db.chunk_track, ann.config.group)
        if len(starts) - 1 != _ivf(ann.index).ntotal:
            raise EnsembleError(f"the approximate index of RAG database {str(db.root)!r} holds "
                                f"{_ivf(ann.index).ntotal} vectors for {len(starts) - 1} groups of chunks: "
                                "rebuild it with ensemble.jobs.index.rebuild_ann")
        ann.starts = starts
    if ann.profiles is None:
        prof = _centred_profiles(db.seg[:, -12:].astype(np.float64))
        first, size = ann.starts[:-1], np.diff(ann.starts)
        mean = np.add.reduceat(prof, first, axis=0) / size[:, None]
        gap = np.linalg.norm(prof - np.repeat(mean, size, axis=0), axis=1)
        dyn = np.where(np.isnan(db.dynamics), np.inf, db.dynamics)  # (NaN fails every dynamics test)
        ann.group_radius = np.maximum.reduceat(gap, first) + 1e-6
        ann.group_dynamics = np.stack([np.minimum.reduceat(dyn, first),
                                       np.maximum.reduceat(np.where(np.isinf(dyn), -np.inf, dyn), first)], axis=1)
        ann.ctx_norm = np.array([np.linalg.norm(db.ctx[li], axis=1).max(initial=0.0) for li in range(len(db.ctx))],
                                np.float64)
        ann.seg_norm = float(np.linalg.norm(db.seg, axis=1).max(initial=0.0))
        ann.group_profile, ann.profiles = mean, np.ascontiguousarray(prof, np.float32)
    return ann.starts


def possible_chunks(db: rag.RagDatabase, q: rag.Query, groups: np.ndarray,
                    transposes: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The chunks of groups ``groups`` (ascending ids) of which some chunk can pass the key floor and
    the dynamics filter, ascending, the key shifts at which they can (bit t of an int64) and how many
    chunks the groups hold (:func:`ensemble.rag_bound.possible_members`: exact)."""
    ann, cfg = db.ann, db.config
    starts = _groups(db)
    qp = _centred_profiles(np.asarray(q.profile, np.float64))
    if np.linalg.norm(qp) <= 1e-9:
        groups = groups[:0]
    return rag_bound.possible_members(np.asarray(groups, np.int64), starts, ann.group_profile, ann.group_radius,
                                      ann.group_dynamics, _rolled(qp, transposes), cfg.key_floor,
                                      float(q.dynamics), cfg.dynamics_tolerance_db)


def bounded_chunks(db: rag.RagDatabase, q: rag.Query, groups: np.ndarray, transposes: np.ndarray, *,
                   alpha: float, beta: float, mask: np.ndarray, conform: bool,
                   cont_frames: int) -> tuple[np.ndarray, ...]:
    """The chunks of groups ``groups`` (ascending ids) that can pass the strict pass, with what the
    exact scores read and their bound (:func:`possible_chunks`, then
    :func:`ensemble.rag_bound.bound_chunks`).

    Returns:
        (idx [n] ascending, stretch [n], aligned start frames [n], register [n] cents, bound [n],
        chunks the groups hold, chunks of the groups :func:`possible_chunks` kept).
    """
    idx, shifts, n_fetched = possible_chunks(db, q, groups, transposes)
    arrays, rest = _stage_args(db, q, transposes, alpha=alpha, beta=beta, mask=mask)
    bound, stretch, starts, register = rag_bound.bound_chunks(idx, shifts, False, _NONE, _NONE, _NONE,
                                                              bool(conform), int(cont_frames), *arrays, *rest)
    keep = np.flatnonzero(np.isfinite(bound))
    return idx[keep], stretch[keep], starts[keep], register[keep], bound[keep], int(n_fetched), len(idx)


def retrieve_ann(db: rag.RagDatabase, q: rag.Query, k: int, *, alpha: float, beta: float,
                 transposes: np.ndarray, cont_frames: int, mask: np.ndarray, conform: bool,
                 fetch: int | None = None, candidates: int | None = None,
                 stats: dict | None = None) -> list[rag.Candidate]:
    """Top-K through the approximate index: fetch, bound, score exactly, rank (module docstring).

    Args:
        db: a database with ``db.ann`` set; q, k, alpha, beta, transposes, mask, conform: as
            :func:`ensemble.rag.retrieve` has checked them.
        cont_frames: frames each continuation plays for (the overlap rule).
        fetch: groups fetched per distinct key-shift row (default ``db.ann.config.fetch``); every chunk
            of a fetched group is fetched.
        candidates: chunks scored first (default ``db.ann.config.candidates``).
        stats: filled with ``fetched`` (distinct chunks of the groups the index returned), ``examined``
            (those of groups where some chunk can be in key and within the dynamics tolerance), ``possible`` (those that
            can pass the strict pass), ``scored`` (scored by the full composite), ``certified``
            (the Top-K provably equals scoring every fetched chunk), ``search_ms`` and ``bound_ms``.
    """
    cfg, ann = db.config, db.ann.config
    n_fetch = int(fetch or ann.fetch)
    t0 = time.perf_counter()
    starts_g = _groups(db)
    rows, _ = query_rows(db, q, transposes, alpha=alpha, beta=beta, mask=mask)
    # shifts t and t + 12 give the same row (every term is periodic in the octave): search each once
    _, distinct = np.unique(np.mod(transposes, 12), return_index=True)
    rows = np.ascontiguousarray(rows[np.sort(distinct)])
    nprobe = min(ann.probe_factor * db.ann.nprobe, _ivf(db.ann.index).nlist)
    params = faiss.SearchParametersIVF(nprobe=nprobe,
                                       quantizer_params=faiss.SearchParametersHNSW(efSearch=max(64, 2 * nprobe)))
    _, found = db.ann.index.search(rows, n_fetch, params=params)
    groups = np.unique(found)
    groups = groups[groups >= 0]
    t1 = time.perf_counter()
    idx, stretch, starts, register, bound, n_fetched, n_examined = bounded_chunks(
        db, q, groups, transposes, alpha=alpha, beta=beta, mask=mask, conform=conform, cont_frames=cont_frames)
    # best bound first; at most max_scored are ever scored, so only the best max_scored + 1 are sorted
    order = np.arange(len(bound))
    if len(bound) > ann.max_scored + 1:
        order = np.argpartition(-bound, ann.max_scored)[:ann.max_scored + 1]
    order = order[np.argsort(-bound[order], kind="stable")]
    t2 = time.perf_counter()
    # _rank reads these by chunk index: full-length carriers, filled only where fetched (np.empty
    # of a large array costs no time: its pages are touched only where written)
    extra = []
    for values in (stretch, starts, register):
        full = np.empty(db.n_chunks)
        full[idx] = values
        extra.append(full)
    extra = tuple(extra)
    n_score = min(int(candidates or ann.candidates), len(order))
    while True:
        take = np.sort(idx[order[:n_score]])
        picks = rag._rank(db, q, take, transposes, cfg, alpha, beta, k, cont_frames, mask, extra)
        rest = float(bound[order[n_score]]) if n_score < len(order) else -np.inf
        certified = len(picks) >= k and not any(p[4] for p in picks) and min(p[2] for p in picks) > rest
        if certified or n_score >= min(len(order), ann.max_scored):
            break
        n_score = min(2 * n_score, len(order), ann.max_scored)
    if len(picks) < k or any(p[4] for p in picks):
        # the strict pass ran short among the fetched: the fallback pass (mostly relevance, no filters)
        # ranks every fetched chunk and those a relevance-only search adds
        rel_rows, _ = query_rows(db, q, transposes, alpha=1.0, beta=0.0, mask=mask)
        rel_rows = np.ascontiguousarray(rel_rows[np.sort(distinct)])
        rel_rows[:, q.vectors.shape[1]:] = 0.0  # the relevance block only
        _, more = db.ann.index.search(rel_rows, n_fetch, params=params)
        more = np.unique(more)
        idx = np.union1d(group_members(starts_g, groups), group_members(starts_g, more[more >= 0])).astype(np.int64)
        stretch = rag._stretch(db, q, idx) if conform else np.ones(len(idx))
        starts = rag.aligned_starts(db, q, idx, stretch, cont_frames) if conform \
            else db.chunk_start[idx].astype(np.float64)
        ok = rag._playable(db, idx, cont_frames, stretch, starts)
        extra = []
        for values in (stretch, starts, rag.window_pitch(db, idx, cont_frames, stretch, starts)):
            full = np.empty(db.n_chunks)
            full[idx] = values
            extra.append(full)
        picks = rag._rank(db, q, idx[ok], transposes, cfg, alpha, beta, k, cont_frames, mask, tuple(extra))
        n_score = int(ok.sum())
    if stats is not None:
        stats.update(fetched=n_fetched, examined=n_examined, possible=int(len(bound)), scored=int(n_score),
                     certified=bool(certified),
                     search_ms=round((t1 - t0) * 1000, 3), bound_ms=round((t2 - t1) * 1000, 3))
    return rag._finish(db, picks, transposes, conform)


def retrieve_exhaustive(db: rag.RagDatabase, q: rag.Query, k: int, *, alpha: float | None = None,
                        beta: float | None = None, transpose: bool = True) -> list[rag.Candidate]:
    """Top-K by scoring every chunk (no index at all): the reference the IVF path is measured against.

    The same scoring and selection code as :func:`ensemble.rag.retrieve` (``_rank`` over every
    playable chunk), whatever index the database holds; default continuation length.
    """
    cfg = db.config
    alpha = cfg.alpha if alpha is None else float(alpha)
    beta = cfg.beta if beta is None else float(beta)
    cont_frames = int(round(cfg.segment_seconds * db.fps))
    transposes = np.arange(-cfg.transpose_semitones, cfg.transpose_semitones + 1) if transpose \
        else np.array([0])
    mask = np.ones(len(cfg.lookbacks), bool)
    every = np.arange(db.n_chunks)
    with rag._THREADS.limit(limits=1, user_api="blas"):
        stretch = rag._stretch(db, q, every)
        starts = rag.aligned_starts(db, q, every, stretch, cont_frames)
        playable = rag._playable(db, every, cont_frames, stretch, starts)
        extra = (stretch, starts, rag.window_pitch(db, every, cont_frames, stretch, starts))
        picks = rag._rank(db, q, np.flatnonzero(playable), transposes, cfg, alpha, beta, k, cont_frames, mask,
                          extra)
    return rag._finish(db, picks, transposes, True)
