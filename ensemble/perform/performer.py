"""The performer: a leader clip in, a band arrangement (leader + bass + drums + keys) out.

:class:`Performer` holds the models once (arranger, Bass and Keys decoders, drum database, harmony
model); :meth:`Performer.perform` is cheap enough to call per Top-K candidate:

1. analyse the leader once (:func:`~ensemble.perform.analysis.analyze_leader`);
2. the arranger predicts each follower's loudness curve from the leader's features, built with
   :func:`ensemble.models.arranger.arranger_features` exactly as in training;
3. drums: a loop chosen by tempo and onset-pattern cross-correlation, laid beat by beat on the
   leader's beats (:mod:`.drums`), its level following the arranger's Drums curve (a gain envelope
   over 1 s windows);
4. harmony: a root per beat from the leader's pitch content (:func:`~.analysis.plan_harmony`);
   **Bass** plays the root of each beat in E1..A2, re-articulated on every beat and silent in
   beats where the leader is silent, rendered by the Bass decoder with the arranger's Bass curve;
   **Keys** holds the triad's three tones (C3..C5) rendered as three monophonic voices of the Keys
   decoder;
5. mix: per-stem gains, then a bus gain (only down) and the soft limiter, so the mix peaks below
   ``limiter_ceiling_db`` (< 0 dBFS).

A silent leader gets drums at ``drum_level_db`` on a default grid; an unpitched one gets drums but no
bass or keys; both say so in ``info["notes"]``. :func:`write_performance` writes ``mix.wav``,
``stems/<Stem>.wav`` (PCM-16, 16 kHz) and ``perform.json`` into a temporary folder and moves them
into place only once all are written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch

from ensemble.audio import peak_dbfs, save_wav, to_float32
from ensemble.dsp import soft_limit
from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig
from ensemble.models.arranger import Arranger, arranger_features
from ensemble.models.decoder import (
    LOUDNESS_FLOOR_DB,
    InstrumentDecoder,
    denormalize_loudness,
    enable_fast_cpu_inference,
    for_rendering,
    parallel_controls,
)
from ensemble.models.io import ARRANGER_FILE, decoder_file, load_arranger, load_decoder
from ensemble.music import PC_NAMES
from ensemble.perform.analysis import (
    HarmonyPlan,
    LeaderAnalysis,
    analyze_leader,
    chunked_loudness,
    plan_harmony,
)
from ensemble.perform.config import PerformConfig
from ensemble.perform.drums import DrumChoice, DrumDB, DrumHits, place_loop, select_loop
from ensemble.perform.extension import InputPlan, perform_extension
from ensemble.perform.harmony import HarmonyModel, chord_name
from ensemble.perform.rhythm import drum_grids

__all__ = ["Performance", "Performer", "write_performance", "STEM_ORDER"]

STEM_ORDER = ("Leader", "Bass", "Drums", "Keys")
_BACKGROUND = ThreadPoolExecutor(max_workers=1, thread_name_prefix="input-voices")  # see InputPlan
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Performance:
    """One arrangement of one leader clip.

    Attributes:
        mix: [n_samples] float32, limited (peak below the limiter's ceiling, < 0 dBFS).
        stems: "Leader" and each follower -> [n_samples] float32, after the mix gains and the bus
            gain, before the limiter (they sum to the unlimited mix).
        info: JSON-able description (what perform.json holds).
        sample_rate: Hz.
        analysis: the leader's analysis (features, beats, key).
        plan: the harmony plan (None for a silent/unpitched leader or without bass and keys).
        drums: the drum choice (None without drums).
        drum_hits: where the placed loop's hits fall in the output (:func:`.drums.placed_hits`), kept by
            :func:`.extension.perform_extension` (what a take's drum MIDI is written from).
        loudness_db: follower -> [T] dB loudness the follower was rendered with (drums: the
            arranger's target).
    """

    mix: np.ndarray
    stems: dict[str, np.ndarray]
    info: dict
    sample_rate: int
    analysis: LeaderAnalysis
    plan: HarmonyPlan | None = None
    drums: DrumChoice | None = None
    loudness_db: dict[str, np.ndarray] = field(default_factory=dict)
    drum_hits: DrumHits | None = None  # the drum hits as the performer placed them (output time); None: not kept


@dataclass
class _Take:
    """One clip on its way through :meth:`Performer.perform_batch` (planned, then rendered)."""

    audio: np.ndarray
    seed: int
    analysis: LeaderAnalysis
    notes: list[str]
    timings: dict[str, float]
    stems: dict[str, np.ndarray]
    loud_out: dict[str, np.ndarray] = field(default_factory=dict)
    drum_choice: DrumChoice | None = None
    plan: HarmonyPlan | None = None
    unit: str = "beat"
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # the arranger's, [T] in [0, 1]


def _model_version(path: Path | None, model: torch.nn.Module, meta: dict | None) -> dict:
    out: dict = {"n_parameters": int(sum(p.numel() for p in model.parameters()))}
    if path is None:
        out["source"] = "in memory (not a shipped checkpoint)"
        return out
    out["file"] = path.name
    sidecar = path.with_suffix(".json")
    try:
        out["sha256"] = json.loads(sidecar.read_text()).get("sha256")
    except (OSError, ValueError):
        out["sha256"] = None
    for k in ("name", "steps", "complete", "wall_seconds", "data_manifest_sha256"):
        if meta and k in meta:
            out[k] = meta[k]
    return out


def _moving_average(x: np.ndarray, n: int) -> np.ndarray:
    return scipy.ndimage.uniform_filter1d(np.asarray(x, dtype=np.float64), max(1, int(n)),
                                          mode="nearest")


class Performer:
    """Loads the band once and performs any number of leader clips.

    Args:
        arranger: the arranger (its ``config.followers`` names the curves it predicts).
        decoders: "Bass"/"Keys" -> instrument decoder, for the followers that need one.
        drum_db: the drum database, needed for the "Drums" follower (its learned harmony model is
            used when ``config.harmony_model`` is "auto" or "learned").
        config: settings.
        versions: JSON-able model descriptions for perform.json (filled by :meth:`load`).
        features: the frame grid the models were trained on (16 kHz, 100 frames/s).

    Raises:
        EnsembleError: a follower lacks its model, or "learned" harmony without a learned model.
    """

    def __init__(self, arranger: Arranger, decoders: dict[str, InstrumentDecoder],
                 drum_db: DrumDB | None, config: PerformConfig = PerformConfig(), *,
                 versions: dict | None = None, features: FeatureConfig = FeatureConfig()):
        self.config = config
        self.arranger = arranger.eval()
        self.decoders = {k: v.eval() for k, v in decoders.items()}
        self.drum_db = drum_db
        self.features = features
        self._workers = min(2, os.cpu_count() or 1)  # threads a batched render spreads over
        missing = [f for f in config.followers if f in ("Bass", "Keys") and f not in self.decoders]
        if missing:
            raise EnsembleError(f"followers {missing} need decoders; got decoders for "
                                f"{sorted(self.decoders)}")
        if "Drums" in config.followers and drum_db is None:
            raise EnsembleError("the Drums follower needs a drum database "
                                "(`python -m ensemble drums build`)")
        learned = drum_db.harmony if drum_db is not None else None
        if config.harmony_model == "learned" and learned is None:
            raise EnsembleError("harmony_model 'learned' needs the harmony.json shipped with the "
                                "drum database; none was found (use 'rules' or rebuild the database)")
        self.harmony: HarmonyModel = (learned if learned is not None and config.harmony_model != "rules"
                                      else HarmonyModel.rules())
        self.versions = dict(versions or {})
        for name, model in [("arranger", self.arranger), *self.decoders.items()]:
            self.versions.setdefault(name, _model_version(None, model, None))
        self.versions["harmony"] = {"model": self.harmony.name,
                                    "evidence_scale": self.harmony.evidence_scale}
        if drum_db is not None:
            files = drum_db.manifest.get("files", {})
            self.versions["drum_db"] = {
                "path": str(drum_db.path) if drum_db.path else None, "n_loops": len(drum_db),
                "built_utc": drum_db.manifest.get("built_utc"),
                "sha256": {k: v.get("sha256") for k, v in files.items()}}
        with torch.inference_mode():  # first calls pay one-off kernel set-up; pay it here
            for dec in self.decoders.values():
                dec(torch.full((1, 8, 1), 110.0), torch.full((1, 8, 1), -40.0))

    @classmethod
    def load(cls, config: PerformConfig = PerformConfig(), *,
             features: FeatureConfig = FeatureConfig()) -> Performer:
        """Load the shipped checkpoints (``config.checkpoints_dir``) and drum database.

        Raises:
            EnsembleError: a missing or damaged checkpoint or database file.
        """
        enable_fast_cpu_inference()  # denormals make the GRUs 10x slower (see its docstring)
        ckpt = Path(config.checkpoints_dir)
        arranger_path = ckpt / ARRANGER_FILE
        arranger, meta = load_arranger(arranger_path)
        versions = {"arranger": _model_version(arranger_path, arranger, meta)}
        decoders = {}
        for name in ("Bass", "Keys"):
            if name in config.followers:
                path = ckpt / decoder_file(name)
                decoder, meta = load_decoder(path)
                versions[name] = _model_version(path, decoder, meta)
                decoders[name] = for_rendering(decoder, config.gru_weights)
        need_db = "Drums" in config.followers or config.harmony_model == "learned"
        # "auto" harmony without drums: the learned model when the asset is there, else the rules
        want_db = need_db or (config.harmony_model == "auto"
                              and (Path(config.drum_db) / "manifest.json").is_file())
        drum_db = DrumDB.load(config.drum_db) if want_db else None
        return cls(arranger, decoders, drum_db, config, versions=versions, features=features)

    # ------------------------------------------------------------------ helpers

    def _check_audio(self, audio: np.ndarray) -> np.ndarray:
        if isinstance(audio, (str, os.PathLike, tuple)):
            raise EnsembleError("perform() takes a [n_samples] array at 16 kHz; load files with "
                                "ensemble.audio.load_audio first")
        audio = np.asarray(audio)
        if audio.ndim != 1:
            raise EnsembleError(f"the leader must be mono [n_samples], got shape {audio.shape}")
        if audio.size == 0:
            raise EnsembleError("the leader has no samples (empty audio)")
        audio = to_float32(audio)
        if not np.all(np.isfinite(audio)):
            raise EnsembleError("the leader has NaN or Inf samples; allowed: finite values only")
        seconds = len(audio) / self.features.sample_rate
        c = self.config
        if not c.min_seconds <= seconds <= c.max_seconds:
            raise EnsembleError(f"the leader is {seconds:.2f} s long; allowed: {c.min_seconds:g} s to "
                                f"{c.max_seconds:g} s")
        return np.clip(audio, -1.0, 1.0)

    def _curves(self, analysis: LeaderAnalysis, audio: np.ndarray) -> tuple[dict[str, np.ndarray], list]:
        f = analysis.features
        x = arranger_features(audio, f.f0_hz, f.voiced, f.loudness_db, self.arranger.config.inputs,
                              onset=f.onset, beats_s=analysis.beats.times_s, config=self.features)
        pred = self.arranger.predict(x)  # [T, F] in [0, 1]
        curves, notes = {}, []
        for name in self.config.followers:
            if name in self.arranger.config.followers:
                curves[name] = pred[:, self.arranger.config.followers.index(name)]
            else:  # an arranger trained without this follower: follow the leader's level
                curves[name] = x[:, 0] if self.arranger.config.inputs[0] == "loudness" else pred.mean(1)
                notes.append(f"the arranger predicts no {name} curve; {name} follows the leader")
        return curves, notes

    def _bass_loudness(self, plan: HarmonyPlan, curve: np.ndarray) -> np.ndarray:
        """[T] dB: the arranger's curve where the bass plays, a dip before each new note."""
        loud = denormalize_loudness(np.asarray(curve, dtype=np.float64))
        sounding = plan.bass_f0_hz > 0
        loud = np.where(sounding, loud, LOUDNESS_FLOOR_DB)
        gap = max(1, int(round(self.config.bass_note_gap_s * self.features.frame_rate)))
        for j in range(1, len(plan.beat_frames) - 1):
            b = int(plan.beat_frames[j])
            if 0 < b < len(loud) and sounding[b] and sounding[b - 1]:
                loud[max(0, b - gap):b] -= 30.0
        return np.maximum(loud, LOUDNESS_FLOOR_DB)

    def _keys_loudness(self, plan: HarmonyPlan, curve: np.ndarray) -> np.ndarray:
        """[T] dB per voice: three voices share the arranger's Keys level (-4.8 dB each)."""
        loud = denormalize_loudness(np.asarray(curve, dtype=np.float64)) - 10.0 * np.log10(3.0)
        sounding = plan.keys_f0_hz[0] > 0
        loud = np.where(sounding, loud, LOUDNESS_FLOOR_DB)
        gap = max(1, int(round(self.config.bass_note_gap_s * self.features.frame_rate)))
        change = np.flatnonzero(np.any(np.diff(plan.keys_f0_hz, axis=1) != 0, axis=0)) + 1
        for b in change:  # re-strike when the chord changes
            if sounding[b] and sounding[b - 1]:
                loud[max(0, b - gap):b] -= 30.0
        return np.maximum(loud, LOUDNESS_FLOOR_DB)

    def _drums(self, analysis: LeaderAnalysis, curve: np.ndarray | None, n: int, rng
               ) -> tuple[np.ndarray, DrumChoice, np.ndarray]:
        db = self.drum_db
        assert db is not None
        fr = self.features.frame_rate
        grids = drum_grids(analysis.beats, analysis.duration_s)
        if analysis.silent:  # nothing to correlate with: the default grid, no tempo games
            grids = [g for g in grids if g.ratio == 1.0]
        choice = select_loop(db, analysis.features.onset, grids, frame_rate=fr,
                             max_stretch=self.config.drum_max_stretch,
                             variety=self.config.drum_variety, rng=rng)
        placed = place_loop(db.loop(choice.index), int(db.table["beats"][choice.index]),
                            choice.grid.times_s, choice.lag_beats, n_samples=n,
                            sample_rate=self.features.sample_rate)
        env, target_db = self._drum_envelope(placed, curve, analysis.n_frames)
        return placed * env, choice, target_db

    def _drum_envelope(self, placed: np.ndarray, curve: np.ndarray | None, T: int
                       ) -> tuple[np.ndarray, np.ndarray]:
        """([n] gain envelope, [T] target dB) that make placed drums follow the arranger's curve."""
        fr = self.features.frame_rate
        n = len(placed)
        if curve is None:
            target_db = np.full(T, self.config.drum_level_db)
        else:
            target_db = denormalize_loudness(np.asarray(curve, dtype=np.float64))
        # level over ~1 s windows: the arranger's curve sets how loud the drums play, the loop's own
        # hits set the detail (a frame-by-frame gain would flatten every hit)
        win = int(fr)
        target = _moving_average(10.0 ** (target_db / 10.0), win)
        have = _moving_average(10.0 ** (chunked_loudness(placed, self.features)[:T] / 10.0), win)
        gain = np.sqrt(target / np.maximum(have, 1e-10))
        gain = np.where(target_db.max() <= LOUDNESS_FLOOR_DB + 1e-6, 0.0, gain)
        gain = _moving_average(np.clip(gain, 0.0, 10.0), int(0.25 * fr))  # [T]
        t_frames = np.arange(T) * self.features.hop_length
        env = np.interp(np.arange(n), t_frames, gain).astype(np.float32)
        return env, target_db

    # ------------------------------------------------------------------ perform

    def perform(self, audio: np.ndarray, *, seed: int | None = None) -> Performance:
        """Arrange a band around a leader clip.

        Args:
            audio: [n_samples] mono float (or integer PCM) at 16 kHz, 2 s to 10 min (the config's
                ``min_seconds``/``max_seconds``).
            seed: overrides ``config.seed`` (decoder noise; drum choice when ``drum_variety > 1``).

        Returns:
            A :class:`Performance` whose audio has exactly ``n_samples`` samples.

        Raises:
            EnsembleError: not a 1-D finite array, empty, or a length outside the allowed range.
        """
        return self.perform_batch([audio], seed=seed)[0]

    def perform_batch(self, audios: list[np.ndarray], *, seed: int | None = None, workers: int = 1,
                      progress: Callable[[float, str], None] | None = None) -> list[Performance]:
        """Arrange several leader clips, rendering each follower's voices for all of them together.

        Every clip is analysed and planned on its own (in ``workers`` threads); then the Bass
        voices of all clips of one length go through the Bass decoder as one batch, and likewise
        the Keys voices, which is what makes K continuations cheaper than K calls of
        :meth:`perform`. Each clip's decoder noise comes from its own generator seeded as in
        :meth:`perform`, so ``perform_batch(clips)[i]`` equals ``perform(clips[i])`` up to float
        rounding of the batched GRU (< 1e-6 measured).

        Args:
            audios: clips as for :meth:`perform` (any lengths; equal lengths batch together).
            seed: as for :meth:`perform`, shared by all clips.
            workers: threads for the per-clip analysis and planning.
            progress: called as ``progress(fraction, message)`` after each clip is planned and
                after each follower is rendered.

        Raises:
            EnsembleError: as :meth:`perform`, for any of the clips (naming its index when several).
        """
        if isinstance(audios, np.ndarray) and audios.ndim == 1:
            raise EnsembleError("perform_batch() takes a list of [n_samples] clips; use perform() "
                                "for one clip")
        audios = list(audios)
        if not audios:
            return []
        seed = self.config.seed if seed is None else int(seed)

        def prepare(item: tuple[int, np.ndarray]) -> _Take:
            i, audio = item
            enable_fast_cpu_inference()  # per thread: callers may perform from worker threads
            try:
                return self._prepare(audio, seed)
            except EnsembleError as exc:
                if len(audios) == 1:
                    raise
                raise EnsembleError(f"clip {i}: {exc}") from None

        report = progress or (lambda f, m: None)
        renders = [(n, o) for n, o in (("Bass", 0), ("Keys", 1)) if n in self.config.followers]
        steps = len(audios) + len(renders)
        enable_fast_cpu_inference()
        takes = []
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(audios)))) as pool:
            for take in pool.map(prepare, enumerate(audios)):
                takes.append(take)
                report(len(takes) / steps, f"planned {len(takes)} of {len(audios)} clips")
        for j, (name, offset) in enumerate(renders):
            self._render_takes(name, [t for t in takes if t.plan is not None], offset)
            report((len(audios) + j + 1) / steps, f"rendered {name} for {len(audios)} clips")
        return [self._finish(t) for t in takes]

    def plan_input(self, audio: np.ndarray, *, seed: int | None = None) -> InputPlan:
        """Analyse and plan an input once, to be shared by all its continuations
        (:meth:`perform_extension`); its analysis (f0, loudness, beats, key) is public."""
        enable_fast_cpu_inference()
        seed = self.config.seed if seed is None else int(seed)
        take = self._prepare(audio, seed)
        plan = InputPlan(take, seed)
        todo = [(n, o) for n, o in (("Bass", 0), ("Keys", 1)) if n in self.config.followers]
        if take.plan is not None and todo:
            def render() -> None:
                enable_fast_cpu_inference()
                for name, offset in todo:
                    self._render_takes(name, [take], offset)
            plan.rendering = _BACKGROUND.submit(render)
        return plan

    def perform_extension(self, plan: InputPlan, continuations: list[np.ndarray], *,
                          crossfade_samples: int, controls: list[tuple[np.ndarray, np.ndarray]] | None = None,
                          workers: int = 1,
                          progress: Callable[[float, str], None] | None = None) -> list[Performance]:
        """Perform the planned input with each continuation as one band across the seam
        (:func:`ensemble.perform.extension.perform_extension`)."""
        return perform_extension(self, plan, continuations, crossfade_samples=crossfade_samples,
                                 controls=controls, workers=workers, progress=progress)

    def _prepare(self, audio: np.ndarray, seed: int) -> _Take:
        """Analysis, arranger curves, drums and the harmony plan of one clip (no decoder yet)."""
        c = self.config
        audio = self._check_audio(audio)
        n = len(audio)
        timings: dict[str, float] = {}
        notes: list[str] = []
        rng = np.random.default_rng(seed)

        t = time.perf_counter()
        analysis = analyze_leader(audio, c, features=self.features)
        timings["analysis"] = time.perf_counter() - t
        if analysis.silent:
            notes.append(f"the leader is silent (peak {peak_dbfs(audio):.1f} dBFS, no frame above "
                         f"{c.activity_db:g} dB): drums on a default {c.default_tempo_bpm:g} BPM grid "
                         f"at {c.drum_level_db:g} dB, no bass or keys")
        elif analysis.beats.source == "default":
            notes.append(f"beat tracking found {analysis.beats.n_tracked} beats (< {c.min_beats}): "
                         f"default {c.default_tempo_bpm:g} BPM grid")
        if not analysis.silent and not analysis.pitched:
            notes.append(f"the leader is unpitched ({100 * analysis.voiced_fraction:.1f}% of active "
                         f"frames voiced, < {100 * c.min_voiced_fraction:g}%): no bass or keys")

        t = time.perf_counter()
        curves, curve_notes = self._curves(analysis, audio)
        notes += curve_notes
        timings["arranger"] = time.perf_counter() - t

        take = _Take(audio=audio, seed=seed, analysis=analysis, notes=notes, timings=timings,
                     stems={"Leader": audio.copy()}, curves=curves)
        if "Drums" in c.followers:
            t = time.perf_counter()
            take.stems["Drums"], take.drum_choice, take.loud_out["Drums"] = self._drums(
                analysis, None if analysis.silent else curves["Drums"], n, rng)
            timings["drums"] = time.perf_counter() - t

        want_harmony = any(f in c.followers for f in ("Bass", "Keys"))
        if want_harmony and analysis.pitched:
            bpb, downbeat = None, 0
            choice = take.drum_choice
            if choice is not None and choice.grid.ratio == 1.0 and c.harmony_unit != "beat":
                bpb = int(self.drum_db.table["beats_per_bar"][choice.index])
                downbeat = (-choice.lag_beats) % bpb
                take.unit = c.harmony_unit
            elif c.harmony_unit != "beat":
                notes.append(f"harmony unit {c.harmony_unit!r} needs the bar from a drum loop laid "
                             "on the leader's own beats; a chord per beat is used")
            t = time.perf_counter()
            take.plan = plan_harmony(analysis, self.harmony, c, beats_per_bar=bpb, downbeat=downbeat)
            timings["harmony"] = time.perf_counter() - t
        for name in ("Bass", "Keys"):
            if name not in c.followers:
                continue
            if take.plan is None:
                take.stems[name] = np.zeros(n, np.float32)
                take.loud_out[name] = np.full(analysis.n_frames, LOUDNESS_FLOOR_DB)
            elif name == "Bass":
                take.loud_out[name] = self._bass_loudness(take.plan, curves[name])
            else:
                take.loud_out[name] = self._keys_loudness(take.plan, curves[name])
        return take

    def _render_takes(self, name: str, takes: list[_Take], seed_offset: int) -> None:
        """Render follower ``name`` for every take, batching takes of equal length.

        Up to ``render_chunk_seconds`` the decoder's network (MLP, GRU, heads) runs once on the
        stacked voices of all takes of one length, and the synth renders each take's voices from
        its slice of the controls. Longer clips go one voice at a time, network included, to bound
        memory (a 10-minute pass holds ~0.7 GB per voice). Noise comes from
        ``Generator(take.seed + seed_offset)``, drawn exactly as a single :meth:`perform` draws it.
        """
        dec = self.decoders[name]
        limit_frames = self.config.render_chunk_seconds * self.features.frame_rate
        by_len: dict[int, list[_Take]] = {}
        for t in takes:
            by_len.setdefault(len(t.audio), []).append(t)
        for n, group in by_len.items():
            start = time.perf_counter()
            f0, loud = [], []
            for t in group:
                f0_t = t.plan.bass_f0_hz[None] if name == "Bass" else t.plan.keys_f0_hz  # [V, T]
                f0.append(f0_t)
                loud.append(np.repeat(t.loud_out[name][None], len(f0_t), axis=0))
            f0_b = torch.from_numpy(np.ascontiguousarray(np.concatenate(f0), dtype=np.float32))[..., None]
            ld_b = torch.from_numpy(np.ascontiguousarray(np.concatenate(loud), dtype=np.float32))[..., None]
            batched = f0_b.shape[1] <= limit_frames
            with torch.inference_mode():
                # [V_total, T, ...]: the rows split over the cores (parallel_controls)
                controls = parallel_controls(dec, f0_b, ld_b, workers=self._workers) if batched else None
            starts = np.cumsum([0] + [len(v) for v in f0])
            jobs = [(t, int(starts[j]), int(starts[j + 1])) for j, t in enumerate(group)]
            if batched and len(group) > 1 and self._workers > 1:
                # each take draws its own noise (its own generator): the takes synthesise in any order
                with ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="synth") as pool:
                    list(pool.map(partial(self._synth_take, name, dec, controls=controls, f0_b=f0_b, ld_b=ld_b,
                                          n=n, seed_offset=seed_offset, one_thread=True), jobs))
            else:
                for job in jobs:
                    self._synth_take(name, dec, job, controls=controls, f0_b=f0_b, ld_b=ld_b, n=n,
                                     seed_offset=seed_offset, one_thread=False)
            share = (time.perf_counter() - start) / len(group)
            for t in group:
                t.timings[name.lower()] = share

    @staticmethod
    def _synth_take(name: str, dec: InstrumentDecoder, job: tuple[_Take, int, int], *,
                    controls: dict[str, torch.Tensor] | None, f0_b: torch.Tensor, ld_b: torch.Tensor, n: int,
                    seed_offset: int, one_thread: bool) -> None:
        """Synthesise one take's voices (rows v0:v1 of the batch) into ``take.stems[name]``: from the
        batch's controls, or (``controls`` None: a long clip) one voice at a time, network included."""
        take, v0, v1 = job
        enable_fast_cpu_inference()
        if one_thread:
            torch.set_num_threads(1)  # this thread's own setting (OpenMP): the other take has the other core
        gen = torch.Generator().manual_seed(int(take.seed) + seed_offset)
        with torch.inference_mode():
            if controls is not None:
                part = {k: x[v0:v1] for k, x in controls.items()}
                audio = dec.render(part, n_samples=n, generator=gen).sum(dim=0).numpy()
            else:
                audio = np.zeros(n, np.float32)
                for v in range(v0, v1):
                    audio += dec(f0_b[v:v + 1], ld_b[v:v + 1], n_samples=n, generator=gen)[0].numpy()
        take.stems[name] = audio

    def _finish(self, take: _Take) -> Performance:
        """Mix gains, bus gain and limiter -> the Performance."""
        c = self.config
        t = time.perf_counter()
        stems = take.stems
        gains = {s: c.gain_db(s) for s in stems}
        for s in stems:
            stems[s] = (stems[s] * np.float32(10.0 ** (gains[s] / 20.0))).astype(np.float32)
        raw = np.sum([stems[s] for s in stems], axis=0)
        raw_peak = float(np.max(np.abs(raw)))
        # only ever turn the bus down, to at most +3 dBFS before the soft limiter: it rounds off
        # a few dB of overs gracefully, more would audibly squash the mix
        bus = min(1.0, 10.0 ** (3.0 / 20.0) / raw_peak) if raw_peak > 0 else 1.0
        for s in stems:
            stems[s] *= np.float32(bus)
        mix = soft_limit(raw * np.float32(bus), threshold_db=c.limiter_threshold_db,
                         ceiling_db=c.limiter_ceiling_db).astype(np.float32)
        take.timings["mix"] = time.perf_counter() - t
        take.timings["total"] = sum(v for k, v in take.timings.items() if k != "total")

        info = self._info(take.analysis, take.plan, take.unit, take.drum_choice, gains, bus, mix,
                          take.notes, take.timings, take.seed, peak_dbfs(take.audio))
        return Performance(mix, {s: stems[s] for s in STEM_ORDER if s in stems}, info,
                           self.features.sample_rate, take.analysis, take.plan, take.drum_choice,
                           take.loud_out)

    def _info(self, analysis: LeaderAnalysis, plan: HarmonyPlan | None, unit: str,
              choice: DrumChoice | None, gains: dict, bus: float, mix: np.ndarray,
              notes: list[str], timings: dict, seed: int, leader_peak_db: float) -> dict:
        c = self.config
        sr = self.features.sample_rate
        n = analysis.n_samples
        dur = n / sr
        beats = analysis.beats.times_s
        inside = (beats >= 0) & (beats < dur)
        info: dict = {
            "format_version": FORMAT_VERSION,
            "sample_rate": sr, "n_samples": n, "seconds": round(dur, 4),
            "followers": list(c.followers), "seed": seed,
            "leader": {"silent": analysis.silent, "pitched": analysis.pitched,
                       "voiced_fraction": analysis.voiced_fraction,
                       "active_fraction": round(float(analysis.active.mean()), 4),
                       "peak_dbfs": round(leader_peak_db, 2) if np.isfinite(leader_peak_db) else None},
            "tempo_bpm": analysis.beats.tempo_bpm,
            "beat_source": analysis.beats.source,
            "beat_times_s": [round(float(b), 4) for b in beats[inside]],
            "key": {"name": analysis.key.name, "tonic": PC_NAMES[analysis.key.tonic],
                    "mode": analysis.key.mode, "confidence": analysis.key.confidence}
            if analysis.pitched else None,
        }
        if plan is not None:
            rows = []
            for j in range(len(beats) - 1):
                a, b = max(0.0, float(beats[j])), min(dur, float(beats[j + 1]))
                if b <= a:
                    continue
                r, q, _ = plan.chords[plan.unit_of_beat[j]]
                rows.append({"start_s": round(a, 4), "end_s": round(b, 4), "chord": chord_name(r, q),
                             "active": bool(plan.beat_active[j]),
                             "bass_midi": int(plan.bass_midi[j]) if plan.beat_active[j] else None})
            info["harmony"] = {"model": plan.model, "unit": unit, "beats": rows}
        else:
            info["harmony"] = None
        if choice is not None:
            db = self.drum_db
            seg = db.info(choice.index)
            seg.update({"lag_beats": choice.lag_beats, "grid_ratio": choice.grid.ratio,
                        "grid_phase": choice.grid.phase, "grid_tempo_bpm": round(choice.grid.tempo_bpm, 3),
                        "stretch": round(choice.stretch, 4), "correlation": choice.correlation,
                        "score": choice.score, "candidates": choice.candidates})
            info["drums"] = {"segment": seg}
        else:
            info["drums"] = None
        info["gains_db"] = {s: round(g, 2) for s, g in gains.items()}
        info["bus_gain_db"] = round(20.0 * np.log10(bus), 2)
        info["mix_peak_dbfs"] = round(float(peak_dbfs(mix)), 2)
        info["models"] = self.versions
        info["notes"] = notes
        info["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
        info["config"] = c.to_dict()
        return info

    def write(self, performance: Performance, out_dir: str | os.PathLike) -> Path:
        """Same as :func:`write_performance`."""
        return write_performance(performance, out_dir)


def write_performance(performance: Performance, out_dir: str | os.PathLike, *,
                      extra: dict | None = None) -> Path:
    """Write ``mix.wav``, ``stems/<Stem>.wav`` and ``perform.json`` into ``out_dir``.

    Everything is written into a temporary folder beside ``out_dir`` first; only when every file is
    complete are they moved into ``out_dir`` (created if needed; files of the same names are
    replaced, stems this performance lacks are removed, other files left alone). A failure leaves
    ``out_dir`` as it was.

    Args:
        performance: from :meth:`Performer.perform`.
        out_dir: destination folder.
        extra: merged into perform.json (e.g. the input file's name).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        EnsembleError: ``out_dir`` exists and is not a folder.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EnsembleError(f"output {str(out)!r} exists and is not a folder")
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; it may become out_dir itself
    try:
        sr = performance.sample_rate
        save_wav(tmp / "mix.wav", performance.mix, sr)
        for name, audio in performance.stems.items():
            save_wav(tmp / "stems" / f"{name}.wav", audio, sr)
        info = {**performance.info, **(extra or {})}
        info["files"] = {"mix": "mix.wav", "stems": {s: f"stems/{s}.wav" for s in performance.stems}}
        (tmp / "perform.json").write_text(json.dumps(info, indent=1) + "\n")
        if not out.exists():
            os.replace(tmp, out)
            return out
        (out / "stems").mkdir(exist_ok=True)
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                os.replace(p, out / p.relative_to(tmp))
        for name in STEM_ORDER:  # a stem of an earlier take with other followers would mislead
            if name not in performance.stems:
                (out / "stems" / f"{name}.wav").unlink(missing_ok=True)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
