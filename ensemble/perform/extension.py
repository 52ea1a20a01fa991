"""One band across the seam: the input and each of its continuations performed as one performance.

A continuation is not performed on its own (its own key, tempo and drum loop would re-plan the band
at the seam). The input is planned once (:meth:`Performer.plan_input`: analysis, key, beat grid,
drum loop and bar phase, harmony) and that plan is **shared by every candidate**:

* **one beat grid**: the input's tracked beats, extrapolated through the continuation at the input's
  tempo (:func:`ensemble.beats.extend_grid`);
* **one drum loop and bar phase**: the input's loop is laid once on that grid over the longest
  output; every candidate's drums are that placement, levelled by its own arranger curve, so the
  loop runs through the seam without a jump;
* **one key and one harmony pass**: each candidate's roots are decoded over input + continuation
  (the input's key, the input's bar units), the input's own part keeping the input's plan;
* the continuation's leader is analysed from its audio (what is heard), its follower curves come
  from the arranger on the shared grid, and the Bass and Keys voices of all K continuations are
  rendered as one batch per decoder (:meth:`Performer._render_takes`).

Each follower stem of the input and of a continuation is then joined with the equal-power crossfade
of the leader and re-mixed through the soft limiter; ``perform.json`` describes the whole output
(one key, one grid, the chords of every beat).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ensemble.audio import peak_dbfs
from ensemble.beats import BeatGrid, extend_grid
from ensemble.dsp import crossfade, soft_limit
from ensemble.errors import EnsembleError
from ensemble.features import Features, analyze, loudness_db, n_frames, onset_strength, rms
from ensemble.models.decoder import LOUDNESS_FLOOR_DB, enable_fast_cpu_inference
from ensemble.perform.analysis import HarmonyPlan, LeaderAnalysis, plan_harmony
from ensemble.perform.drums import place_loop, placed_hits
from ensemble.perform.harmony import pitch_class_evidence
from ensemble.perform.rhythm import drum_grids

if TYPE_CHECKING:
    from ensemble.perform.performer import Performance, Performer, _Take

__all__ = ["InputPlan", "perform_extension"]


@dataclass
class InputPlan:
    """The input's plan, shared by every candidate (from :meth:`Performer.plan_input`).

    ``rendering`` is the input's own Bass and Keys voices, started in the background as soon as the
    plan exists: they depend on nothing retrieval decides, so they render while the candidates are
    retrieved, conformed and rendered (:func:`perform_extension` waits for them).
    """

    take: _Take
    seed: int
    rendering: Future | None = None

    def wait(self) -> None:
        """Block until the input's voices are rendered (re-raising what the render raised)."""
        if self.rendering is not None:
            self.rendering.result()

    @property
    def analysis(self) -> LeaderAnalysis:
        return self.take.analysis


def _sub_grid(times: np.ndarray, start_s: float, duration_s: float) -> np.ndarray:
    """The beats of a grid that cover [start, start + duration], relative to ``start``."""
    lo = max(0, int(np.searchsorted(times, start_s, side="right")) - 1)
    hi = min(len(times), int(np.searchsorted(times, start_s + duration_s, side="left")) + 1)
    return times[lo:hi] - start_s


def _concat_features(a: Features, a_frames: int, b: Features) -> Features:
    """The first ``a_frames`` frames of ``a`` followed by all of ``b``."""
    def cat(x, y, axis=-1):
        return np.concatenate([x[..., :a_frames], y], axis=axis)
    return Features(f0_hz=cat(a.f0_hz, b.f0_hz), voiced=cat(a.voiced, b.voiced),
                    loudness_db=cat(a.loudness_db, b.loudness_db), rms=cat(a.rms, b.rms),
                    chroma=cat(a.chroma, b.chroma), onset=cat(a.onset, b.onset), config=a.config)


def perform_extension(performer: Performer, plan: InputPlan, continuations: list[np.ndarray], *,
                      crossfade_samples: int, controls: list[tuple[np.ndarray, np.ndarray]] | None = None,
                      workers: int = 1,
                      progress: Callable[[float, str], None] | None = None) -> list[Performance]:
    """Perform input + each continuation as one performance (see the module docstring).

    Args:
        plan: the input's plan.
        continuations: per candidate, the leader's continuation [m] at 16 kHz, starting where the
            crossfade starts (``len(input) - crossfade_samples``); all of one length.
        crossfade_samples: the equal-power crossfade's length.
        controls: per continuation, the (f0 [T] Hz, voiced [T]) it was rendered from, on the
            continuation's frames: its pitch is then known, not tracked (None: fast YIN runs).

    Returns:
        Per candidate, the stitched :class:`Performance` of the whole output (the input's length
        + m - crossfade_samples samples).
    """
    from ensemble.perform.performer import _Take

    report = progress or (lambda f, m: None)
    c = performer.config
    fc = performer.features
    sr, hop = fc.sample_rate, fc.hop_length
    take_in = plan.take
    a_in = take_in.analysis
    n_in = len(take_in.audio)
    if not continuations:
        return []
    m = len(continuations[0])
    if any(len(x) != m for x in continuations) or m <= crossfade_samples:
        raise EnsembleError("continuations must all have one length, longer than the crossfade")
    s0 = n_in - crossfade_samples  # first sample of every continuation
    n_total = s0 + m
    t0 = s0 / sr
    dur_total = n_total / sr
    grid_full = extend_grid(a_in.beats.times_s, dur_total)
    tempo = a_in.beats.tempo_bpm
    beats_full = BeatGrid(grid_full, tempo, a_in.beats.source, a_in.beats.n_tracked)
    f0_frame = s0 // hop  # the continuation's frame 0 in the whole output's frames
    timings: dict[str, float] = {}

    # ---- drums: the input's loop laid once on the whole grid
    t = time.perf_counter()
    placed_full = hits_full = None
    choice = take_in.drum_choice
    if choice is not None:
        db = performer.drum_db
        grids = [g for g in drum_grids(beats_full, dur_total)
                 if abs(g.ratio - choice.grid.ratio) < 1e-9 and g.phase == choice.grid.phase]
        grid = grids[0] if grids else choice.grid
        placed_full = place_loop(db.loop(choice.index), int(db.table["beats"][choice.index]),
                                 grid.times_s, choice.lag_beats, n_samples=n_total, sample_rate=sr)
        # the same placement as events: where each of the loop's hits falls (a take's drum MIDI)
        hits_full = placed_hits(db.loop(choice.index), int(db.table["beats"][choice.index]), grid.times_s,
                                choice.lag_beats, n_samples=n_total, sample_rate=sr)
        env, _ = performer._drum_envelope(placed_full[:n_in], None if a_in.silent else
                                          _curve_of(take_in, "Drums"), a_in.n_frames)
        take_in.stems["Drums"] = placed_full[:n_in] * env
    timings["drums_shared"] = time.perf_counter() - t

    # ---- per continuation: analysis on the shared grid, curves, drums level, harmony
    cont_beats = _sub_grid(grid_full, t0, m / sr)
    if len(cont_beats) < 2:
        raise EnsembleError("the continuation is shorter than one beat of the input's grid")
    bpb, downbeat_full = _bar(performer, take_in)

    def prepare(item: tuple[int, np.ndarray]) -> tuple[_Take, LeaderAnalysis, HarmonyPlan | None]:
        i, audio = item
        enable_fast_cpu_inference()
        audio = performer._check_audio(np.asarray(audio, np.float32))
        tt = time.perf_counter()
        if controls is None:
            feats = analyze(audio, config=fc, f0_method="yin", with_chroma=False)
        else:
            f0_c, v_c = controls[i]
            T = n_frames(len(audio), fc)
            f0_c, v_c = np.asarray(f0_c[:T], np.float32), np.asarray(v_c[:T], bool)
            feats = Features(f0_hz=np.pad(f0_c, (0, T - len(f0_c))), voiced=np.pad(v_c, (0, T - len(v_c))),
                             loudness_db=loudness_db(audio, config=fc), rms=rms(audio, config=fc),
                             chroma=None, onset=onset_strength(audio, config=fc), config=fc)
        feats = replace(feats, chroma=np.zeros((12, feats.n_frames), np.float32))
        active = feats.loudness_db > c.activity_db
        voiced_fraction = float((feats.voiced & active).sum() / max(int(active.sum()), 1))
        pitched = bool(active.any()) and voiced_fraction >= c.min_voiced_fraction
        # the continuation's pitch is its controls': the f0 alone is the evidence
        evidence = pitch_class_evidence(feats.f0_hz, feats.voiced, None, active.astype(np.float64))
        analysis = LeaderAnalysis(feats, active, not bool(active.any()), round(voiced_fraction, 4), pitched,
                                  BeatGrid(cont_beats, tempo, "input grid", a_in.beats.n_tracked), evidence,
                                  a_in.key, len(audio))
        timings_i = {"analysis": time.perf_counter() - tt}
        tt = time.perf_counter()
        curves, notes = performer._curves(analysis, audio)
        timings_i["arranger"] = time.perf_counter() - tt
        take = _Take(audio=audio, seed=plan.seed + 1 + i, analysis=analysis, notes=notes, timings=timings_i,
                     stems={"Leader": audio.copy()})
        if placed_full is not None:
            tt = time.perf_counter()
            part = placed_full[s0:]
            env, target = performer._drum_envelope(part, curves.get("Drums"), analysis.n_frames)
            take.stems["Drums"], take.drum_choice, take.loud_out["Drums"] = part * env, choice, target
            timings_i["drums"] = time.perf_counter() - tt
        full_plan = None
        if any(f in c.followers for f in ("Bass", "Keys")) and (pitched or a_in.pitched):
            tt = time.perf_counter()
            whole = LeaderAnalysis(_concat_features(a_in.features, f0_frame, feats),
                                   np.concatenate([a_in.active[:f0_frame], active]), False,
                                   analysis.voiced_fraction, True, beats_full,
                                   np.concatenate([a_in.evidence[:f0_frame], evidence]), a_in.key,
                                   n_total)
            full_plan = plan_harmony(whole, performer.harmony, c, beats_per_bar=bpb, downbeat=downbeat_full)
            take.plan = _slice_plan(full_plan, f0_frame, analysis.n_frames)
            take.unit = take_in.unit
            timings_i["harmony"] = time.perf_counter() - tt
        for name in ("Bass", "Keys"):
            if name not in c.followers:
                continue
            if take.plan is None:
                take.stems[name] = np.zeros(len(audio), np.float32)
                take.loud_out[name] = np.full(analysis.n_frames, LOUDNESS_FLOOR_DB)
            elif name == "Bass":
                take.loud_out[name] = performer._bass_loudness(take.plan, curves[name])
            else:
                take.loud_out[name] = performer._keys_loudness(take.plan, curves[name])
        return take, analysis, full_plan

    renders = [(n, o) for n, o in (("Bass", 0), ("Keys", 1)) if n in c.followers]
    steps = len(continuations) + len(renders)
    enable_fast_cpu_inference()
    t = time.perf_counter()
    prepared = []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(continuations)))) as pool:
        for item in pool.map(prepare, enumerate(continuations)):
            prepared.append(item)
            report(len(prepared) / steps, f"planned {len(prepared)} of {len(continuations)} continuations")
    timings["continuations_planned"] = time.perf_counter() - t
    takes = [p[0] for p in prepared]
    plan.wait()
    input_needs = [name for name in ("Bass", "Keys") if name in c.followers and name not in take_in.stems]
    for j, (name, offset) in enumerate(renders):
        t = time.perf_counter()
        group = [t for t in takes if t.plan is not None]
        performer._render_takes(name, group, offset)
        if name in input_needs and take_in.plan is not None:
            performer._render_takes(name, [take_in], offset)
        timings[f"rendered_{name.lower()}"] = time.perf_counter() - t
        report((len(continuations) + j + 1) / steps, f"rendered {name} for {len(continuations)} continuations")
    t = time.perf_counter()
    in_perf = performer._finish(take_in)
    out = []
    for take, _, full_plan in prepared:
        cont_perf = performer._finish(take)
        out.append(replace(_join(performer, in_perf, cont_perf, crossfade_samples, beats_full, full_plan,
                                 take_in, timings), drum_hits=hits_full))
    timings["mixed"] = time.perf_counter() - t
    return out


def _curve_of(take: _Take, name: str) -> np.ndarray | None:
    return take.curves.get(name)


def _bar(performer: Performer, take: _Take) -> tuple[int | None, int]:
    """(beats per bar, index of a downbeat in the whole grid) of the input's drum loop, as
    :meth:`Performer._prepare` chose them (None: a chord per beat)."""
    choice = take.drum_choice
    c = performer.config
    if choice is not None and choice.grid.ratio == 1.0 and c.harmony_unit != "beat":
        bpb = int(performer.drum_db.table["beats_per_bar"][choice.index])
        return bpb, (-choice.lag_beats) % bpb
    return None, 0


def _slice_plan(plan: HarmonyPlan, first_frame: int, n_frames: int) -> HarmonyPlan:
    """The part of a whole-output plan that a continuation plays (its frames from ``first_frame``)."""
    sl = slice(first_frame, first_frame + n_frames)
    bass = np.zeros(n_frames, np.float32)
    keys = np.zeros((3, n_frames), np.float32)
    got = plan.bass_f0_hz[sl]
    bass[:len(got)] = got
    keys[:, :len(got)] = plan.keys_f0_hz[:, sl]
    return replace(plan, bass_f0_hz=bass, keys_f0_hz=keys, beat_frames=plan.beat_frames - first_frame)


def _join(performer: Performer, user: Performance, cont: Performance, xfade: int, beats: BeatGrid,
          full_plan: HarmonyPlan | None, take_in: _Take, timings: dict) -> Performance:
    """Join the input's performance and a continuation's, stem by stem, with the equal-power
    crossfade of the leader, then re-mix through the soft limiter (peak stays below 0 dBFS)."""
    from ensemble.perform.performer import Performance

    c = performer.config
    sr = performer.features.sample_rate
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
    mix = soft_limit(raw * np.float32(bus), threshold_db=c.limiter_threshold_db,
                     ceiling_db=c.limiter_ceiling_db).astype(np.float32)
    a_in = user.analysis
    whole = replace(a_in, beats=beats, n_samples=n)
    gains = user.info.get("gains_db", {})
    info = performer._info(whole, full_plan, take_in.unit, take_in.drum_choice, gains, 1.0, mix,
                           [*user.info.get("notes", []), *cont.info.get("notes", [])],
                           {**user.info.get("timings_s", {}), **timings}, user.info.get("seed", 0),
                           user.info.get("leader", {}).get("peak_dbfs") or peak_dbfs(user.stems["Leader"]))
    info.update({"stitched": True, "one_band": True,
                 "seam_seconds": round((len(user.mix) - xfade / 2) / sr, 3),
                 "crossfade_seconds": round(xfade / sr, 3), "bus_gain": round(bus, 4),
                 "leader_gain": round(bus * 10.0 ** (gains.get("Leader", 0.0) / 20.0), 6),
                 "peak_dbfs": round(20 * np.log10(max(float(np.max(np.abs(mix))), 1e-12)), 2),
                 "input_part": {k: user.info.get(k) for k in ("tempo_bpm", "beat_source", "key", "notes",
                                                             "timings_s")},
                 "continuation_part": {k: cont.info.get(k) for k in ("leader", "notes", "timings_s")}})
    return Performance(mix, stems, info, sr, whole, full_plan, take_in.drum_choice,
                       {k: np.concatenate([user.loudness_db.get(k, np.zeros(0)),
                                           cont.loudness_db.get(k, np.zeros(0))]) for k in cont.loudness_db})
