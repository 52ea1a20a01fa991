"""The approximate relevance index of a large RAG database, and retrieval through it.

Below ``RagConfig.ivf_threshold`` chunks :mod:`ensemble.rag` searches exactly (a flat inner-product
index, with a bound that proves the Top-K equal to scoring everything). Above it, per lookback L, a
faiss **IVF index with an HNSW coarse quantizer** (``faiss.IndexHNSWFlat`` over the ``nlist``
centroids, so finding the lists to probe costs O(log nlist), not O(nlist)) holds one vector per
chunk::

    v_L = context_weight * ctx_L + (1 - context_weight) * seg        # [N, D + 12]

Relevance is linear in both halves, ``rel(L, t) = <part_L(t), v_L>`` with ``part_L(t) = [(1 -
chroma_weight) * emb_L, chroma_weight * roll(profile_L, -t)]`` (the query's half for key shift t),
so one (D + 12)-d index per lookback answers what the [context | segment] pair would, at half the
memory. Codes are flat (float32), SQ8 (1 byte a dimension) or PQ as memory demands
(:class:`AnnConfig`); the index is trained (k-means) on a sample of the database's own vectors.

**Measured recall.** At build time, queries made from the database's own context vectors (a chunk's
L seconds before its start, as a clip's last L seconds would be, at a random key shift) are searched
exactly and through the index at nprobe 1, 2, 4, ...; recall@10 (the share of the exact Top-10 the
index returns; a returned chunk whose exact relevance ties the 10th counts) is written into the
manifest with the smallest nprobe that reaches ``target_recall`` (0.95), which the index then uses.

**Retrieval** (:func:`retrieve_ann`): per masked lookback and key shift the index is searched
three ways -- the ``candidates // 4`` most relevant chunks of all; the ``candidates`` most relevant
of those that can pass the strict pass at that shift (dynamics within tolerance, key fit >= the
floor); and of those, the ones whose entry note lands within 150 cents of the query's last note (a
faiss ID selector each, at 4 x nprobe). Only the fetched chunks are scored by the full composite
(coherence, key fit, octave, stretch, filters: :func:`ensemble.rag._rank`, the same code that scores
everything), so what is approximate is only which chunks are scored. Relevance alone is not enough
to pre-select: the composite weighs coherence at 0.6 against relevance at 0.8, and measured on
held-out queries the exhaustive Top-10 sat at relevance ranks in the hundreds to tens of thousands.
``benchmarks/scale.py`` measures how often the final Top-K equals scoring every chunk.
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
           "index_vectors",
           "query_parts", "recall_at"]

CODES = ("auto", "flat", "sq8", "pq")
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class AnnConfig:
    """How the approximate index is built and searched.

    Attributes:
        codes: ``flat`` (float32), ``sq8`` (8-bit scalar quantizer) or ``pq`` (``pq_m`` bytes a
            vector); ``auto``: flat while the lookbacks' flat codes fit ``memory_mb``, SQ8 while
            SQ8 fits, else PQ.
        nlist: inverted lists (0: 2 * sqrt(N), ~2300 at 1.3M chunks).
        hnsw_m: neighbours per node of the HNSW coarse quantizer.
        train_per_list: k-means sample size per list (the sample is drawn with ``seed``).
        kmeans_iters: k-means iterations.
        target_recall: recall@10 the chosen nprobe must reach on the build's queries.
        recall_queries: queries per lookback that measure it.
        candidates: chunks fetched per (lookback, key shift) query row and filter, scored exactly.
    """

    codes: str = "auto"
    memory_mb: float = 2048.0
    nlist: int = 0
    hnsw_m: int = 32
    pq_m: int = 11
    train_per_list: int = 40
    kmeans_iters: int = 10
    target_recall: float = 0.95
    recall_queries: int = 200
    candidates: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.codes not in CODES:
            raise EnsembleError(f"ann codes {self.codes!r}; allowed: {list(CODES)}")
        if not 0.0 < self.target_recall <= 1.0:
            raise EnsembleError(f"target_recall = {self.target_recall}; allowed: (0, 1]")
        for name in ("hnsw_m", "pq_m", "train_per_list", "kmeans_iters", "recall_queries", "candidates"):
            if int(getattr(self, name)) < 1:
                raise EnsembleError(f"ann {name} = {getattr(self, name)}; allowed: >= 1")
        if self.nlist < 0 or self.memory_mb <= 0:
            raise EnsembleError(f"ann nlist = {self.nlist}, memory_mb = {self.memory_mb}; allowed: nlist >= 0 "
                                "(0 = auto), memory_mb > 0")

    @classmethod
    def from_dict(cls, d: dict) -> AnnConfig:
        return config_from_dict(cls, d)


@dataclass
class AnnIndex:
    """A database's approximate indexes: one faiss IVF index per lookback and how they were chosen."""

    indexes: list
    nprobe: int
    config: AnnConfig
    manifest: dict = field(default_factory=dict)
    profiles: np.ndarray | None = None  # [N, 12] centred unit pitch-class profiles (filled on first use)

    def set_nprobe(self, nprobe: int) -> None:
        for index in self.indexes:
            _ivf(index).nprobe = int(nprobe)
            _set_ef(index, nprobe)
        self.nprobe = int(nprobe)


def index_vectors(ctx: np.ndarray, seg: np.ndarray, li: int, config: rag.RagConfig) -> np.ndarray:
    """[N, D + 12] float32 vectors of lookback ``li``: context_weight * ctx_L + (1 - it) * seg."""
    lam = np.float32(config.context_weight)
    return np.ascontiguousarray(lam * ctx[li].astype(np.float32) + (1 - lam) * seg.astype(np.float32))


def query_parts(vectors: np.ndarray, config: rag.RagConfig, transposes: np.ndarray) -> np.ndarray:
    """[n_lookbacks, n_t, D + 12] float32 query rows from query vectors [n_lookbacks, D + 12]:
    [(1 - chroma_weight) * emb, chroma_weight * profile rolled by -t] (the candidate shifted by +t)."""
    D = vectors.shape[1] - 12
    w = np.float32(config.chroma_weight)
    out = np.empty((vectors.shape[0], len(transposes), D + 12), np.float32)
    for li in range(vectors.shape[0]):
        for j, t in enumerate(transposes):
            out[li, j, :D] = (1 - w) * vectors[li, :D]
            out[li, j, D:] = w * np.roll(vectors[li, D:], -int(t))
    return out


def _ivf(index):
    return faiss.extract_index_ivf(index)


def _set_ef(index, nprobe: int) -> None:
    quant = faiss.downcast_index(_ivf(index).quantizer)
    if isinstance(quant, faiss.IndexHNSW):
        quant.hnsw.efSearch = max(64, 2 * int(nprobe))


def _codes(ann: AnnConfig, n: int, d: int, n_lookbacks: int) -> str:
    if ann.codes != "auto":
        return ann.codes
    if 4 * d * n * n_lookbacks / 2**20 <= ann.memory_mb:
        return "flat"
    if d * n * n_lookbacks / 2**20 <= ann.memory_mb:
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
    ([nq, k] exact scores, descending): a found id whose exact relevance is >= the exact k-th
    (within 1e-6) counts, so ties at the k-th place do not count as misses."""
    hits = 0
    for i in range(len(queries)):
        ids = found[i, :k]
        ids = ids[ids >= 0]
        true = vecs[ids] @ queries[i]
        hits += min(k, int(np.sum(true >= exact_scores[i, k - 1] - 1e-6)))
    return hits / (k * len(queries))


def build_ann(ctx: np.ndarray, seg: np.ndarray, config: rag.RagConfig, ann: AnnConfig = AnnConfig(),
              *, log=None) -> tuple[AnnIndex, dict]:
    """Train and fill one IVF index per lookback, measure recall@10 against exact search and pick
    nprobe.

    Args:
        ctx: [n_lookbacks, N, D + 12] context vectors; seg: [N, D + 12] segment vectors.

    Returns:
        (the index, its manifest section: config, codes, nlist, recall@10 per nprobe and lookback,
        the chosen nprobe and its recall, bytes of codes, seconds).
    """
    t0 = time.perf_counter()
    n_l, n = ctx.shape[0], ctx.shape[1]
    d = ctx.shape[2]
    nlist = ann.nlist or max(16, int(2 * math.sqrt(n)))
    nlist = min(nlist, max(1, n // 39))
    codes = _codes(ann, n, d, n_l)
    rng = np.random.default_rng(ann.seed)
    train_ids = np.sort(rng.choice(n, min(n, ann.train_per_list * nlist), replace=False))
    transposes = np.arange(-config.transpose_semitones, config.transpose_semitones + 1)
    curves, indexes = [], []
    for li in range(n_l):
        vecs = index_vectors(ctx, seg, li, config)
        index = _new_index(d, nlist, codes, ann)
        # k-means runs against a flat index; the trained centroids then go into the HNSW graph
        clustering = faiss.IndexFlatIP(d)
        index.clustering_index = clustering
        index.train(vecs[train_ids])
        index.clustering_index = None  # (``clustering`` is freed when this function returns)
        index.add(vecs)
        # queries: chunks' own context (a clip's last L seconds), at a random key shift
        has_ctx = np.flatnonzero(np.abs(ctx[li, :, 0]) + np.abs(ctx[li, :, 1]) > 0)
        qs = rng.choice(has_ctx if len(has_ctx) else np.arange(n), min(ann.recall_queries, n), replace=False)
        qv = np.concatenate([ctx[li, qs].astype(np.float32)], axis=0)
        ts = rng.choice(transposes, len(qs))
        queries = np.stack([query_parts(qv[i:i + 1], config, np.array([ts[i]]))[0, 0] for i in range(len(qs))])
        exact_scores, _ = _exact_topk(vecs, queries, 10)
        curve = {}
        for nprobe in NPROBES:
            if nprobe > nlist:
                break
            _ivf(index).nprobe = nprobe
            _set_ef(index, nprobe)
            _, found = index.search(queries, 10)
            curve[nprobe] = round(recall_at(found, vecs, queries, exact_scores), 4)
            if curve[nprobe] >= 0.999:
                break
        curves.append(curve)
        indexes.append(index)
        if log:
            log(f"lookback {config.lookbacks[li]} s: recall@10 by nprobe {curve}")
        del vecs
    ok = [min((p for p, r in c.items() if r >= ann.target_recall), default=max(c)) for c in curves]
    nprobe = max(ok)
    out = AnnIndex(indexes, nprobe, ann)
    out.set_nprobe(nprobe)
    recall = [c.get(nprobe, c[max(c)]) for c in curves]
    section = {"kind": f"IVF{nlist}_HNSW{ann.hnsw_m},{codes}", "codes": codes, "nlist": nlist,
               "config": asdict(ann), "nprobe": nprobe,
               "recall_at_10": {"min_over_lookbacks": min(recall), "per_lookback": recall,
                                "queries_per_lookback": int(min(ann.recall_queries, n)),
                                "queries": "the database's own context vectors at random key shifts, "
                                           "exact inner-product search as the reference",
                                "by_nprobe": [{str(k): v for k, v in c.items()} for c in curves]},
               "reached_target": bool(min(recall) >= ann.target_recall),
               "code_bytes": int(sum(_code_bytes(i) for i in indexes)),
               "build_seconds": round(time.perf_counter() - t0, 1)}
    out.manifest = section
    return out, section


def _exact_topk(vecs: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    flat = faiss.IndexFlatIP(vecs.shape[1])
    flat.add(vecs)
    return flat.search(queries, k)


def _code_bytes(index) -> int:
    ivf = _ivf(index)
    return int(ivf.ntotal * ivf.code_size)


def save_ann(ann: AnnIndex, folder: Path) -> list[str]:
    """Write ``ann_L<i>.faiss`` files into ``folder``; returns their names."""
    names = []
    for li, index in enumerate(ann.indexes):
        name = f"ann_L{li}.faiss"
        faiss.write_index(index, str(Path(folder) / name))
        names.append(name)
    return names


def load_ann(root: Path, section: dict, *, mmap: bool = False) -> AnnIndex:
    """The saved indexes of a database folder (``manifest["ann"]``).

    Args:
        mmap: memory-map the inverted lists instead of reading them (many processes, one copy).

    Raises:
        EnsembleError: a file is missing or cannot be read.
    """
    indexes = []
    for name in section.get("files", []):
        path = Path(root) / name
        if not path.is_file():
            raise EnsembleError(f"RAG database index file {str(path)!r} is missing; rebuild the database")
        try:
            indexes.append(faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0))
        except RuntimeError as exc:
            raise EnsembleError(f"RAG database index file {str(path)!r} cannot be read ({exc})") from None
    out = AnnIndex(indexes, int(section["nprobe"]), AnnConfig.from_dict(section["config"]), section)
    out.set_nprobe(out.nprobe)
    return out


def _strict_rows(db: rag.RagDatabase, q: rag.Query, transposes: np.ndarray) -> np.ndarray:
    """[N, n_t] bool: chunks that can pass the strict pass at key shift t -- dynamics within
    tolerance and key fit >= key_floor (a superset: 1e-3 of slack). One [N, 12] x [12, n_t] product."""
    cfg = db.config
    if db.ann.profiles is None:  # centred, unit-norm pitch-class profiles, once per database
        prof = db.seg[:, -12:].astype(np.float32)
        pc = prof - prof.mean(axis=1, keepdims=True)
        pn = np.linalg.norm(pc, axis=1, keepdims=True)
        db.ann.profiles = np.where(pn > 1e-9, pc / np.maximum(pn, 1e-9), 0.0).astype(np.float32)
    qp = q.profile - q.profile.mean()
    qn = float(np.linalg.norm(qp))
    if qn <= 1e-9:
        return np.zeros((db.n_chunks, len(transposes)), bool)
    rolled = np.stack([np.roll(qp, -int(t)) for t in transposes], axis=1).astype(np.float32) / qn  # [12, n_t]
    ok = db.ann.profiles @ rolled >= cfg.key_floor - 1e-3  # [N, n_t]
    if math.isfinite(q.dynamics):
        ok &= (np.abs(db.dynamics - q.dynamics) <= cfg.dynamics_tolerance_db + 1e-3)[:, None]
    return ok


def _near_join(db: rag.RagDatabase, q: rag.Query, transposes: np.ndarray, cents: float = 150.0) -> np.ndarray:
    """[N, n_t] bool: the chunk's entry note, shifted by t, is within ``cents`` of the query's last
    note in pitch class (octaves follow the register): the join the pitch term rewards. Chunks
    without an entry pitch, or a query without a last note, count as near."""
    if not math.isfinite(q.seam_pitch):
        return np.ones((db.n_chunks, len(transposes)), bool)
    d = (db.seam_pitch[:, None].astype(np.float32) + np.float32(100.0) * transposes[None, :].astype(np.float32)
         - np.float32(q.seam_pitch))
    d = np.abs(d - np.float32(1200.0) * np.round(d / np.float32(1200.0)))
    return (d <= cents) | np.isnan(d)


def retrieve_ann(db: rag.RagDatabase, q: rag.Query, k: int, *, alpha: float, beta: float,
                 transposes: np.ndarray, cont_frames: int, mask: np.ndarray, conform: bool,
                 candidates: int | None = None, stats: dict | None = None) -> list[rag.Candidate]:
    """Top-K through the approximate index: fetch, score exactly, rank (see the module docstring).

    Per lookback and key shift the index is searched twice: among every chunk, and among the chunks
    that can pass the strict pass at that shift (dynamics, key floor: :func:`_strict_rows`, a faiss
    ID selector) -- the composite weighs coherence heavily, and measured here the exhaustive Top-10
    sat at relevance ranks in the thousands among all chunks.

    Args:
        db: a database with ``db.ann`` set; q, k, alpha, beta, transposes, mask, conform: as
            :func:`ensemble.rag.retrieve` has checked them.
        cont_frames: frames each continuation plays for (the overlap rule).
        candidates: chunks fetched per query row (default ``db.ann.config.candidates``).
        stats: filled with ``scored`` (chunks scored exactly) and ``search_ms``.
    """
    cfg = db.config
    n_fetch = int(candidates or db.ann.config.candidates)
    t0 = time.perf_counter()
    parts = query_parts(q.vectors, cfg, transposes)
    strict = _strict_rows(db, q, transposes)
    near = _near_join(db, q, transposes)
    ids = []
    for li in range(len(cfg.lookbacks)):
        if not mask[li]:
            continue
        index = db.ann.indexes[li]
        ids.append(index.search(parts[li], max(1, n_fetch // 4))[1].ravel())
        for j in range(len(transposes)):
            for rows in (strict[:, j], strict[:, j] & near[:, j]):
                bits = np.packbits(rows, bitorder="little")
                params = faiss.SearchParametersIVF(sel=faiss.IDSelectorBitmap(db.n_chunks, faiss.swig_ptr(bits)),
                                                   nprobe=min(4 * db.ann.nprobe, _ivf(index).nlist))
                ids.append(index.search(parts[li, j:j + 1], n_fetch, params=params)[1].ravel())
    idx = np.unique(np.concatenate(ids))
    idx = idx[idx >= 0].astype(np.int64)
    search_ms = (time.perf_counter() - t0) * 1000
    stretch = rag._stretch(db, q, idx) if conform else np.ones(len(idx))
    starts = rag.aligned_starts(db, q, idx, stretch, cont_frames) if conform \
        else db.chunk_start[idx].astype(np.float64)
    ok = rag._playable(db, idx, cont_frames, stretch, starts)
    register = rag.window_pitch(db, idx, cont_frames, stretch, starts)
    # _rank reads these by chunk index: full-length carriers, filled only where fetched (np.empty
    # of a large array costs no time: its pages are touched only where written)
    extra = []
    for values in (stretch, starts, register):
        full = np.empty(db.n_chunks)
        full[idx] = values
        extra.append(full)
    idx = idx[ok]
    if stats is not None:
        stats.update(scored=int(len(idx)), search_ms=round(search_ms, 3))
    picks = rag._rank(db, q, idx, transposes, cfg, alpha, beta, k, cont_frames, mask, tuple(extra))
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
