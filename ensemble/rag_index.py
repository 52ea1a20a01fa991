"""The approximate index of a large RAG database, and retrieval through it.

Below ``RagConfig.ivf_threshold`` chunks :mod:`ensemble.rag` searches exactly (a flat inner-product
index, with a bound that proves the Top-K equal to scoring everything). Above it, one faiss **IVF
index with an HNSW coarse quantizer** (finding the lists to probe costs O(log nlist)) holds one
vector per chunk whose inner product with a query row *estimates the whole composite*, not only
relevance -- what makes pre-selection sound enough to agree with scoring everything.

**Why relevance alone cannot pre-select.** The composite is ``alpha * relevance + beta *
coherence`` over the strict pass (key fit >= 0.85, dynamics within 4 dB, coherence >= 0.7). Measured
on held-out queries at 100k chunks, the exhaustive Top-10 needed the 22k most relevant chunks
(median; 58k at p90) before every pick was in, and at 0.04 s chunk spacing every pick drags in its
overlapping neighbours too. Ordered by the estimate below, every pick was within the first ~1,350
chunks of its key-shift row (100k chunks, exact search), and the exact strict-pass bounds then
leave a few thousand of the fetched chunks to consider (``benchmarks/results/scale.json``).

**The vector** (one index for every alpha and beta: they weigh the query row only)::

    x(c) = [ mean_L v_L(c)                    relevance: v_L = context_weight * ctx_L + (1 - it) * seg
           | pcn(c)                           key fit: the centred, unit pitch-class profile
           | h(entry pitch), h(register), h(log2 tempo), h(entry loudness)   coherence terms
           | one-hot 1 dB bin of dynamics ]                                  the dynamics filter

Each coherence term has the form ``2^(-|x - y| / half-life)`` of a circular distance (pitch classes,
tempo octaves; loudness on a 60 dB circle), and a function of ``x - y`` on a circle is a Fourier
series: ``g(x - y) = a0 + sum_k a_k (cos kx cos ky + sin kx sin ky)`` -- the chunk stores
``h(x) = [cos kx, sin kx]_k`` (and a flag where x is unknown), the query row the coefficients times
``[cos ky, sin ky]`` at its own y (the query's last note shifted by -t for key shift t). The key fit
is linear in the profile (Pearson correlation of unit centred profiles), weighted beyond its share
of coherence (``key_weight``) to push chunks out of key down, and the dynamics filter is a penalty
on the dynamics bins wholly outside the tolerance (none inside: it does not distort the order).
Every block is stored scaled by its default weight, so the IVF's k-means sees the geometry the
default composite ranks by. One row per key shift (13 rows), one search.

**Exact stages on what is fetched** (:func:`retrieve_ann`). The fetched chunks (``fetch`` per row)
get, from the database's arrays, an *upper bound* of their strict composite: the exact key fit,
key margin and dynamics filter, the exact relevance (max over the masked lookbacks), and an upper
bound of coherence (the exact loudness, tempo and key terms; the pitch and register terms at the
octave-free circular distance, which no octave choice can beat). A chunk whose coherence bound is
below the floor cannot pass the strict pass and is dropped (provably). The best ``candidates`` by
that bound are scored by the full composite (:func:`ensemble.rag._rank`, the code that scores
everything); while the K-th pick does not beat the bound of the best unscored chunk, the scored set
doubles, so among the fetched chunks the result is *certified* equal to scoring them all
(``stats["certified"]``). What stays approximate is only which chunks the index fetches;
``benchmarks/scale.py`` measures how often the final Top-K equals scoring every chunk.

**Measured recall.** At build time, query rows made from the database's own chunks (a chunk's
context vectors, its approach note, register, tempo, loudness and dynamics as a clip's would be, at
a random key shift) are searched exactly and through the index at nprobe 1, 2, 4, ...; recall@10
(a returned chunk whose exact inner product ties the 10th counts) is written into the manifest with
the smallest nprobe that reaches ``target_recall`` (0.95), which the index then uses.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from ensemble import rag
from ensemble.config import config_from_dict
from ensemble.errors import EnsembleError

__all__ = ["AnnConfig", "AnnIndex", "build_ann", "save_ann", "load_ann", "retrieve_ann", "retrieve_exhaustive",
           "index_vectors", "query_rows", "strict_bound", "key_filter", "pseudo_query", "recall_at", "LAYOUT",
           "ANN_FILE"]

CODES = ("auto", "flat", "sq8", "pq")
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LAYOUT = "composite-1"  # what an index vector holds (module docstring); another layout is rebuilt
ANN_FILE = "ann.faiss"
LOUDNESS_CIRCLE_DB = 60.0  # loudness jumps are compared on a circle this long (wider than any jump met)
DYNAMICS_BINS = 16  # one-hot 1 dB bins of a chunk's dynamics (0..15 dB; the last bin holds what is above)
_GRID = 4096  # samples of one period when the Fourier coefficients are computed


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
        fetch: chunks fetched per key-shift row (13 rows, one search; a second, by relevance alone,
            when the strict pass runs short and the fallback pass ranks).
        probe_factor: retrieval probes this many times the nprobe chosen for recall@10 (a fetch of
            hundreds per row reaches deeper than a Top-10).
        candidates: fetched chunks scored by the full composite first, best upper bound first
            (doubled until the Top-K is certified among the fetched, at most ``max_scored``).
        harmonics: Fourier harmonics per circular coherence term.
        key_weight: extra weight of the key fit in the estimate (pushes chunks out of key down).
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
    fetch: int = 2048
    candidates: int = 256
    max_scored: int = 4096
    probe_factor: int = 4
    harmonics: int = 4
    key_weight: float = 3.0
    dynamics_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.codes not in CODES:
            raise EnsembleError(f"ann codes {self.codes!r}; allowed: {list(CODES)}")
        if not 0.0 < self.target_recall <= 1.0:
            raise EnsembleError(f"target_recall = {self.target_recall}; allowed: (0, 1]")
        for name in ("hnsw_m", "pq_m", "train_per_list", "kmeans_iters", "recall_queries", "fetch", "candidates",
                     "max_scored", "harmonics"):
            if int(getattr(self, name)) < 1:
                raise EnsembleError(f"ann {name} = {getattr(self, name)}; allowed: >= 1")
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

    @property
    def indexes(self) -> list:
        """[the index] (what ``RagDatabase.indexes`` lists)."""
        return [self.index]

    def set_nprobe(self, nprobe: int) -> None:
        _ivf(self.index).nprobe = int(nprobe)
        _set_ef(self.index, nprobe)
        self.nprobe = int(nprobe)


# ----------------------------------------------------------------------------- the vectors

def _series(halflife: float, period: float, n: int) -> tuple[float, np.ndarray]:
    """Fourier coefficients (a0, [a_1..a_n]) of g(d) = 2^(-|d| / halflife) on a circle of ``period``
    (d the circular distance): g(x - y) ~ a0 + sum_k a_k cos(2 pi k (x - y) / period)."""
    d = (np.arange(_GRID) / _GRID - 0.5) * period
    g = 2.0 ** (-np.abs(d) / halflife)
    k = np.arange(1, n + 1)
    a = 2.0 * np.mean(g[None, :] * np.cos(2 * np.pi * k[:, None] * d[None, :] / period), axis=1)
    return float(g.mean()), a


def _terms(config: rag.RagConfig) -> list[tuple[str, float, float]]:
    """(name, half-life, period) of the circular coherence terms the vector holds."""
    return [("pitch", 100.0 * config.pitch_halflife_semitones, 1200.0),
            ("register", 100.0 * config.register_halflife_semitones, 1200.0),
            ("tempo", config.tempo_halflife_octaves, 1.0),
            ("loudness", config.loudness_halflife_db, LOUDNESS_CIRCLE_DB)]


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
    out = [np.full(d_rel, config.alpha), np.full(12, w + ann.key_weight)]
    for _, hl, period in _terms(config):
        a0, a = _series(hl, period, ann.harmonics)
        out += [np.maximum(w * a, 1e-3), np.maximum(w * a, 1e-3), [max(w * abs(0.5 - a0), 1e-3)]]
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
    e_pitch, e_loud, _, _ = rag._entry(db, idx, starts)
    register = rag.window_pitch(db, idx, cont, np.ones(len(idx)), starts)
    tempo = db.tempo_bpm[db.chunk_track[idx]]
    log_tempo = np.where(np.isfinite(tempo) & (tempo > 0), np.log2(np.where(tempo > 0, tempo, 1.0)), np.nan)
    dyn_bin = np.clip(np.nan_to_num(db.dynamics[idx].astype(np.float64)), 0, DYNAMICS_BINS - 1e-6).astype(np.int64)
    dyn = np.zeros((len(idx), DYNAMICS_BINS))
    dyn[np.arange(len(idx)), dyn_bin] = 1.0
    rel = np.mean([cfg.context_weight * db.ctx[li, idx].astype(np.float64) for li in range(len(cfg.lookbacks))],
                  axis=0) + (1 - cfg.context_weight) * db.seg[idx].astype(np.float64)
    n = ann.harmonics
    blocks = [rel, _centred_profiles(db.seg[idx, -12:].astype(np.float64)),
              _harmonics(e_pitch, 1200.0, n), _harmonics(register, 1200.0, n),
              _harmonics(log_tempo, 1.0, n), _harmonics(e_loud, LOUDNESS_CIRCLE_DB, n),
              dyn]
    x = np.concatenate(blocks, axis=1)
    return np.ascontiguousarray(x * _scales(cfg, ann, rel.shape[1])[None, :], np.float32)


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
    rel = np.zeros((n_t, D + 12))
    for li in np.flatnonzero(mask):  # relevance of the mean vector against the mean query part
        for j, t in enumerate(transposes):
            rel[j, :D] += (1 - wc) * q.vectors[li, :D]
            rel[j, D:] += wc * np.roll(q.vectors[li, D:], -int(t))
    rel *= alpha / mask.sum()
    qp = _centred_profiles(np.asarray(q.profile, np.float64))
    key = np.stack([np.roll(qp, -int(t)) for t in transposes]) * (w + ann.key_weight)
    const = np.full(n_t, -ann.key_weight * cfg.key_floor)
    blocks = [rel, key]
    shift = 100.0 * np.asarray(transposes, np.float64)
    ys = {"pitch": q.seam_pitch - shift, "register": q.register_pitch - shift,
          "tempo": np.full(n_t, math.log2(q.tempo_bpm) if math.isfinite(q.tempo_bpm) and q.tempo_bpm > 0
                           else np.nan),
          "loudness": np.full(n_t, q.seam_loud)}
    k = np.arange(1, ann.harmonics + 1)
    for name, hl, period in _terms(cfg):
        a0, a = _series(hl, period, ann.harmonics)
        y = np.asarray(ys[name], np.float64)
        if np.all(np.isfinite(y)):
            ang = 2 * np.pi * np.outer(y, k) / period
            blocks += [w * a * np.cos(ang), w * a * np.sin(ang), np.full((n_t, 1), w * (0.5 - a0))]
            const += w * a0
        else:  # the query has no value: the term is 0.5 for every chunk
            blocks += [np.zeros((n_t, 2 * ann.harmonics + 1))]
            const += w * 0.5
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
    n = db.n_chunks
    nlist = ann.nlist or max(16, int(2 * math.sqrt(n)))
    nlist = min(nlist, max(1, n // 39))
    vecs = index_vectors(db, ann)
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
    # queries: chunks as a clip ending at their start would ask, at a random key shift
    has_ctx = np.flatnonzero(np.abs(db.ctx[0, :, 0]) + np.abs(db.ctx[0, :, 1]) > 0)
    qs = rng.choice(has_ctx if len(has_ctx) else np.arange(n), min(ann.recall_queries, n), replace=False)
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
               "dims": d, "config": asdict(ann), "nprobe": nprobe,
               "recall_at_10": {"value": recall, "queries": int(len(qs)),
                                "how": "query rows made from the database's own chunks at random key shifts "
                                       "(pseudo_query), exact inner-product search over the same vectors as the "
                                       "reference; a tie at the 10th place counts",
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


def key_filter(db: rag.RagDatabase, q: rag.Query, idx: np.ndarray,
               transposes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheap exact filters of the strict pass: (key fit [n, n_t], ok [n, n_t]) -- ok where the
    key fit is within the key margin of the chunk's best and above the floor, and the dynamics within
    tolerance (1e-6 of slack: the same correlation as :func:`ensemble.rag._key_fit`, summed in
    another order, so ok is a superset)."""
    cfg = db.config
    qp = _centred_profiles(np.asarray(q.profile, np.float64))
    if np.linalg.norm(qp) <= 1e-9:  # no key: every key fit is 0, below the floor
        return np.zeros((len(idx), len(transposes))), np.zeros((len(idx), len(transposes)), bool)
    kf = _centred_profiles(db.seg[idx, -12:].astype(np.float64)) @ \
        np.stack([np.roll(qp, -int(t)) for t in transposes], axis=1)  # [n, n_t]
    ok = (kf >= kf.max(axis=1, keepdims=True) - cfg.key_margin - 1e-6) & (kf >= cfg.key_floor - 1e-6)
    if math.isfinite(q.dynamics):
        ok &= (np.abs(db.dynamics[idx] - q.dynamics) <= cfg.dynamics_tolerance_db)[:, None]
    return kf, ok


def strict_bound(db: rag.RagDatabase, q: rag.Query, idx: np.ndarray, transposes: np.ndarray, *, alpha: float,
                 beta: float, mask: np.ndarray, stretch: np.ndarray, starts: np.ndarray,
                 register: np.ndarray) -> np.ndarray:
    """[n] an upper bound of each chunk's best strict-pass composite (-inf: cannot pass it).

    Exact: key fit, key margin, dynamics filter (:func:`key_filter`), relevance (max over the masked
    lookbacks), and the loudness, tempo and key terms of coherence. Bounded: the pitch and register
    terms, at the circular (octave-free) distance -- the octave ``ensemble.rag`` picks is a whole
    octave, so its distance is never smaller. A chunk whose coherence bound is below the floor
    cannot pass.

    Args:
        stretch, starts, register: [n] per chunk, as :func:`ensemble.rag._score_all` receives them.
    """
    kf, ok = key_filter(db, q, idx, transposes)
    out = np.full(len(idx), -np.inf)
    keep = np.flatnonzero(ok.any(axis=1))
    out[keep] = _coherent_bound(db, q, idx[keep], transposes, kf[keep], ok[keep], alpha=alpha, beta=beta,
                                mask=mask, stretch=stretch[keep], starts=starts[keep], register=register[keep])
    return out


def _coherent_bound(db, q, idx, transposes, kf, ok, *, alpha, beta, mask, stretch, starts, register):
    """:func:`strict_bound` on chunks that passed the cheap filters (``ok`` [n, n_t])."""
    cfg = db.config
    Q = rag._query_matrix(q, cfg, transposes)
    d = db.seg.shape[1]
    seg = db.seg[idx]
    rel = np.full(kf.shape, -np.inf, np.float32)
    for li in np.flatnonzero(mask):
        rel = np.maximum(rel, db.ctx[li, idx] @ Q[li, :, :d].T + seg @ Q[li, :, d:].T)
    e_pitch, e_loud, a_pitch, a_loud = rag._entry(db, idx, starts)
    shift = 100.0 * transposes[None, :]
    pitch_pen = rag._penalties(_circular(e_pitch[:, None] + shift - q.seam_pitch),
                               _circular(a_pitch[:, None] + shift - q.seam_pitch), cfg.seam_match)
    p_term = rag._closeness(pitch_pen, cfg.pitch_halflife_semitones)
    r_term = rag._closeness(_circular(register[:, None] + shift - q.register_pitch), cfg.register_halflife_semitones)
    loud_pen = rag._penalties(e_loud - q.seam_loud, a_loud - q.seam_loud, cfg.loudness_match)
    b = math.log(2) / cfg.loudness_halflife_db
    c = math.log(2) / cfg.tempo_halflife_octaves
    l_term = np.where(np.isnan(loud_pen), 0.5, np.exp(-b * np.nan_to_num(loud_pen)))[:, None]
    known = math.isfinite(q.tempo_bpm) & np.isfinite(db.tempo_bpm[db.chunk_track[idx]])
    t_term = np.where(known, np.exp(-c * np.abs(np.log2(stretch))), 0.5)[:, None]
    coh = (p_term + l_term + t_term + np.clip(kf + 1e-6, 0.0, 1.0) + r_term) / 5.0
    ok &= coh >= cfg.coherence_floor - 1e-9
    # (+1e-6: the exact scores are the same float arithmetic; the slack only guards the last bit)
    return np.where(ok, alpha * rel + beta * coh + 1e-6, -np.inf).max(axis=1)


def retrieve_ann(db: rag.RagDatabase, q: rag.Query, k: int, *, alpha: float, beta: float,
                 transposes: np.ndarray, cont_frames: int, mask: np.ndarray, conform: bool,
                 fetch: int | None = None, candidates: int | None = None,
                 stats: dict | None = None) -> list[rag.Candidate]:
    """Top-K through the approximate index: fetch, bound, score exactly, rank (module docstring).

    Args:
        db: a database with ``db.ann`` set; q, k, alpha, beta, transposes, mask, conform: as
            :func:`ensemble.rag.retrieve` has checked them.
        cont_frames: frames each continuation plays for (the overlap rule).
        fetch: chunks fetched per key-shift row (default ``db.ann.config.fetch``).
        candidates: chunks scored first (default ``db.ann.config.candidates``).
        stats: filled with ``fetched`` (distinct chunks the index returned), ``possible`` (those that
            can pass the strict pass), ``scored`` (scored by the full composite), ``certified``
            (the Top-K provably equals scoring every fetched chunk), ``search_ms`` and ``bound_ms``.
    """
    cfg, ann = db.config, db.ann.config
    n_fetch = int(fetch or ann.fetch)
    t0 = time.perf_counter()
    rows, _ = query_rows(db, q, transposes, alpha=alpha, beta=beta, mask=mask)
    nprobe = min(ann.probe_factor * db.ann.nprobe, _ivf(db.ann.index).nlist)
    params = faiss.SearchParametersIVF(nprobe=nprobe,
                                       quantizer_params=faiss.SearchParametersHNSW(efSearch=max(64, 2 * nprobe)))
    _, found = db.ann.index.search(rows, n_fetch, params=params)
    idx = np.unique(found)
    idx = idx[idx >= 0].astype(np.int64)
    n_fetched, fetched = len(idx), idx
    t1 = time.perf_counter()
    kf, key_ok = key_filter(db, q, idx, transposes)  # cheap: only what can be in key is aligned and bounded
    keep = np.flatnonzero(key_ok.any(axis=1))
    idx, kf, key_ok = idx[keep], kf[keep], key_ok[keep]
    stretch = rag._stretch(db, q, idx) if conform else np.ones(len(idx))
    starts = rag.aligned_starts(db, q, idx, stretch, cont_frames) if conform \
        else db.chunk_start[idx].astype(np.float64)
    ok = rag._playable(db, idx, cont_frames, stretch, starts)
    idx, stretch, starts, kf, key_ok = idx[ok], stretch[ok], starts[ok], kf[ok], key_ok[ok]
    register = rag.window_pitch(db, idx, cont_frames, stretch, starts)
    bound = _coherent_bound(db, q, idx, transposes, kf, key_ok, alpha=alpha, beta=beta, mask=mask,
                            stretch=stretch, starts=starts, register=register)
    order = np.argsort(-bound, kind="stable")
    order = order[np.isfinite(bound[order])]
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
        rel_rows[:, q.vectors.shape[1]:] = 0.0  # the relevance block only
        _, more = db.ann.index.search(rel_rows, n_fetch, params=params)
        idx = np.union1d(fetched, more[more >= 0]).astype(np.int64)
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
        stats.update(fetched=n_fetched, possible=int(len(order)), scored=int(n_score), certified=bool(certified),
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
