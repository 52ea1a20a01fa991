"""One listening round without Gradio: an upload in, K performed candidates (files on disk) out.

A *round* is what one press of Generate makes: the input clip's report card, the Top-K candidates
of :func:`ensemble.extend.extend` (each performed by the band), their figures, and their audio as
WAV files -- served as files, not float arrays, because Gradio peak-normalises arrays and that
would erase the loudness differences between candidates. What the rater plays is each candidate's
mix at the recording's own sample rate and channel count (:func:`ensemble.outputs.native_mix`:
the user's own audio in the input part, never downgraded), PCM-24 for a 24-bit or float upload,
else PCM-16. A second set of WAVs is scaled so each candidate's integrated loudness equals the
input's (loudness-matched listening, :mod:`ensemble.listening.levels`); levels, figures and metrics
all use the 16 kHz mono analysis copies.

The seam numbers a round shows (card, legend of the figures, API, ratings log) are the
candidate's own (``Candidate.seam_pitch_jump_cents`` / ``seam_loudness_jump_db``, measured by
:func:`ensemble.extend.extend`), never measured again here. The figures share one drawing of the
input (:class:`ensemble.figures.report.CandidateSheet`) and need only the rendered leaders
(``extend(on_leaders=...)``): an open round's are drawn on a worker thread while the band plays; a
blind round keeps them hidden until it is rated, so they are drawn after the round is answered, on
its background thread (:meth:`Round.figures_ready` waits for them). The audio is written once the
band has played.

Every round records the timbre that rendered its candidates (``Round.timbre``, the request's
:class:`~ensemble.timbre.TimbreChoice`): the API's JSON, the status, each card and every ratings-log row
name it.

Blind rounds show the candidates in an order shuffled by a seeded RNG (the seed is kept in the
round), under opaque random file names, and keep the scores back until the rater has submitted. A
round records how it was played (``Round.playback``: loudness-matched, as rendered, or both), which
every ratings-log row states.

Each candidate also keeps what its *take* needs beside its mix (stems, the band's parts as MIDI:
:func:`ensemble.listening.take.write_take_sources`, written on a background thread once the round
is answered), so that :meth:`Round.take` can zip it on request once the round may be revealed.

Everything a round draws comes from the :class:`~ensemble.extend.Extension` (each candidate's
continuation controls, the crossfade): nothing here reads the retrieval database. Every round owns
one folder; :class:`~ensemble.listening.store.RoundStore` keeps the newest rounds and deletes the
folders of the ones it drops.
"""

from __future__ import annotations

import math
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from ensemble.audio import LoadedAudio, save_wav
from ensemble.engine import Engine
from ensemble.errors import EnsembleError
from ensemble.extend import Extension, LeadersReady, extend
from ensemble.features import FeatureConfig
from ensemble.figures.report import CandidateSheet, report_card, write_figure
from ensemble.files import atomic_write_bytes
from ensemble.listening.levels import integrated_loudness_db, match_gain_db
from ensemble.listening.settings import Settings
from ensemble.listening.take import write_take_sources, write_take_zip
from ensemble.metrics import (
    Analysis,
    CandidateAnalysis,
    SeamMetrics,
    SegmentFeatures,
    analyze_clip,
    audio_sha256,
    candidate_analysis,
)
from ensemble.outputs import native_format, native_mix
from ensemble.rag import Candidate
from ensemble.ratings.log import CandidateRating, Submission, sanitize_rater_id
from ensemble.timbre import TimbreChoice

__all__ = ["Foreground", "Shown", "Round", "analyse_input", "make_round", "new_session_id"]


def new_session_id() -> str:
    """A random id for one browser session (the ratings log's ``session_id``)."""
    return uuid.uuid4().hex


def analyse_input(audio: np.ndarray, *, features: FeatureConfig = FeatureConfig()) -> Analysis:
    """The input's analysis for its report card and the candidates' figures.

    YIN rather than pYIN on the request path: pYIN takes about as long as the clip lasts here.
    """
    return analyze_clip(audio, config=features, f0_method="yin")


# ------------------------------------------------------------------------------------------ rounds


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


@dataclass
class Shown:
    """One candidate as the rater sees it.

    Attributes:
        position: 1..K, its place on the page.
        candidate: the retrieval result (``candidate.rank`` is the composite rank); its seam numbers
            are the ones every card, figure and log row shows.
        audio: WAV of the performed mix as rendered, at the recording's own rate and channels.
        audio_matched: the same mix scaled to the input's integrated loudness.
        matched_gain_db: the gain of ``audio_matched``; ``matched_limited`` when the peak ceiling cut it.
        figure: PNG of this candidate against the input, seam marked (of a blind round: drawn in the
            background, there once :meth:`Round.figures_ready` returns).
        notes: the performer's notes (silent or unpitched passages, ...).
        take_sources: the folder of what its take adds to the mix (stems, MIDI;
            :func:`ensemble.listening.take.write_take_sources`), as a future: it is written on a
            background thread once the round's own files are, so a round is not slower for takes
            nobody may ask for (~0.12 s per 30 s candidate); None when none is kept.
    """

    position: int
    candidate: Candidate
    audio: Path
    audio_matched: Path
    matched_gain_db: float
    matched_limited: bool
    figure: Path
    notes: list[str] = field(default_factory=list)
    take_sources: Future | None = None

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
    """One press of Generate: the candidates in shown order and everything needed to log a rating.

    ``timbre`` is what rendered every candidate of the round (``Extension.timbre``; None when none
    did: the spliced database audio). ``fallback_alpha`` / ``fallback_beta`` are the weights of the
    composite of a candidate from retrieval's fallback pass (``Candidate.fallback``): its composite
    is ``fallback_alpha x relevance + fallback_beta x coherence``, not the round's alpha and beta.
    ``playback`` holds each way the rater's players played the candidates during the round
    (True: loudness-matched, False: as rendered; :meth:`played`), what each ratings row records.
    """

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
    output: dict = field(default_factory=dict)
    timbre: TimbreChoice | None = None
    figures: Future | None = None
    fallback_alpha: float = math.nan
    fallback_beta: float = math.nan
    playback: set[bool] = field(default_factory=set)
    created: float = field(default_factory=time.time)
    submission_id: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def k(self) -> int:
        return len(self.shown)

    def audio_files(self, matched: bool = False) -> list[str]:
        """WAV paths in shown order."""
        return [str(s.audio_matched if matched else s.audio) for s in self.shown]

    def weights(self, i: int) -> tuple[float, float]:
        """(alpha, beta) of the composite of the candidate shown at position ``i + 1``: the round's
        weights, or the fallback pass's for a candidate that came from it."""
        if self.shown[i].candidate.fallback:
            return self.fallback_alpha, self.fallback_beta
        return self.alpha, self.beta

    def played(self, matched: bool) -> None:
        """Record that the players now play the loudness-matched (True) or as-rendered (False) files;
        ignored once the round is rated (the log row is written)."""
        with self.lock:
            if self.submission_id is None:
                self.playback.add(bool(matched))

    def take(self, position: object) -> Path:
        """The zip of the candidate shown at ``position`` as a take (mix, stems, MIDI;
        :mod:`ensemble.listening.take`), made once, in the round's folder.

        Raises:
            EnsembleError: ``position`` is not one of 1..K; the round is blind and not rated yet (a
                take would tell the rater which candidate is which: its file names, its scores).
        """
        pos = _as_int_or_none("position", position)
        if pos is None or not 1 <= pos <= self.k:
            raise EnsembleError(f"position {position!r}; allowed: a shown position 1..{self.k}")
        if self.blind and self.submission_id is None:
            raise EnsembleError("the takes of a blind round can be downloaded once you have submitted "
                                "your ranking")
        s = self.shown[pos - 1]
        if s.take_sources is None:
            raise EnsembleError(f"candidate {pos} has no take (its stems were not kept)")
        try:
            sources = s.take_sources.result()  # written in the background since the round was made
        except (EnsembleError, OSError, ValueError) as exc:
            raise EnsembleError(f"candidate {pos}'s take could not be prepared: {exc}") from None
        path = self.folder / f"take_candidate{pos}.zip"
        with self.lock:  # one writer per round; a second request gets the finished file
            if not path.exists():
                alpha, beta = self.weights(pos - 1)
                write_take_zip(path, mix=s.audio, sources=sources,
                               about={"round_id": self.round_id, "position": pos,
                                      "candidate": {**s.scores(), "composite_alpha": alpha,
                                                    "composite_beta": beta},
                                      "output": dict(self.output),
                                      "timbre": None if self.timbre is None else self.timbre.summary()})
        return path

    def figures_ready(self, timeout: float = 120.0) -> None:
        """Wait until the cards and the overview are on disk (a blind round draws them after it is
        answered, while the rater listens; an open round has them already).

        Raises:
            EnsembleError: the drawing failed or did not finish within ``timeout`` seconds.
        """
        if self.figures is None:
            return
        try:
            self.figures.result(timeout=timeout)
        except TimeoutError:
            raise EnsembleError(f"the round's figures are not drawn yet after {timeout:g} s") from None
        except (EnsembleError, OSError, ValueError, RuntimeError) as exc:
            raise EnsembleError(f"the round's figures could not be drawn: {exc}") from None

    def loudness_matched(self) -> bool | str | None:
        """What the ratings log records: True / False when one way was played throughout, "mixed"
        when the rater switched, None when nothing was recorded."""
        if len(self.playback) > 1:
            return "mixed"
        return next(iter(self.playback)) if self.playback else None

    def public(self, *, reveal: bool | None = None) -> dict:
        """JSON for the API: what the rater may know (scores only when not blind or revealed)."""
        reveal = (not self.blind or self.submission_id is not None) if reveal is None else reveal
        cands = []
        for s in self.shown:
            item = {"position": s.position, "file": s.audio.name, "file_matched": s.audio_matched.name,
                    "matched_gain_db": round(s.matched_gain_db, 2)}
            if reveal:
                item.update(s.scores())
                item["composite_alpha"], item["composite_beta"] = self.weights(s.position - 1)
            cands.append(item)
        return {"round_id": self.round_id, "k": self.k, "blind": self.blind,
                "input_seconds": round(self.input_seconds, 3), "target_seconds": self.target_seconds,
                "alpha": self.alpha, "beta": self.beta, "notes": list(self.notes),
                "output": dict(self.output),
                "timbre": None if self.timbre is None else self.timbre.summary(),
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
            model_version=self.model_version, database_version=self.database_version,
            timbre="" if self.timbre is None else self.timbre.name,
            loudness_matched=self.loudness_matched(),
            weights=self.shown[0].candidate.weights if self.shown else "")  # one ranking per round


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


def _segment_features(ext: Extension | LeadersReady, i: int, features: FeatureConfig) -> SegmentFeatures:
    """The i-th candidate's continuation: its controls' pitch (as the extension rendered it), audio as joined."""
    cont = ext.continuations[i]
    seg = ext.leaders[i][len(ext.input_audio) - ext.crossfade:]  # from the crossfade's start
    return SegmentFeatures.from_audio(seg, f0_hz=cont.f0_hz, voiced=cont.voiced, config=features,
                                      label="", f0_method="stored")


def _opaque_name(suffix: str) -> str:
    return f"{secrets.token_hex(8)}{suffix}"


Progress = Callable[[float, str], None]


def _shown_order(k: int, blind: bool) -> tuple[int | None, list[int]]:
    """(shuffle seed, composite indices in shown order): shuffled by a fresh seed when blind."""
    if not blind:
        return None, list(range(k))
    shuffle_seed = secrets.randbits(63)
    return shuffle_seed, [int(i) for i in np.random.default_rng(shuffle_seed).permutation(k)]


def _heard(analysis: CandidateAnalysis, c: Candidate) -> CandidateAnalysis:
    """``analysis`` (drawn from the stored controls) with the seam numbers the listener hears: the
    candidate's own, measured by :func:`ensemble.extend.extend` on the rendered audio, so a figure's
    legend says what the card, the API and the ratings log say. Only the jumps are known there: the
    levels on either side are left unknown (None / NaN)."""
    pitch = _none_if_nan(c.seam_pitch_jump_cents)
    loud = _none_if_nan(c.seam_loudness_jump_db)
    seam = SeamMetrics(seam_s=analysis.seam.seam_s, crossfade_s=analysis.seam.crossfade_s,
                       pitch_before_hz=None, pitch_after_hz=None, pitch_jump_cents=pitch,
                       loudness_before_db=math.nan, loudness_after_db=math.nan,
                       loudness_jump_db=math.nan if loud is None else loud, rms_jump_db=None,
                       pitch_note="" if pitch is not None else "no pitch on a side of the seam")
    return replace(analysis, seam=seam)


def _write_audio(ext: Extension, i: int, *, folder: Path, name: str, matched_name: str,
                 reference_db: float | None, subtype: str, features: FeatureConfig
                 ) -> tuple[Path, Path, float, bool]:
    """The i-th candidate's mix at the recording's rate and channels, and its loudness-matched copy
    (level measured on the 16 kHz analysis mix, peak on what is played) -> (mix, matched, gain dB,
    whether the peak ceiling cut the gain)."""
    rate, _ = native_format(ext)
    mix = native_mix(ext, i)
    mix_path = save_wav(folder / f"{name}.wav", mix, rate, subtype=subtype)
    gain, limited = match_gain_db(ext.performances[i].mix, reference_db, features=features, played=mix)
    matched = save_wav(folder / f"{matched_name}.wav", mix * np.float32(10.0 ** (gain / 20.0)), rate,
                       subtype=subtype)
    return mix_path, matched, gain, limited


def _figure_paths(folder: Path, k: int) -> tuple[list[Path], Path]:
    """Where a round's figures go (opaque names, fixed before they are drawn) -> (cards, overview)."""
    return [folder / _opaque_name(".png") for _ in range(k)], folder / _opaque_name(".png")


def _draw(ready: LeadersReady, order: list[int], input_analysis: Analysis, *, cards: list[Path],
          overview: Path, features: FeatureConfig, pause: Callable[[], object] | None = None) -> float:
    """Every candidate's card in shown order (into ``cards``) and the overview (into ``overview``),
    from the leaders alone -> seconds spent drawing (``pause()``, called before each figure, not
    counted: background drawing gives way to requests there)."""
    waited = 0.0

    def give_way() -> None:
        nonlocal waited
        if pause is not None:
            w = time.perf_counter()
            pause()
            waited += time.perf_counter() - w

    t = time.perf_counter()
    give_way()
    k = len(order)
    xfade_s = ready.crossfade / ready.sample_rate
    sheet = CandidateSheet(input_analysis, [
        _heard(candidate_analysis(input_analysis, _segment_features(ready, i, features),
                                  crossfade_s=xfade_s, label=""), ready.candidates[i]) for i in order])
    for pos, path in enumerate(cards, start=1):
        give_way()
        atomic_write_bytes(path, sheet.card(pos - 1, label=f"#{pos} candidate {pos}",
                                            title=f"Candidate {pos}: melody and loudness, seam marked"))
    give_way()
    atomic_write_bytes(overview, sheet.overview(title=f"All {k} candidates (numbered as shown)"))
    return time.perf_counter() - t - waited


def _lowest_priority() -> None:
    """Run the calling thread at the lowest CPU priority (Linux: nice is per thread), so background
    work (a round's take sources) never slows the next request; a no-op where unsupported."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


class Foreground:
    """The requests in progress, so that a round's background work (a blind round's figures, the
    takes' stems and MIDI) gives way to them: it runs once the server has been idle for ``settle_s``
    (a request's answer includes the client fetching its files), and at the latest ``max_wait_s``
    after its round was answered, so a server that is never idle still finishes every round's work
    in bounded time (and holds no growing backlog). Each piece of background work asks again
    (:meth:`give_way`), so a request that arrives meanwhile waits for one piece at most.

    The background work holds Python's GIL while it draws, and a nice level does not share that: only
    not running at the same time keeps it from slowing the next request.

    Args:
        settle_s: idle time before background work runs, s.
        max_wait_s: the longest one piece waits, s.
    """

    def __init__(self, *, settle_s: float = 1.0, max_wait_s: float = 10.0) -> None:
        if not (0.0 <= settle_s <= max_wait_s):
            raise EnsembleError(f"Foreground settle_s {settle_s!r}, max_wait_s {max_wait_s!r}; allowed: "
                                "0 <= settle_s <= max_wait_s")
        self.settle_s, self.max_wait_s = float(settle_s), float(max_wait_s)
        self._active = 0
        self._idle_since = time.monotonic()
        self._cond = threading.Condition()

    @contextmanager
    def request(self) -> Iterator[None]:
        """Mark a request in progress for the ``with`` block."""
        with self._cond:
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if not self._active:
                    self._idle_since = time.monotonic()
                    self._cond.notify_all()

    def busy(self) -> bool:
        """Whether a request is in progress or ended less than ``settle_s`` ago."""
        with self._cond:
            return self._active > 0 or time.monotonic() - self._idle_since < self.settle_s

    def give_way(self, until: float | None = None) -> float:
        """Wait until the server has been idle ``settle_s``, or until ``until`` (a ``time.monotonic()``
        time; default ``max_wait_s`` from now) -> seconds waited."""
        t0 = time.monotonic()
        until = t0 + self.max_wait_s if until is None else until
        with self._cond:
            while True:
                now = time.monotonic()
                left = until - now
                if left <= 0:
                    break
                if self._active:
                    self._cond.wait(timeout=left)
                    continue
                settle = self.settle_s - (now - self._idle_since)
                if settle <= 0:
                    break
                self._cond.wait(timeout=min(settle, left))
        return time.monotonic() - t0


def _after(pause: Callable[[], object], fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` once ``pause()`` returns (background work that gives way first)."""
    pause()
    return fn(*args, **kwargs)


def _present(ext: Extension, order: list[int], drawing: Future | Callable[[], float], *, folder: Path,
             blind: bool, subtype: str, features: FeatureConfig, progress: Progress,
             pause: Callable[[], object]) -> tuple[list[Shown], Future, float | None]:
    """Every candidate's audio in shown order, joined with its figure.

    ``drawing`` is either a :func:`_draw` running since the leaders were ready (an open round: its
    figures are shown with it, so they are waited for) or, for a blind round, the drawing itself,
    which then runs after the audio on the round's background thread, at the lowest priority (a
    blind round's figures stay hidden until the rater submits, :meth:`Round.figures_ready`). Each
    piece of background work first calls ``pause()`` (:meth:`Foreground.give_way`).
    -> (the shown candidates, the drawing's future, seconds it took when waited for, else None)."""
    k = len(order)
    reference_db = integrated_loudness_db(ext.input_audio, features=features)
    names = [(_opaque_name(""), _opaque_name("")) if blind else
             (f"candidate{pos:02d}_rank{ext.candidates[i].rank:02d}",
              f"candidate{pos:02d}_rank{ext.candidates[i].rank:02d}_matched")
             for pos, i in enumerate(order, start=1)]
    written = []
    for pos, (i, (name, matched_name)) in enumerate(zip(order, names, strict=True), start=1):
        written.append(_write_audio(ext, i, folder=folder, name=name, matched_name=matched_name,
                                    reference_db=reference_db, subtype=subtype, features=features))
        progress(pos / (k + 1), f"wrote candidate {pos} of {k}")
    drawn_s = drawing.result() if isinstance(drawing, Future) else None
    # after the round is answered, one thread per round: a blind round's figures, then what the
    # takes add (stems, MIDI)
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="round-background",
                                    initializer=_lowest_priority)
    figures = drawing if isinstance(drawing, Future) else background.submit(drawing)
    sources = [background.submit(_after, pause, write_take_sources, ext.performances[i],
                                 folder / _opaque_name(""), features=features) for i in order]
    background.shutdown(wait=False)
    return [Shown(position=pos, candidate=ext.candidates[i], audio=mix, audio_matched=matched,
                  matched_gain_db=gain, matched_limited=limited, figure=Path(), notes=list(
                      ext.performances[i].info.get("notes", [])), take_sources=src)
            for pos, (i, (mix, matched, gain, limited), src) in enumerate(
                zip(order, written, sources, strict=True), start=1)], figures, drawn_s


def make_round(engine: Engine, clip: LoadedAudio, settings: Settings, *, folder: Path,
               input_analysis: Analysis | None = None, report_png: Path | None = None,
               rater_id: str = "", session_id: str = "", progress: Progress | None = None,
               round_id: str | None = None, foreground: Foreground | None = None) -> Round:
    """Run one request and write its files into ``folder`` (created; left to the caller on failure).

    Args:
        engine: the loaded models and database.
        clip: the input from :func:`ensemble.listening.settings.read_clip`; with ``clip.original``
            (``keep_original=True``) the candidates are played at the recording's own rate and
            channels, else at 16 kHz mono.
        settings: from :func:`ensemble.listening.settings.check_settings`.
        folder: a fresh folder for this round's files.
        input_analysis, report_png: the input's analysis and report card when already made.
        rater_id, session_id: who asked (for the log).
        progress: ``progress(fraction, message)``; fraction 0..1 of this function's work.
        foreground: the server's requests in progress: the round's background work gives way to
            them (None: it runs at once, at the lowest CPU priority).

    Raises:
        EnsembleError: whatever :func:`ensemble.extend.extend` rejects (target, K, lookbacks, ...).
    """
    report = progress or (lambda f, m: None)
    features = engine.config.features
    timings: dict[str, float] = {}
    folder.mkdir(parents=True, exist_ok=True)
    audio = clip.audio
    t = time.perf_counter()
    if input_analysis is None:
        input_analysis = analyse_input(audio, features=features)
    if report_png is None:
        report_png = write_figure(report_card(input_analysis, title="Your clip"),
                                  folder / _opaque_name(".png"))
    timings["input_report"] = time.perf_counter() - t

    original = None if clip.original is None else (clip.original, clip.source_sample_rate)
    drawn: dict = {}
    cards, overview = _figure_paths(folder, settings.k)
    deadline: list[float] = []  # the round's background work runs by then (set when it is answered)

    def pause() -> None:
        if foreground is not None:
            foreground.give_way(until=deadline[0] if deadline else None)

    # the figures need only the leaders. An open round shows them with its audio: one worker draws
    # them while the band plays (the pool's exit waits for it, so a failed request never leaves it
    # writing into the folder). A blind round keeps them hidden until it is rated: they are drawn
    # after the round is answered, on its background thread (``_present``)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="round-figures") as pool:
        def on_leaders(ready: LeadersReady) -> None:
            drawn["order"] = _shown_order(len(ready.candidates), settings.blind)
            order = drawn["order"][1]
            del cards[len(order):]
            job = partial(_draw, ready, order, input_analysis, cards=cards, overview=overview,
                          features=features, pause=pause if settings.blind else None)
            drawn["figures"] = job if settings.blind else pool.submit(job)

        ext = extend(engine, audio, settings.request(), progress=lambda f, m: report(0.85 * f, m),
                     original=original, on_leaders=on_leaders)
        timings.update({f"extend_{k}": v for k, v in ext.timings.items()})
        shuffle_seed, order = drawn["order"]

        t = time.perf_counter()
        report(0.86, "writing the candidates' audio")
        if foreground is not None:
            deadline.append(time.monotonic() + foreground.max_wait_s)
        shown, figures, drawn_s = _present(
            ext, order, drawn["figures"], folder=folder, blind=settings.blind, subtype=clip.output_subtype,
            features=features, progress=lambda f, m: report(0.86 + 0.13 * f, m), pause=pause)
        if drawn_s is not None:
            timings["figures_drawn_beside"] = drawn_s
        timings["figures_and_audio"] = time.perf_counter() - t
    shown = [replace(s, figure=path) for s, path in zip(shown, cards, strict=True)]
    rate, channels = native_format(ext)
    cfg = engine.db.config
    req = settings.request()
    report(1.0, "done")
    return Round(
        round_id=round_id or uuid.uuid4().hex, session_id=session_id, rater_id=sanitize_rater_id(rater_id),
        folder=folder, input_sha256=audio_sha256(audio), input_seconds=len(audio) / ext.sample_rate,
        target_seconds=float(settings.target_seconds),
        alpha=float(cfg.alpha if req.alpha is None else req.alpha),
        beta=float(cfg.beta if req.beta is None else req.beta), blind=settings.blind,
        shuffle_seed=shuffle_seed, shown=shown, report_card=report_png, overview=overview, figures=figures,
        notes=list(ext.notes), timings=timings, model_version=str(ext.versions.get("model", "")),
        database_version=str(ext.versions.get("database", "")), timbre=ext.timbre,
        fallback_alpha=float(cfg.fallback_alpha), fallback_beta=float(cfg.fallback_beta),
        output={"sample_rate": rate, "channels": channels, "subtype": clip.output_subtype,
                "analysis_sample_rate": ext.sample_rate})
