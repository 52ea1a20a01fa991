"""Extend a user's clip: retrieve Top-K continuations as controls, conform them to the input, render
them in one batch, and perform the input and each continuation as one band across the seam.

:class:`Engine` holds everything loaded once (the leader decoder for embeddings and rendering, the
RAG database, the performer); :func:`extend` serves one request; :mod:`ensemble.outputs` writes it.

One request, in order:

1. the input is planned once by the performer (:meth:`~ensemble.perform.Performer.plan_input`:
   YIN f0, loudness, chroma, onsets, beats, key, drum loop, harmony); retrieval reads the same
   analysis (:func:`ensemble.rag.analyze_query`: one GRU pass over the level-normalised controls);
2. :func:`ensemble.rag.retrieve` picks the Top-K, each at the key shift, octave and stretch that
   fit the input, among segments that can be played to the end;
3. :func:`ensemble.conform.conform` turns each segment's stored controls into what the continuation
   plays (key and register, tempo and beat phase, level); the leader decoder renders all K in one
   batch; each is brought to the input's level as heard (:func:`ensemble.conform.level_gain_db`)
   and joined to the input with an equal-power crossfade;
4. the seam pitch and loudness jumps are measured on the rendered leader
   (:func:`ensemble.metrics.seam_metrics`) and replace retrieval's prediction on each candidate;
   ``on_leaders`` hands the leaders to the caller here (a round draws its figures while the band
   plays);
5. :meth:`~ensemble.perform.Performer.perform_extension` performs them with one band: the input's
   plan (grid, drum loop and bar phase, key) is shared by all K; only the continuation part is
   planned per candidate, and the Bass and Keys decoders render all K continuations in one batch.

``render="splice"`` (a comparison mode, off by default) plays the database's own audio instead,
unconformed, for databases built with ``--keep-audio``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ensemble.colour import apply_filter, colour_match
from ensemble.conform import (
    Continuation,
    ContinuityConfig,
    conform,
    continuity_cost,
    key_reference,
    level_gain_db,
    note_profile,
    opening_sound_db,
)
from ensemble.dsp import crossfade
from ensemble.engine import Engine
from ensemble.errors import EnsembleError
from ensemble.metrics import MetricsConfig, analyze_clip, seam_metrics
from ensemble.models.decoder import LOUDNESS_FLOOR_DB, parallel_controls, parallel_render
from ensemble.perform import Performance, Performer, parse_followers
from ensemble.rag import RANKINGS, Candidate, Query, RagDatabase, analyze_query, retrieve, segment_audio
from ensemble.timbre import TimbreChoice, check_timbre, choose_timbre

__all__ = ["ExtendRequest", "Continuation", "Extension", "LeadersReady", "extend", "RENDERS", "measure_seam",
           "render_controls"]

RENDERS = ("controls", "splice")


@dataclass(frozen=True)
class ExtendRequest:
    """One request's settings (validated by :func:`extend`).

    Attributes:
        seconds: target length (input + continuation), s.
        k: candidates.
        alpha, beta: weights of relevance and coherence (None: the database's).
        lookbacks: a subset of the database's lookbacks (None: all).
        transpose: let retrieval shift candidates into the input's key (-6..+6 semitones; octaves
            always follow the input's register when conforming).
        followers: the band.
        seed: decoder noise, drum variety and the random ranking.
        ranking: "composite" or "random" (the naive baseline: K playable segments at random).
        conform: conform key, register, tempo, beat phase and level to the input (False: play the
            stored controls as they are -- a baseline).
        render: "controls" (render the conformed controls with the leader decoder) or "splice"
            (the database's audio, unconformed; a comparison mode for databases with audio).
        match_colour: give the rendered continuations the input's long-term spectral colour
            (:mod:`ensemble.colour`; only when conforming a pitched input).
        timbre: "auto" (inferred from the input, :mod:`ensemble.timbre`), "guitar" (BabyBand's
            guitar decoder, the previous sound) or one of ``engine.timbres`` (controls render only).
        continuity: keep, of a larger pool the composite proposes, the K candidates whose first
            seconds go on playing as the input's last (notes a second and register,
            :func:`ensemble.conform.continuity_cost`; composite ranking of a conformed controls
            render only). False: the composite's Top-K as they are.
    """

    seconds: float = 30.0
    k: int = 10
    alpha: float | None = None
    beta: float | None = None
    lookbacks: tuple[float, ...] | None = None
    transpose: bool = True
    followers: tuple[str, ...] = ("Bass", "Drums", "Keys")
    seed: int = 0
    ranking: str = "composite"
    conform: bool = True
    render: str = "controls"
    match_colour: bool = True
    timbre: str = "auto"
    continuity: bool = True


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
    timbre: TimbreChoice | None = None  # what rendered the continuations (None: spliced audio)

    @property
    def input_seconds(self) -> float:
        return len(self.input_audio) / self.sample_rate

    @property
    def seam_seconds(self) -> float:
        """Where the crossfade starts: the continuation's first sample, s."""
        return (len(self.input_audio) - self.crossfade) / self.sample_rate

    @property
    def output_seconds(self) -> float:
        return (len(self.performances[0].mix) / self.sample_rate) if self.performances else 0.0

    def results(self) -> dict:
        return {"input_seconds": round(self.input_seconds, 3), "target_seconds": self.request.seconds,
                "k": self.request.k, "request": {**self.request.__dict__,
                                                 "lookbacks": list(self.request.lookbacks or [])},
                "notes": self.notes, "query_lookbacks_used": list(self.query.lookbacks_used),
                "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
                "versions": self.versions,
                "timbre": None if self.timbre is None else self.timbre.summary(),
                "candidates": [c.to_dict() for c in self.candidates]}


@dataclass(frozen=True)
class LeadersReady:
    """What :func:`extend` knows once the leaders are rendered, before the band plays (the fields
    of :class:`Extension` of the same names; the candidates' seams already measured)."""

    input_audio: np.ndarray
    candidates: list[Candidate]
    continuations: list[Continuation]
    leaders: list[np.ndarray]
    crossfade: int
    sample_rate: int


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
    if req.ranking not in RANKINGS:
        raise EnsembleError(f"ranking {req.ranking!r}; allowed: {list(RANKINGS)}")
    if req.render not in RENDERS:
        raise EnsembleError(f"render {req.render!r}; allowed: {list(RENDERS)}")
    if req.render == "splice" and not db.has_audio:
        raise EnsembleError(f"render 'splice' needs a database that keeps its audio; {str(db.root)!r} was "
                            "built without it (`python -m ensemble index build --keep-audio`)")
    timbre = check_timbre(req.timbre, engine.timbres)
    return audio, replace(req, lookbacks=lookbacks, followers=parse_followers(req.followers), timbre=timbre)


def _lookback_mask(db: RagDatabase, lookbacks: tuple[float, ...] | None) -> np.ndarray | None:
    if not lookbacks:
        return None
    return np.array([any(abs(L - x) < 1e-6 for x in lookbacks) for L in db.config.lookbacks])


@torch.inference_mode()
def render_controls(engine: Engine, controls: list[tuple[np.ndarray, np.ndarray]], n_samples: int, seed: int,
            choice: TimbreChoice, preroll: list[tuple[np.ndarray, np.ndarray]] | None = None,
            start_frame: int = 0) -> np.ndarray:
    """[K, n_samples] every (f0 [T] Hz, loudness [T] dB) rendered in one batch in ``choice``'s timbre.

    ``preroll``: per row, (f0 [P], loudness [P]) rendered first and cut off: the decoder reaches the
    row's first frame in the state the user's own playing left it, not from a cold start.
    ``start_frame``: the decoder runs over every frame, but only the frames from this one on are
    synthesised (-> [K, n_samples - start_frame x hop]): for a caller that needs the sound of the
    rows' later part only (the synth, not the GRU, is most of a short batch's time).
    """
    hop = engine.config.features.hop_length
    P = 0 if preroll is None else len(preroll[0][0])
    if P:
        controls = [(np.concatenate([pf, f]), np.concatenate([pl, x]))
                    for (f, x), (pf, pl) in zip(controls, preroll, strict=True)]
    f0 = torch.from_numpy(np.stack([f for f, _ in controls]).astype(np.float32))[..., None]
    # the timbre decoder hears the controls as if the clip were recorded at its training level
    ld = np.maximum(np.stack([x for _, x in controls]) + np.float32(choice.level_offset_db), LOUDNESS_FLOOR_DB)
    ld = torch.from_numpy(ld.astype(np.float32))[..., None]
    dec = engine.leader_renderer if choice.index is None else engine.timbre_renderer
    workers = min(2, os.cpu_count() or 1)
    ctl = parallel_controls(dec, f0, ld, workers=workers, timbre=choice.index)
    if start_frame:  # rows split over the cores for the synth as well
        ctl = {k: v[:, P + start_frame:] for k, v in ctl.items()}  # every control is [B, T, ...]
        out = parallel_render(dec, ctl, n_samples=n_samples - start_frame * hop, seed=seed, workers=workers)
    else:
        out = dec.render(ctl, n_samples=n_samples + P * hop,
                         generator=torch.Generator().manual_seed(seed))[:, P * hop:]
    # ... and what it plays is brought back to the user's level
    out = out * (10.0 ** (-choice.level_offset_db / 20.0))
    return out.numpy().astype(np.float32)


def _frames_before(f0_hz: np.ndarray, voiced: np.ndarray, loud_db: np.ndarray, end_frame: int,
                   n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` frames of controls before ``end_frame`` (f0 0 where unvoiced), silence-padded at the start
    (all silence when ``end_frame`` <= 0: before the clip began)."""
    end_frame = max(0, end_frame)
    lo = max(0, end_frame - n)
    f0 = np.where(voiced[lo:end_frame], f0_hz[lo:end_frame], 0.0)
    ld = loud_db[lo:end_frame]
    pad = n - len(f0)
    return (np.pad(f0, (pad, 0)).astype(np.float32),
            np.pad(ld, (pad, 0), constant_values=LOUDNESS_FLOOR_DB).astype(np.float32))


def _own_passage(audio: np.ndarray, f0_hz: np.ndarray, voiced: np.ndarray, loud_db: np.ndarray,
                 end_sample: int, frames: int, n_samples: int, hop: int):
    """The input's last passage before ``end_sample`` that is ``frames`` frames long, and its controls.

    Returns:
        (audio [n_samples], (f0 [frames] Hz, 0 unvoiced; loudness [frames] dB)), or None when the
        input is shorter than the passage.
    """
    first = end_sample // hop - frames
    if first < 0 or first * hop + n_samples > len(audio):
        return None
    sl = slice(first, first + frames)
    f0 = np.where(voiced[sl], f0_hz[sl], 0.0)
    return audio[first * hop:first * hop + n_samples], (f0, loud_db[sl])


def measure_seam(leader: np.ndarray, seam_s: float, crossfade_s: float, *, sample_rate: int,
                 config: MetricsConfig = MetricsConfig()) -> tuple[float | None, float]:
    """The seam's (pitch jump in cents, loudness jump in dB) measured on a rendered leader.

    The project's one seam measure, on what the listener hears: :func:`ensemble.metrics.seam_metrics`
    (fast YIN) on the leader's 2 s either side of the seam. Signed, after minus before: +200 cents =
    a whole tone up, +3 dB = louder. The pitch jump is None when a side has no voiced frame.
    """
    a = max(0, int((seam_s - 2.0) * sample_rate))
    b = min(len(leader), int((seam_s + 2.0) * sample_rate))
    an = analyze_clip(np.ascontiguousarray(leader[a:b]), config=config, f0_method="yin", cache=None)
    sm = seam_metrics(an, seam_s - a / sample_rate, crossfade_s=crossfade_s, config=config)
    pj = None if sm.pitch_jump_cents is None else round(float(sm.pitch_jump_cents), 2)
    return pj, round(float(sm.loudness_jump_db), 3)


def _opening_sounds(engine: Engine, continuations: list[Continuation], ctl, end_frame: int, skip: int,
                    choice: TimbreChoice, seed: int, config: ContinuityConfig) -> list[float]:
    """Per continuation, :func:`ensemble.conform.opening_sound_db` of its first ``window_seconds``
    (after the ``skip`` crossfade frames, played as the final rendering plays them: the user's own
    controls there, the same pre-roll) against the input's own last ``window_seconds``, both rendered
    in ``choice``'s timbre in one batch. Rendering against rendering: the colour match, one fixed
    filter for every row, would move both sides alike, so it is left out."""
    hop, sr = engine.config.features.hop_length, engine.sample_rate
    # the window, or what a short continuation has of it after the crossfade
    n = min(skip + int(round(config.window_seconds * sr / hop)), min(len(k.f0_hz) for k in continuations))
    w = n - skip
    P = int(round(engine.config.timbre.preroll_seconds * sr / hop))
    own_f0, own_ld = _frames_before(*ctl, end_frame + skip, skip)
    rows = [(np.concatenate([own_f0, k.f0_hz[skip:n]]), np.concatenate([own_ld, k.loudness_db[skip:n]]))
            for k in continuations]
    rows.append(_frames_before(*ctl, end_frame, n))  # the input's own last seconds
    preroll = [_frames_before(*ctl, end_frame, P)] * len(continuations) + [_frames_before(*ctl, end_frame - n, P)]
    # only the compared window is synthesised (the reference's last w frames = its frames n - w..n)
    out = render_controls(engine, rows, n * hop, seed, choice, preroll if P else None, start_frame=n - w)
    return [opening_sound_db(y, out[-1], sample_rate=sr, config=config) for y in out[:-1]]


def _by_continuity(cands: list[Candidate], continuations: list[Continuation], feats, end_frame: int,
                   skip: int, k: int, fps: float, config: ContinuityConfig, sounds: list[float] | None = None
                   ) -> tuple[list[Candidate], list[Continuation]]:
    """The ``k`` of the pool whose first ``window_seconds`` (after the ``skip`` crossfade frames,
    which play the user's own controls) continue the input's last best, lowest cost first; equal
    costs keep the composite's order. Candidates of retrieval's fallback pass come after every
    strict one (kept only when fewer than ``k`` strict ones are in the pool). ``sounds``: per
    candidate, its rendered opening's distance in colour from the input's (:func:`_opening_sounds`).
    Each keeps its pool rank and cost in its continuation, and its ``rank`` becomes its place in the
    new order."""
    w = int(round(config.window_seconds * fps))
    a = max(0, end_frame - w)
    inp = note_profile(feats.f0_hz[a:end_frame], feats.voiced[a:end_frame], fps=fps, config=config)
    # the key as a chromagram hears it: the input's own mean chroma (up to the crossfade) against the
    # chroma the whole continuation's notes give in the user's instrument
    chroma = None if feats.chroma is None else feats.chroma[:, :end_frame]
    key = key_reference(feats.f0_hz[:end_frame], feats.voiced[:end_frame], feats.loudness_db[:end_frame], chroma)
    scored = []
    for i, k_ in enumerate(continuations):
        prof = note_profile(k_.f0_hz[skip:skip + w], k_.voiced[skip:skip + w], fps=fps, config=config)
        sound = None if sounds is None else sounds[i]
        key_r = key.correlation(k_.f0_hz[skip:], k_.voiced[skip:], k_.loudness_db[skip:])
        scored.append((continuity_cost(prof, inp, config, sound_db=sound, key_r=key_r), i, prof, sound, key_r))
    # a candidate of retrieval's fallback pass (no dynamics or coherence floor) is kept only when
    # fewer than k of the strict pass are in the pool: continuity orders within retrieval's floor
    keep = sorted(scored, key=lambda x: (cands[x[1]].fallback, x[0], x[1]))[:k]
    out_c, out_k = [], []
    for new_rank, (cost, i, prof, sound, key_r) in enumerate(keep, start=1):
        out_c.append(replace(cands[i], rank=new_rank))
        out_k.append(replace(continuations[i], pool_rank=cands[i].rank, continuity_cost=round(cost, 4),
                             notes_per_second=round(prof[0], 3), register_midi=round(prof[1], 2),
                             input_notes_per_second=round(inp[0], 3), input_register_midi=round(inp[1], 2),
                             opening_sound_db=None if sound is None or not math.isfinite(sound)
                             else round(sound, 3),
                             key_correlation=None if not math.isfinite(key_r) else round(key_r, 4)))
    return out_c, out_k


def extend(engine: Engine, audio: np.ndarray, request: ExtendRequest = ExtendRequest(), *,
           progress: Callable[[float, str], None] | None = None,
           original: tuple[np.ndarray, int] | None = None,
           on_leaders: Callable[[LeadersReady], None] | None = None) -> Extension:
    """Retrieve, conform, render and perform Top-K continuations of ``audio`` ([n] float32, 16 kHz).

    Args:
        progress: called as ``progress(fraction, message)`` per stage.
        original: the user's recording as uploaded, ([n_src, channels] float32, Hz), kept for
            native-rate outputs (:mod:`ensemble.outputs`).
        on_leaders: called once the leaders are rendered and their seams measured, before the
            band plays (:class:`LeadersReady`); it must return at once (start a thread for work
            that runs beside the performing, e.g. the candidates' figures).

    Raises:
        EnsembleError: target <= input length, silent or too short input, bad K/alpha/beta/lookbacks,
            ranking or render.
    """
    report = progress or (lambda f, m: None)
    audio, req = _validate(audio, request, engine)
    sr = engine.sample_rate
    db = engine.db
    timings: dict[str, float] = {}
    notes: list[str] = []
    performer = engine.performer
    if req.followers != performer.config.followers:
        performer = Performer(performer.arranger, performer.decoders, performer.drum_db,
                              replace(performer.config, followers=req.followers), versions=performer.versions,
                              features=performer.features)

    t = time.perf_counter()
    report(0.02, "analysing the input")
    if float(np.max(np.abs(audio))) < 10 ** (-70 / 20):
        raise EnsembleError("input is silent (peak below -70 dBFS): nothing to continue")
    if len(audio) / sr < db.config.min_input_seconds:
        raise EnsembleError(f"input is {len(audio) / sr:.2f} s long; allowed: at least "
                            f"{db.config.min_input_seconds:g} s")
    plan = performer.plan_input(audio, seed=req.seed)
    a = plan.analysis
    tempo = a.beats.tempo_bpm if a.beats.source == "tracked" else float("nan")
    xfade = max(1, int(round(db.config.crossfade_seconds * sr)))
    s0 = len(audio) - xfade  # the continuation's first sample
    q = analyze_query(audio, db, engine.leader, f0_hz=a.features.f0_hz, voiced=a.features.voiced,
                      loud_db=a.features.loudness_db, tempo_bpm=tempo, grid_s=a.beats.times_s - s0 / sr)
    notes += list(q.notes)
    if not math.isfinite(tempo):
        notes.append("no steady beat was found in the input: continuations keep their own tempo")
    timings["query_analysis"] = time.perf_counter() - t

    choice = None
    hop = engine.config.features.hop_length
    if req.render == "controls":
        t = time.perf_counter()
        report(0.08, "hearing which instrument you play")
        choice = choose_timbre(engine.timbre_renderer, req.timbre, audio=audio, f0_hz=a.features.f0_hz,
                               voiced=a.features.voiced, loudness_db=a.features.loudness_db, end_sample=s0,
                               hop=hop, sample_rate=sr, config=engine.config.timbre, seed=req.seed,
                               workers=min(2, os.cpu_count() or 1))
        if choice.note:
            notes.append(choice.note)
        timings["timbre"] = time.perf_counter() - t

    t = time.perf_counter()
    report(0.1, "retrieving candidates")
    n_cont = int(round((req.seconds - len(audio) / sr) * sr)) + xfade
    frames = n_cont // engine.config.features.hop_length + 1
    do_conform = req.conform and req.render == "controls"
    cc = engine.config.continuity
    by_continuity = do_conform and req.continuity and req.ranking == "composite" and cc.pool > 1
    pool = min(max(req.k, cc.max_pool), req.k * cc.pool) if by_continuity else req.k
    cands = retrieve(db, q, pool, alpha=req.alpha, beta=req.beta, transpose=req.transpose,
                     continuation_seconds=frames / db.fps,
                     lookback_mask=_lookback_mask(db, req.lookbacks), ranking=req.ranking,
                     conform=req.conform and req.render == "controls", seed=req.seed)
    if not cands:
        raise EnsembleError("the RAG database has no segment long enough to continue this clip to "
                            f"{req.seconds:g} s; ask for a shorter target")
    timings["retrieval"] = time.perf_counter() - t
    t = time.perf_counter()
    continuations = [conform(db, c, q, frames=frames, conform_level=do_conform) for c in cands]
    if by_continuity:
        skip = -(-xfade // hop)
        sounds = None
        if cc.sound_cost_per_db > 0 and choice is not None and a.pitched and len(cands) > req.k \
                and skip < frames:
            sounds = _opening_sounds(engine, continuations, (a.features.f0_hz, a.features.voiced,
                                                             a.features.loudness_db),
                                     s0 // hop, skip, choice, req.seed, cc)
        cands, continuations = _by_continuity(cands, continuations, a.features, s0 // hop, skip, req.k, db.fps,
                                              cc, sounds)
    if len(cands) < req.k:
        notes.append(f"only {len(cands)} playable non-overlapping segments exist for K = {req.k}")
    n_fb = sum(c.fallback for c in cands)
    if n_fb:
        found = "none" if n_fb == len(cands) else f"{len(cands) - n_fb}"
        rest = f"all {n_fb}" if n_fb == len(cands) else "the rest"
        order = (f"alpha {db.config.fallback_alpha:g}, beta {db.config.fallback_beta:g}" if engine.weights == "hand-set"
                 else f"ranked by the fitted weights {engine.weights}")
        notes.append(f"the strict pass (dynamics within {db.config.dynamics_tolerance_db:g} dB, coherence >= "
                     f"{db.config.coherence_floor:g}) found {found} of {len(cands)}: {rest} "
                     f"come from the fallback pass ({order}, no floor)")
    timings["continuity"] = time.perf_counter() - t  # conforming the pool, hearing its openings, the K kept

    t = time.perf_counter()
    report(0.14, "rendering the continuations")
    colour = None
    if req.render == "splice":
        rendered = np.stack([segment_audio(db, c.chunk, n_cont) for c in cands])
    else:
        # the overlap: the crossfade's frames play the user's own last controls, so the real audio
        # fades into a rendering of the same note (only the sound changes there, not the note)
        ctl = (a.features.f0_hz, a.features.voiced, a.features.loudness_db)
        X = min(frames - 1, -(-xfade // hop)) if do_conform else 0
        own_f0, own_ld = _frames_before(*ctl, s0 // hop + X, X)
        rows = [(np.concatenate([own_f0, k.f0_hz[X:]]), np.concatenate([own_ld, k.loudness_db[X:]]))
                for k in continuations]
        own = _own_passage(audio, a.features.f0_hz, a.features.voiced, a.features.loudness_db, s0, frames,
                           n_cont, hop) \
            if do_conform and req.match_colour and a.pitched else None
        P = int(round(engine.config.timbre.preroll_seconds * sr / hop))
        preroll = [_frames_before(*ctl, s0 // hop, P)] * len(rows)
        if own:
            preroll.append(_frames_before(*ctl, s0 // hop - frames, P))
        rendered = render_controls(engine, rows + ([own[1]] if own else []), n_cont, req.seed, choice,
                           preroll if P else None)
        if own is not None:
            # the decoder's rendering of the user's own passage: their difference is the colour
            colour = colour_match(own[0], rendered[-1], sample_rate=sr)
            rendered = apply_filter(rendered[:-1], colour)
    gains = []
    for i in range(len(cands)):
        g = level_gain_db(audio[:s0], rendered[i][xfade:], sample_rate=sr) if do_conform else 0.0
        rendered[i] *= np.float32(10.0 ** (g / 20.0))
        gains.append(round(g, 2))
    leaders = [crossfade(audio, rendered[i], xfade, kind="equal_power").astype(np.float32)
               for i in range(len(cands))]
    timings["render"] = time.perf_counter() - t

    # the seams are the leader's (what the band adds does not move them): measured before the band
    # plays, so whatever needs them can run beside the performing
    t = time.perf_counter()
    seam_s, xfade_s = (s0 + xfade / 2) / sr, xfade / sr
    measured = []
    for c, leader in zip(cands, leaders, strict=True):
        pj, lj = measure_seam(leader, seam_s, xfade_s, sample_rate=sr)
        measured.append(replace(c, seam_pitch_jump_cents=float("nan") if pj is None else pj,
                                seam_loudness_jump_db=lj))
    timings["seam_measure"] = time.perf_counter() - t
    if on_leaders is not None:
        on_leaders(LeadersReady(audio, measured, continuations, leaders, xfade, sr))

    t = time.perf_counter()
    report(0.2, "performing the continuations with the band")

    def step(fraction: float, message: str) -> None:
        report(0.2 + 0.75 * fraction, message)

    controls = None if req.render == "splice" else [(k.f0_hz, k.voiced) for k in continuations]
    performances = performer.perform_extension(plan, [leader[s0:] for leader in leaders],
                                               crossfade_samples=xfade, controls=controls,
                                               workers=min(2, os.cpu_count() or 1), progress=step)
    timings["perform"] = time.perf_counter() - t

    for perf, c, k, g in zip(performances, measured, continuations, gains, strict=True):
        perf.info["conform"] = {"transpose": c.transpose, "stretch": c.stretch,
                                "source_start_seconds": k.source_start_seconds,
                                "level_offset_db": k.level_offset_db, "level_gain_db": g,
                                "render": req.render, "conformed": do_conform,
                                "timbre": None if choice is None else choice.name,
                                "colour": None if colour is None else colour.summary(),
                                "continuity": None if k.continuity_cost is None else {
                                    "pool_rank": k.pool_rank, "cost": k.continuity_cost,
                                    "notes_per_second": k.notes_per_second, "register_midi": k.register_midi,
                                    "input_notes_per_second": k.input_notes_per_second,
                                    "input_register_midi": k.input_register_midi,
                                    "opening_sound_db": k.opening_sound_db,
                                    "key_correlation": k.key_correlation}}
    report(1.0, "done")
    versions = {"model": engine.model_version, "database": db.version, "weights": engine.weights}
    orig, orig_rate = (None, None) if original is None else (np.asarray(original[0], np.float32),
                                                             int(original[1]))
    return Extension(audio, q, measured, continuations, performances, leaders, req, notes, timings, versions,
                     crossfade=xfade, sample_rate=sr, original=orig, original_rate=orig_rate, timbre=choice)
