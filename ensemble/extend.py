"""Extend a user's clip: retrieve Top-K continuations (:mod:`ensemble.rag`), stitch each to the clip
with an equal-power crossfade, and perform every one with the band (:mod:`ensemble.perform`).

:class:`Engine` holds everything loaded once (Guitar decoder for embeddings and re-synthesis, the
RAG database, the performer); :func:`extend` serves one request; :func:`write_extension` writes
see :mod:`ensemble.outputs`.

Sharing work across the K candidates: the user's clip is analysed once for the query (YIN, loudness,
chroma, one GRU pass) and **performed once**; candidates' features come from the database (no
per-candidate analysis); transposed winners are re-synthesised together in one batch. The input and
the K continuations (each with the crossfade's overlap) go through
:meth:`~ensemble.perform.Performer.perform_batch` together: each is analysed and planned (two at a
time on the 2 cores), then the Bass decoder renders all K continuations' voices as one batch, and so
does the Keys decoder. Each band stem is joined to the input's with the same equal-power crossfade as
the leader. The continuation's
accompaniment is planned from the continuation alone (its own key, beat grid and drum loop), which
the crossfade smooths but does not make one plan.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ensemble.dsp import crossfade, soft_limit
from ensemble.engine import Engine
from ensemble.errors import EnsembleError
from ensemble.perform import Performance, PerformConfig, Performer, parse_followers
from ensemble.rag import Candidate, Query, RagDatabase, analyze_query, retrieve, segment_audio

__all__ = ["ExtendRequest", "Continuation", "Extension", "extend"]


@dataclass(frozen=True)
class ExtendRequest:
    """One request's settings (validated by :func:`extend`)."""

    seconds: float = 30.0
    k: int = 10
    alpha: float | None = None
    beta: float | None = None
    lookbacks: tuple[float, ...] | None = None
    transpose: bool = False
    followers: tuple[str, ...] = ("Bass", "Drums", "Keys")
    seed: int = 0


@dataclass(frozen=True)
class Continuation:
    """What one candidate plays after the input, as controls, from the crossfade's start.

    The candidate's stored controls (its database segment), transposed by ``transpose`` semitones
    and cut or padded to the continuation's frames; a segment that runs past its track's end is
    unvoiced and silent (-120 dB) there. The transposed winners are re-synthesised from exactly these,
    and the listening round draws the candidates' melody from them.

    Attributes:
        f0_hz: [T] Hz, 0 where unvoiced.
        voiced: [T] bool.
        loudness_db: [T] dB (A-weighted).
        transpose: semitones applied to the stored f0.
    """

    f0_hz: np.ndarray
    voiced: np.ndarray
    loudness_db: np.ndarray
    transpose: int


@dataclass
class Extension:
    """The result of one request.

    Attributes:
        input_audio: the user's clip [n] at ``sample_rate``.
        query: what retrieval read from it.
        candidates: the Top-K, best first.
        continuations: per candidate, its continuation's controls (:class:`Continuation`).
        performances: per candidate, the band's performance of input + continuation.
        leaders: per candidate, the stitched leader audio (input, crossfade, continuation).
        crossfade: length of the equal-power crossfade at the seam, samples.
        sample_rate: Hz of every audio array here.
        original: the user's recording as uploaded, [n_src, channels] float32 at ``original_rate``
            (None when the caller passed only the 16 kHz mono clip).
        original_rate: Hz of ``original``.
    """

    input_audio: np.ndarray
    query: Query
    candidates: list[Candidate]
    continuations: list[Continuation]
    performances: list[Performance]
    leaders: list[np.ndarray]  # stitched leader audio per candidate
    request: ExtendRequest
    notes: list[str]
    timings: dict[str, float]
    versions: dict
    crossfade: int
    sample_rate: int
    original: np.ndarray | None = None
    original_rate: int | None = None

    @property
    def input_seconds(self) -> float:
        return len(self.input_audio) / self.sample_rate

    @property
    def seam_seconds(self) -> float:
        """Where the crossfade starts: the continuation's first sample, s."""
        return (len(self.input_audio) - self.crossfade) / self.sample_rate

    def results(self) -> dict:
        return {"input_seconds": round(self.input_seconds, 3), "target_seconds": self.request.seconds,
                "k": self.request.k, "request": {**self.request.__dict__,
                                                 "lookbacks": list(self.request.lookbacks or [])},
                "notes": self.notes, "query_lookbacks_used": list(self.query.lookbacks_used),
                "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
                "versions": self.versions,
                "candidates": [c.to_dict() for c in self.candidates]}


def _validate(audio: np.ndarray, req: ExtendRequest, engine: Engine) -> tuple[np.ndarray, ExtendRequest]:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise EnsembleError(f"extend needs mono audio [n_samples] at {engine.sample_rate // 1000} kHz, "
                            f"got shape {audio.shape}")
    seconds = len(audio) / engine.sample_rate
    limits, db = engine.config.limits, engine.db
    if not math.isfinite(req.seconds) or req.seconds <= seconds:
        raise EnsembleError(
            f"target length {req.seconds:g} s must be longer than the input ({seconds:.2f} s)")
    if req.seconds > limits.max_target_seconds:
        raise EnsembleError(f"target length {req.seconds:g} s; allowed: at most {limits.max_target_seconds:g} s")
    if not 1 <= int(req.k) <= limits.max_k:
        raise EnsembleError(f"K = {req.k}; allowed: 1..{limits.max_k}")
    if db.n_chunks == 0:
        raise EnsembleError("the RAG database is empty")
    lookbacks = req.lookbacks
    if lookbacks is not None:
        lookbacks = tuple(float(x) for x in lookbacks)
        bad = [x for x in lookbacks if not any(abs(x - y) < 1e-6 for y in db.config.lookbacks)]
        if bad or not lookbacks:
            raise EnsembleError(f"lookbacks {list(lookbacks)}: allowed a non-empty subset of "
                                f"{list(db.config.lookbacks)} (the database's)")
    return audio, replace(req, lookbacks=lookbacks, followers=parse_followers(req.followers))


def _lookback_mask(db: RagDatabase, lookbacks: tuple[float, ...] | None) -> np.ndarray | None:
    if not lookbacks:
        return None
    return np.array([any(abs(L - x) < 1e-6 for x in lookbacks) for L in db.config.lookbacks])


def _continuation(db: RagDatabase, c: Candidate, frames: int) -> Continuation:
    """The candidate's stored controls for ``frames`` frames from its chunk's start, transposed."""
    f0, voiced, loud = db.track_features(int(db.chunk_track[c.chunk]))
    s = int(db.chunk_start[c.chunk])
    v = np.asarray(voiced[s:s + frames], bool)
    f = np.where(v, f0[s:s + frames], 0.0) * 2.0 ** (c.transpose / 12.0)
    ld = loud[s:s + frames]
    pad = frames - len(f)  # a segment running past its track's end: unvoiced and silent
    return Continuation(f0_hz=np.pad(f, (0, pad)), voiced=np.pad(v, (0, pad)),
                        loudness_db=np.pad(ld, (0, pad), constant_values=-120.0), transpose=int(c.transpose))


@torch.inference_mode()
def _resynthesise(engine: Engine, cands: list[Candidate], conts: list[Continuation], n_samples: int,
                  seed: int) -> dict[int, np.ndarray]:
    """Transposed winners, re-synthesised in one batch by the leader decoder from their controls."""
    todo = [(c, k) for c, k in zip(cands, conts, strict=True) if c.transpose != 0]
    if not todo:
        return {}
    out = engine.leader(torch.tensor(np.stack([k.f0_hz for _, k in todo]), dtype=torch.float32)[..., None],
                        torch.tensor(np.stack([k.loudness_db for _, k in todo]), dtype=torch.float32)[..., None],
                        n_samples=n_samples, generator=torch.Generator().manual_seed(seed))
    return {c.rank: out[i].numpy().astype(np.float32) for i, (c, _) in enumerate(todo)}


def extend(engine: Engine, audio: np.ndarray, request: ExtendRequest = ExtendRequest(), *,
           progress: Callable[[float, str], None] | None = None,
           original: tuple[np.ndarray, int] | None = None) -> Extension:
    """Retrieve, stitch and perform Top-K continuations of ``audio`` ([n] float32, 16 kHz).

    Args:
        progress: called as ``progress(fraction, message)`` per stage and per rendered candidate.

    Raises:
        EnsembleError: target <= input length, silent or too short input, bad K/alpha/beta/lookbacks.
    """
    report = progress or (lambda f, m: None)
    audio, req = _validate(audio, request, engine)
    sr = engine.sample_rate
    timings: dict[str, float] = {}
    notes: list[str] = []

    t = time.perf_counter()
    report(0.02, "analysing the input")
    q = analyze_query(audio, engine.db, engine.leader)
    notes += list(q.notes)
    timings["query_analysis"] = time.perf_counter() - t

    t = time.perf_counter()
    report(0.1, "retrieving candidates")
    cont_seconds = req.seconds - len(audio) / sr
    cands = retrieve(engine.db, q, req.k, alpha=req.alpha, beta=req.beta, transpose=req.transpose,
                     continuation_seconds=cont_seconds,
                     lookback_mask=_lookback_mask(engine.db, req.lookbacks))
    if not cands:
        raise EnsembleError("the RAG database has no segment long enough to continue this clip")
    if len(cands) < req.k:
        notes.append(f"only {len(cands)} non-overlapping segments exist for K = {req.k}")
    if any(c.fallback for c in cands):
        notes.append("the strict pass (RMS within tolerance, coherence >= floor) found fewer than K: "
                     "the rest come from the fallback pass (alpha 0.95, beta 0.05, no floor)")
    timings["retrieval"] = time.perf_counter() - t

    t = time.perf_counter()
    xfade = max(1, int(round(engine.db.config.crossfade_seconds * sr)))
    n_cont = int(round(cont_seconds * sr)) + xfade
    frames = n_cont // engine.config.features.hop_length + 1
    continuations = [_continuation(engine.db, c, frames) for c in cands]
    resynth = _resynthesise(engine, cands, continuations, n_cont, req.seed)
    leaders = []
    for c in cands:
        seg = resynth.get(c.rank)
        if seg is None:
            seg = segment_audio(engine.db, c.chunk, n_cont)
        leaders.append(crossfade(audio, seg, xfade, kind="equal_power").astype(np.float32))
    timings["stitch"] = time.perf_counter() - t

    t = time.perf_counter()
    performer = engine.performer
    if req.followers != performer.config.followers:
        performer = Performer(performer.arranger, performer.decoders, performer.drum_db,
                              replace(performer.config, followers=req.followers), versions=performer.versions,
                              features=performer.features)
    report(0.15, "performing the input and the continuations")
    conts = [leader[len(audio) - xfade:] for leader in leaders]  # the continuation incl. the fade

    def step(fraction: float, message: str) -> None:
        report(0.15 + 0.8 * fraction, message)

    # one batch: the input and the K continuations are planned in two threads, then each follower
    # decoder renders all K continuations' voices in one pass (the input is its own length group)
    perfs = performer.perform_batch([audio, *conts], seed=req.seed, workers=min(2, os.cpu_count() or 1),
                                    progress=step)
    user_perf, cont_perfs = perfs[0], perfs[1:]
    performances = [_stitch(user_perf, p, xfade, performer.config, sr) for p in cont_perfs]
    timings["perform"] = time.perf_counter() - t
    report(1.0, "done")
    versions = {"model": engine.model_version, "database": engine.db.version}
    orig, orig_rate = (None, None) if original is None else (np.asarray(original[0], np.float32),
                                                             int(original[1]))
    return Extension(audio, q, cands, continuations, performances, leaders, req, notes, timings, versions,
                     crossfade=xfade, sample_rate=sr, original=orig, original_rate=orig_rate)


def _stitch(user: Performance, cont: Performance, xfade: int, config: PerformConfig,
            sr: int) -> Performance:
    """Join the input's performance and a continuation's, stem by stem, with the same equal-power
    crossfade as the leader, then re-mix through the soft limiter (peak stays below 0 dBFS)."""
    stems = {}
    n = len(user.mix) + len(cont.mix) - xfade
    for name in dict.fromkeys([*user.stems, *cont.stems]):
        a = user.stems.get(name, np.zeros(len(user.mix), np.float32))
        b = cont.stems.get(name, np.zeros(len(cont.mix), np.float32))
        stems[name] = crossfade(a, b, xfade, kind="equal_power").astype(np.float32)
    raw = np.sum(list(stems.values()), axis=0) if stems else np.zeros(n, np.float32)
    peak = float(np.max(np.abs(raw))) if raw.size else 0.0
    bus = min(1.0, 10.0 ** (3.0 / 20.0) / peak) if peak > 0 else 1.0
    for name in stems:
        stems[name] *= np.float32(bus)
    mix = soft_limit(raw * np.float32(bus), threshold_db=config.limiter_threshold_db,
                     ceiling_db=config.limiter_ceiling_db).astype(np.float32)
    info = {"stitched": True, "seam_seconds": round((len(user.mix) - xfade / 2) / sr, 3),
            "crossfade_seconds": round(xfade / sr, 3), "bus_gain": round(bus, 4),
            "peak_dbfs": round(20 * np.log10(max(float(np.max(np.abs(mix))), 1e-12)), 2),
            "input_part": user.info, "continuation_part": cont.info}
    return replace(cont, mix=mix, stems=stems, info=info)
