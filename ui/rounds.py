"""One listening round without Gradio: an upload in, K performed candidates (files on disk) out.

A *round* is what one press of Generate makes: the input clip's report card, the Top-K candidates
of :func:`ensemble.extend.extend` (each performed by the band), their figures, and their audio as
PCM-16 WAV files -- served as files, not float arrays, because Gradio peak-normalises arrays and
that would erase the loudness differences between candidates. A second set of WAVs is scaled so
each candidate's integrated loudness equals the input's (loudness-matched listening).

Blind rounds show the candidates in an order shuffled by a seeded RNG (the seed is kept in the
round), under opaque random file names, and keep the scores back until the rater has submitted.

Every round owns one folder under the :class:`RoundStore`'s root; the store keeps the newest rounds
(bounded in number and age) and deletes the folders of the ones it drops, and everything on close.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ensemble.audio import DEFAULT_MAX_SECONDS, LoadedAudio, load_audio, peak_dbfs, save_wav
from ensemble.errors import EnsembleError
from ensemble.extend import Engine, ExtendRequest, Extension, extend
from ensemble.features import FeatureConfig, loudness_db
from ensemble.metrics import (
    Analysis,
    SeamMetrics,
    SegmentFeatures,
    analyze_clip,
    candidate_analysis,
    compare_candidates,
    report_card,
)
from ensemble.perform import FOLLOWERS
from ensemble.rag import Candidate
from ensemble.ratings import CandidateRating, Submission, sanitize_rater_id

__all__ = ["MIN_INPUT_SECONDS", "MAX_INPUT_SECONDS", "Settings", "Shown", "Round", "RoundStore",
           "read_clip", "check_settings", "analyse_input", "make_round", "integrated_loudness_db",
           "new_session_id"]

GRID = FeatureConfig()
SR = GRID.sample_rate
MIN_INPUT_SECONDS = 2.0  # the RAG's query and the performer both need 2 s
MAX_INPUT_SECONDS = DEFAULT_MAX_SECONDS  # 10 minutes
MAX_TARGET_SECONDS = 600.0
MATCH_PEAK_DBFS = -1.0  # loudness matching never pushes a mix above this peak
LOUDNESS_GATE_DB = 40.0  # frames this far below the loudest frame are left out of the level


def new_session_id() -> str:
    """A random id for one browser session (the ratings log's ``session_id``)."""
    return uuid.uuid4().hex


# ------------------------------------------------------------------------------------------ input


def read_clip(path: str | None) -> LoadedAudio:
    """Decode an upload for a round: mono 16 kHz float32, 2 s to 10 min, not silent.

    Args:
        path: the uploaded (or recorded) file; ``None`` when nothing was given.

    Raises:
        EnsembleError: no file, not audio, silent, too short or too long -- the message names the
            file by its own name, not by the server's temporary path.
    """
    if path is None or not str(path).strip():
        raise EnsembleError("no clip was given: upload or record a clip (WAV, FLAC, OGG or MP3) first")
    name = Path(path).name
    try:
        return load_audio(path, min_seconds=MIN_INPUT_SECONDS, max_seconds=MAX_INPUT_SECONDS,
                          allow_silent=False)
    except EnsembleError as exc:
        # load_audio names the full path; on the server that is a temporary upload folder
        raise EnsembleError(str(exc).replace(str(path), name)) from None


@dataclass(frozen=True)
class Settings:
    """What the page asks of one round (checked by :func:`check_settings`).

    Attributes:
        target_seconds: length of each candidate (input + continuation), s.
        k: number of candidates, 1..10.
        alpha, beta: weights of relevance and coherence in the composite score.
        lookbacks: subset of the database's lookbacks (s) to query with; ``None`` = all.
        followers: instruments the band adds (subset of Bass, Drums, Keys).
        transpose: also try the segments shifted -6..+6 semitones.
        seed: seeds the decoders' noise.
        blind: shuffle, hide scores until submission, opaque names.
    """

    target_seconds: float = 30.0
    k: int = 4
    alpha: float | None = None
    beta: float | None = None
    lookbacks: tuple[float, ...] | None = None
    followers: tuple[str, ...] = FOLLOWERS
    transpose: bool = False
    seed: int = 0
    blind: bool = True

    def request(self) -> ExtendRequest:
        return ExtendRequest(seconds=self.target_seconds, k=self.k, alpha=self.alpha, beta=self.beta,
                             lookbacks=self.lookbacks, transpose=self.transpose,
                             followers=self.followers, seed=self.seed)


def _number(name: str, value: object) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise EnsembleError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise EnsembleError(f"{name} must be a finite number, got {value!r}")
    return x


def check_settings(*, target_seconds: object, k: object, alpha: object, beta: object,
                   lookbacks: Sequence[object] | None, followers: Sequence[str] | None,
                   transpose: object = False, seed: object = 0, blind: object = True,
                   input_seconds: float | None = None) -> Settings:
    """Turn the page's raw values into :class:`Settings`, or say in words what is wrong.

    Raises:
        EnsembleError: a target not longer than the input or above 10 minutes, K outside 1..10, a
            weight outside [0, 10], no lookback or no follower chosen.
    """
    target = _number("target length", target_seconds)
    if input_seconds is not None and target <= input_seconds:
        raise EnsembleError(f"target length {target:g} s must be longer than the input "
                            f"({input_seconds:.2f} s): the candidates continue your clip")
    if not 0 < target <= MAX_TARGET_SECONDS:
        raise EnsembleError(f"target length {target:g} s; allowed: up to {MAX_TARGET_SECONDS:g} s")
    k_value = _number("K", k)
    if k_value != int(k_value) or not 1 <= k_value <= 10:
        raise EnsembleError(f"K = {k!r}; allowed: a whole number 1..10")
    weights = []
    for name, value in (("alpha", alpha), ("beta", beta)):
        if value is None:
            weights.append(None)
            continue
        w = _number(name, value)
        if not 0.0 <= w <= 10.0:
            raise EnsembleError(f"{name} = {w:g}; allowed: 0..10")
        weights.append(w)
    if lookbacks is not None:
        lookbacks = tuple(_number("lookback", x) for x in lookbacks)
        if not lookbacks:
            raise EnsembleError("choose at least one lookback")
    if not followers:
        raise EnsembleError("choose at least one follower (bass, drums, keys) to play along")
    seed_value = _number("seed", 0 if seed is None else seed)
    return Settings(target_seconds=target, k=int(k_value), alpha=weights[0], beta=weights[1],
                    lookbacks=lookbacks, followers=tuple(str(f) for f in followers),
                    transpose=bool(transpose), seed=int(seed_value) & 0x7FFFFFFF, blind=bool(blind))


def analyse_input(audio: np.ndarray) -> Analysis:
    """The input's analysis for its report card and the candidates' figures.

    YIN rather than pYIN on the request path: pYIN takes about as long as the clip lasts here.
    """
    return analyze_clip(audio, config=GRID, f0_method="yin")


def write_figure(fig, path: Path) -> Path:
    """Save a matplotlib figure as PNG (written under a temporary name, then renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------------------ levels


def integrated_loudness_db(audio: np.ndarray) -> float | None:
    """Power mean of the A-weighted frame loudness over non-silent frames, dB (None for silence).

    Frames more than ``LOUDNESS_GATE_DB`` below the loudest frame (rests, the tail) are gated out,
    so a candidate with a long quiet ending is not judged quieter than it sounds while playing.
    """
    loud = loudness_db(np.asarray(audio, np.float32), config=GRID).astype(np.float64)
    if loud.size == 0 or loud.max() <= GRID.loudness_floor_db + 1.0:
        return None
    keep = loud >= loud.max() - LOUDNESS_GATE_DB
    return float(10.0 * np.log10(np.mean(10.0 ** (loud[keep] / 10.0))))


def match_gain_db(audio: np.ndarray, reference_db: float | None) -> tuple[float, bool]:
    """Gain (dB) that brings ``audio`` to ``reference_db``, and whether the peak ceiling cut it."""
    level = integrated_loudness_db(audio)
    if level is None or reference_db is None:
        return 0.0, False
    gain = reference_db - level
    headroom = MATCH_PEAK_DBFS - peak_dbfs(audio)
    if gain > headroom:
        return float(headroom), True
    return float(gain), False


# ------------------------------------------------------------------------------------------ rounds


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


@dataclass
class Shown:
    """One candidate as the rater sees it.

    Attributes:
        position: 1..K, its place on the page.
        candidate: the retrieval result (``candidate.rank`` is the composite rank).
        seam: pitch and loudness jumps at the seam, measured on the input + continuation analysed
            from stored features (the analysis itself is dropped once the figures are drawn: a
            session keeps its round in memory).
        audio: PCM-16 WAV of the performed mix, as rendered.
        audio_matched: the same mix scaled to the input's integrated loudness.
        matched_gain_db: the gain of ``audio_matched``; ``matched_limited`` when the peak ceiling cut it.
        figure: PNG of this candidate against the input, seam marked.
        notes: the performer's notes (silent or unpitched passages, ...).
    """

    position: int
    candidate: Candidate
    seam: SeamMetrics | None
    audio: Path
    audio_matched: Path
    matched_gain_db: float
    matched_limited: bool
    figure: Path
    notes: list[str] = field(default_factory=list)

    def scores(self) -> dict:
        """What the rater may see once scores are revealed (JSON-ready)."""
        c = self.candidate
        return {"position": self.position, "composite_rank": c.rank, "composite": c.composite,
                "relevance": c.relevance, "coherence": c.coherence, "lookback_s": c.lookback,
                "transpose": c.transpose, "track": c.track, "start_seconds": c.start_seconds,
                "db_chunk_idx": c.chunk, "fallback": c.fallback,
                "seam_pitch_jump_cents": _none_if_nan(c.seam_pitch_jump_cents),
                "seam_loudness_jump_db": _none_if_nan(c.seam_loudness_jump_db)}


@dataclass
class Round:
    """One press of Generate: the candidates in shown order and everything needed to log a rating."""

    round_id: str
    session_id: str
    rater_id: str
    folder: Path
    input_sha256: str
    input_seconds: float
    target_seconds: float
    alpha: float
    beta: float
    blind: bool
    shuffle_seed: int | None
    shown: list[Shown]
    report_card: Path
    overview: Path
    notes: list[str]
    timings: dict[str, float]
    model_version: str
    database_version: str
    created: float = field(default_factory=time.time)
    submission_id: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def k(self) -> int:
        return len(self.shown)

    def audio_files(self, matched: bool = False) -> list[str]:
        """WAV paths in shown order."""
        return [str(s.audio_matched if matched else s.audio) for s in self.shown]

    def public(self, *, reveal: bool | None = None) -> dict:
        """JSON for the API: what the rater may know (scores only when not blind or revealed)."""
        reveal = (not self.blind or self.submission_id is not None) if reveal is None else reveal
        cands = []
        for s in self.shown:
            item = {"position": s.position, "file": s.audio.name, "file_matched": s.audio_matched.name,
                    "matched_gain_db": round(s.matched_gain_db, 2)}
            if reveal:
                item.update(s.scores())
            cands.append(item)
        return {"round_id": self.round_id, "k": self.k, "blind": self.blind,
                "input_seconds": round(self.input_seconds, 3), "target_seconds": self.target_seconds,
                "alpha": self.alpha, "beta": self.beta, "notes": list(self.notes),
                "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
                "submitted": self.submission_id is not None, "candidates": cands}

    def submission(self, ranks: Sequence[object], *, favourite: object = None, comment: str = "",
                   rater_id: str | None = None) -> Submission:
        """The rater's ranks (one per shown position, in shown order) as a log submission.

        Ranks may be ints or numeric text; ``None`` is a missing rank (rejected by
        :func:`ensemble.ratings.validate_submission`). ``favourite`` is a shown position, or
        ``None``/0 for none.

        Raises:
            EnsembleError: the wrong number of ranks, or a rank or favourite that is not a number.
        """
        ranks = list(ranks)
        if len(ranks) != self.k:
            raise EnsembleError(f"{len(ranks)} ranks were given for {self.k} candidates; give one rank "
                                f"per shown candidate, in the order shown")
        ranks = [_as_int_or_none(f"rank of candidate {i + 1}", r) for i, r in enumerate(ranks)]
        fav = _as_int_or_none("favourite", favourite)
        rows = []
        for s, rank in zip(self.shown, ranks, strict=True):
            c = s.candidate
            rows.append(CandidateRating(
                shown_position=s.position, composite_rank=c.rank, human_rank=rank,
                db_chunk_idx=int(c.chunk), composite=float(c.composite), relevance=float(c.relevance),
                coherence=float(c.coherence), lookback_s=float(c.lookback), transpose=float(c.transpose),
                seam_pitch_jump_cents=_none_if_nan(c.seam_pitch_jump_cents),
                seam_loudness_jump_db=_none_if_nan(c.seam_loudness_jump_db)))
        return Submission(
            rater_id=sanitize_rater_id(rater_id if rater_id and str(rater_id).strip() else self.rater_id),
            session_id=self.session_id, input_sha256=self.input_sha256,
            input_seconds=float(self.input_seconds), target_seconds=float(self.target_seconds),
            k=self.k, alpha=float(self.alpha), beta=float(self.beta), blind=self.blind,
            candidates=tuple(rows), favourite=fav or None, comment=comment or "",
            model_version=self.model_version, database_version=self.database_version)


def _as_int_or_none(name: str, value: object) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise EnsembleError(f"{name} {value!r} is not a whole number")
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise EnsembleError(f"{name} {value!r} is not a whole number") from None
    if not math.isfinite(x) or x != int(x):
        raise EnsembleError(f"{name} {value!r} is not a whole number")
    return int(x)


def _segment_features(engine: Engine, ext: Extension, i: int) -> SegmentFeatures:
    """The i-th candidate's continuation: stored pitch from the database, audio as joined."""
    c = ext.candidates[i]
    db = engine.db
    n_in = len(ext.input_audio)
    xfade = max(1, int(round(db.config.crossfade_seconds * SR)))
    seg = ext.leaders[i][n_in - xfade:]  # what follows the input, from the crossfade's start
    frames = 1 + len(seg) // GRID.hop_length
    f0, voiced, _ = db.track_features(int(db.chunk_track[c.chunk]))
    s = int(db.chunk_start[c.chunk])
    f0 = np.asarray(f0[s:s + frames], np.float32) * np.float32(2.0 ** (c.transpose / 12.0))
    voiced = np.asarray(voiced[s:s + frames], bool)
    f0 = np.pad(f0, (0, frames - len(f0)))  # a segment running past its track's end: unvoiced
    voiced = np.pad(voiced, (0, frames - len(voiced)))
    return SegmentFeatures.from_audio(seg, f0_hz=np.where(voiced, f0, 0.0), voiced=voiced, config=GRID,
                                      label="", f0_method="stored")


def _renumber_legend(fig, position: int) -> None:
    """A one-candidate comparison figure calls its candidate "#1 candidate 1"; use the shown position."""
    for ax in fig.axes:
        legend = ax.get_legend()
        for text in legend.get_texts() if legend is not None else ():
            first, sep, rest = text.get_text().partition("\n")
            if first.startswith("#1 "):
                text.set_text(f"#{position} candidate {position}{sep}{rest}")


def _opaque_name(suffix: str) -> str:
    return f"{secrets.token_hex(8)}{suffix}"


Progress = Callable[[float, str], None]


def make_round(engine: Engine, clip: LoadedAudio, settings: Settings, *, folder: Path,
               input_analysis: Analysis | None = None, report_png: Path | None = None,
               rater_id: str = "", session_id: str = "", progress: Progress | None = None,
               round_id: str | None = None) -> Round:
    """Run one request and write its files into ``folder`` (created; left to the caller on failure).

    Args:
        engine: the loaded models and database.
        clip: the input from :func:`read_clip`.
        settings: from :func:`check_settings`.
        folder: a fresh folder for this round's files.
        input_analysis, report_png: the input's analysis and report card when already made.
        rater_id, session_id: who asked (for the shuffle seed and the log).
        progress: ``progress(fraction, message)``; fraction 0..1 of this function's work.

    Raises:
        EnsembleError: whatever :func:`ensemble.extend.extend` rejects (target, K, lookbacks, ...).
    """
    report = progress or (lambda f, m: None)
    timings: dict[str, float] = {}
    folder.mkdir(parents=True, exist_ok=True)
    audio = clip.audio
    t = time.perf_counter()
    if input_analysis is None:
        input_analysis = analyse_input(audio)
    if report_png is None:
        report_png = write_figure(report_card(input_analysis, title="Your clip"),
                                  folder / _opaque_name(".png"))
    timings["input_report"] = time.perf_counter() - t

    def extend_progress(fraction: float, message: str) -> None:
        report(0.85 * fraction, message)

    ext = extend(engine, audio, settings.request(), progress=extend_progress)
    timings.update({f"extend_{k}": v for k, v in ext.timings.items()})
    k = len(ext.candidates)
    if settings.blind:
        shuffle_seed = secrets.randbits(63)
        order = [int(i) for i in np.random.default_rng(shuffle_seed).permutation(k)]
    else:
        shuffle_seed, order = None, list(range(k))

    t = time.perf_counter()
    report(0.86, "drawing the candidates")
    xfade_s = engine.db.config.crossfade_seconds
    analyses = [candidate_analysis(input_analysis, _segment_features(engine, ext, i),
                                   crossfade_s=xfade_s, label="") for i in range(k)]
    reference_db = integrated_loudness_db(audio)
    shown = []
    for pos, i in enumerate(order, start=1):
        c = ext.candidates[i]
        perf = ext.performances[i]
        name = _opaque_name("") if settings.blind else f"candidate{pos:02d}_rank{c.rank:02d}"
        mix_path = save_wav(folder / f"{name}.wav", perf.mix, SR)
        gain, limited = match_gain_db(perf.mix, reference_db)
        matched_name = _opaque_name("") if settings.blind else f"{name}_matched"
        matched = save_wav(folder / f"{matched_name}.wav",
                           perf.mix * np.float32(10.0 ** (gain / 20.0)), SR)
        fig = compare_candidates(input_analysis, [analyses[i]], dpi=56,
                                 title=f"Candidate {pos}: melody and loudness, seam marked")
        _renumber_legend(fig, pos)
        fig_path = write_figure(fig, folder / _opaque_name(".png"))
        report(0.86 + 0.12 * pos / k, f"drew candidate {pos} of {k}")
        shown.append(Shown(position=pos, candidate=c, seam=analyses[i].seam, audio=mix_path,
                           audio_matched=matched, matched_gain_db=gain, matched_limited=limited,
                           figure=fig_path, notes=list(perf.info.get("notes", []))))
    overview = write_figure(
        compare_candidates(input_analysis, [analyses[i] for i in order], dpi=72,
                           title=f"All {k} candidates (numbered as shown)"),
        folder / _opaque_name(".png"))
    timings["figures_and_audio"] = time.perf_counter() - t
    cfg = engine.db.config
    req = settings.request()
    report(1.0, "done")
    return Round(
        round_id=round_id or uuid.uuid4().hex, session_id=session_id, rater_id=sanitize_rater_id(rater_id),
        folder=folder, input_sha256=hashlib.sha256(np.ascontiguousarray(audio, "<f4").tobytes()).hexdigest(),
        input_seconds=len(audio) / SR, target_seconds=float(settings.target_seconds),
        alpha=float(cfg.alpha if req.alpha is None else req.alpha),
        beta=float(cfg.beta if req.beta is None else req.beta), blind=settings.blind,
        shuffle_seed=shuffle_seed, shown=shown, report_card=report_png, overview=overview,
        notes=list(ext.notes), timings=timings, model_version=str(ext.versions.get("model", "")),
        database_version=str(ext.versions.get("database", "")))


# ------------------------------------------------------------------------------------------ store


class RoundStore:
    """The rounds the server still holds, newest last, each with its folder under ``root``.

    Bounded by count and age; a dropped round's folder is deleted. Thread-safe.

    Args:
        root: parent of the round folders; ``None`` makes a fresh temporary folder.
        max_rounds: rounds kept (a listening session needs one at a time; the API may hold several).
        max_age_s: rounds older than this are dropped.
    """

    def __init__(self, root: str | Path | None = None, *, max_rounds: int = 200,
                 max_age_s: float = 6 * 3600.0) -> None:
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="ensemble-app-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_rounds = max_rounds
        self.max_age_s = max_age_s
        self._rounds: OrderedDict[str, Round] = OrderedDict()
        self._lock = threading.Lock()

    def new_folder(self) -> tuple[str, Path]:
        """A new round id and its (not yet created) folder."""
        round_id = uuid.uuid4().hex
        return round_id, self.root / round_id

    def add(self, rnd: Round) -> None:
        with self._lock:
            self._rounds[rnd.round_id] = rnd
            self._prune_locked()

    def get(self, round_id: str) -> Round:
        """The round with this id.

        Raises:
            EnsembleError: unknown or expired id.
        """
        with self._lock:
            self._prune_locked()
            rnd = self._rounds.get(str(round_id))
        if rnd is None:
            raise EnsembleError(f"round {str(round_id)[:40]!r} is unknown or has expired (rounds are kept "
                                f"{self.max_age_s / 3600:g} h, the newest {self.max_rounds}); "
                                "generate again")
        return rnd

    def __len__(self) -> int:
        with self._lock:
            return len(self._rounds)

    def _prune_locked(self) -> None:
        now = time.time()
        while self._rounds:
            oldest = next(iter(self._rounds.values()))
            if len(self._rounds) <= self.max_rounds and now - oldest.created <= self.max_age_s:
                break
            self._rounds.popitem(last=False)
            shutil.rmtree(oldest.folder, ignore_errors=True)

    def discard_folder(self, folder: Path) -> None:
        """Delete a folder of a round that failed before it was added."""
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Drop every round and delete the root."""
        with self._lock:
            self._rounds.clear()
        shutil.rmtree(self.root, ignore_errors=True)
