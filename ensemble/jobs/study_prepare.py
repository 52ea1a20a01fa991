"""``python -m ensemble study prepare STUDY.yaml --out DIR``: render every round of a study once.

For each stimulus (a clip cut from a longer recording) and each condition, :func:`ensemble.extend.extend`
runs through the same :class:`~ensemble.engine.Engine` the app uses and gives the condition's K
candidates, each performed by the band. Two controls join every round:

* the **hidden reference**: the recording's own next seconds, performed by the same band as a
  candidate is (the input planned once, the true continuation as the leader's continuation:
  :meth:`ensemble.perform.Performer.perform_extension`);
* the **low anchor**: one candidate (``controls.anchor_base``) with planted seam faults
  (:func:`ensemble.study.controls.plant_seam_faults`).

Every candidate is written once, loudness-matched to its input (:mod:`ensemble.listening.levels`;
in a study matched playback is on and fixed), as a 16 kHz mono PCM-16 WAV under an opaque name in
``audio/<stimulus>/``. ``manifest.json`` records the study file's hash, the engine's model and
database versions, the seeds, and per candidate its condition label, file, SHA-256, gain and scores
(read by the server only; the folder ``audio/`` is all a browser can fetch).

The folder is written under a temporary name beside ``DIR`` and renamed into place at the end: a
failed or interrupted run leaves no half-made study.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ensemble.audio import load_audio, save_wav
from ensemble.engine import Engine
from ensemble.errors import EnsembleError
from ensemble.extend import ExtendRequest, extend
from ensemble.files import sha256_file, write_json_atomic
from ensemble.listening.levels import integrated_loudness_db, match_gain_db
from ensemble.perform import Performer
from ensemble.study.controls import plant_seam_faults
from ensemble.study.spec import ANCHOR, REFERENCE, Stimulus, StudySpec, load_spec
from ensemble.study.store import FORMAT_VERSION, MANIFEST

__all__ = ["prepare_study"]


def _none_if_nan(x) -> float | None:
    return None if x is None or not np.isfinite(float(x)) else float(x)


def _band(engine: Engine, followers: tuple[str, ...]) -> Performer:
    """The engine's performer with ``followers`` (as :func:`ensemble.extend.extend` makes it)."""
    p = engine.performer
    if followers == p.config.followers:
        return p
    return Performer(p.arranger, p.decoders, p.drum_db, replace(p.config, followers=followers),
                     versions=p.versions, features=p.features)


def _render_stimulus(engine: Engine, spec: StudySpec, stim: Stimulus, folder: Path,
                     say: Callable[[str], None]) -> dict:
    sr = engine.sample_rate
    recording = load_audio(stim.clip, sample_rate=sr).audio
    a = int(round(stim.start_seconds * sr))
    n_in = int(round(stim.input_seconds * sr))
    n_target = int(round(stim.target_seconds * sr))
    if a + n_target > len(recording):
        raise EnsembleError(
            f"stimulus {stim.id!r}: clip {stim.clip.name!r} is {len(recording) / sr:.2f} s long; the hidden "
            f"reference needs start_seconds + target_seconds = {(a + n_target) / sr:.2f} s of it")
    audio = recording[a:a + n_in]
    t = time.perf_counter()
    labelled: list[tuple[str, np.ndarray, dict]] = []
    ext0 = None
    for cond in spec.conditions:
        req = ExtendRequest(seconds=stim.target_seconds, k=stim.k, alpha=stim.alpha, beta=stim.beta,
                            followers=stim.followers, seed=stim.seed, ranking=cond.ranking)
        ext = extend(engine, audio, req)
        if len(ext.candidates) < stim.k:
            raise EnsembleError(f"stimulus {stim.id!r}, condition {cond.name!r}: only {len(ext.candidates)} "
                                f"candidates exist for k = {stim.k}; lower k or use a longer database")
        ext0 = ext0 or ext
        for c, perf in zip(ext.candidates, ext.performances, strict=True):
            labelled.append((f"{cond.name}@{c.rank}", perf.mix, {
                "condition": cond.name, "ranking": cond.ranking, "composite_rank": int(c.rank),
                "composite": float(c.composite), "relevance": float(c.relevance),
                "coherence": float(c.coherence), "track": str(c.track), "fallback": bool(c.fallback),
                "seam_pitch_jump_cents": _none_if_nan(c.seam_pitch_jump_cents),
                "seam_loudness_jump_db": _none_if_nan(c.seam_loudness_jump_db)}))
    xfade = ext0.crossfade
    s0 = n_in - xfade  # the continuation's first sample (the crossfade's start)
    n_out = len(ext0.performances[0].mix)
    m = n_out - s0
    # the hidden reference: the true continuation, performed by the same band
    band = _band(engine, ext0.request.followers)
    plan = band.plan_input(audio, seed=stim.seed)
    true_cont = recording[a + s0:a + s0 + m]
    ref = band.perform_extension(plan, [true_cont], crossfade_samples=xfade)[0]
    labelled.append((REFERENCE, ref.mix, {"condition": REFERENCE, "composite_rank": None,
                                          "source": f"{stim.clip.name} {stim.start_seconds:g}.."
                                                    f"{stim.start_seconds + stim.target_seconds:g} s"}))
    # the low anchor: one candidate with planted seam faults after the crossfade
    base_mix = next(mix for label, mix, _ in labelled if label == spec.anchor_base)
    anchor = plant_seam_faults(base_mix, n_in, sample_rate=sr, pitch_semitones=spec.anchor.pitch_semitones,
                               delay_ms=spec.anchor.delay_ms, gain_db=spec.anchor.gain_db)
    labelled.append((ANCHOR, anchor, {"condition": ANCHOR, "composite_rank": None, "base": spec.anchor_base,
                                      "faults": vars(spec.anchor), "cut_seconds": n_in / sr}))
    reference_db = integrated_loudness_db(audio, features=engine.config.features)
    out = folder / "audio" / stim.id
    cands = []
    for label, mix, info in labelled:
        mix = np.asarray(mix, np.float32)
        gain, limited = match_gain_db(mix, reference_db, features=engine.config.features)
        path = save_wav(out / f"{secrets.token_hex(8)}.wav", mix * np.float32(10.0 ** (gain / 20.0)), sr)
        cands.append({"label": label, "file": str(path.relative_to(folder)), "sha256": sha256_file(path),
                      "matched_gain_db": round(float(gain), 3), "matched_limited": bool(limited), **info})
    say(f"{stim.id}: {len(cands)} candidates ({time.perf_counter() - t:.1f} s)")
    return {"round_id": stim.id, "clip": stim.clip.name, "clip_sha256": sha256_file(stim.clip),
            "start_seconds": stim.start_seconds, "input_seconds": n_in / sr, "seconds": n_out / sr,
            "seam_seconds": s0 / sr, "crossfade_seconds": xfade / sr, "cut_seconds": n_in / sr,
            "seed": stim.seed, "k": stim.k, "alpha": stim.alpha, "beta": stim.beta,
            "followers": list(ext0.request.followers), "input_loudness_db": reference_db,
            "notes": list(ext0.notes), "extension_versions": dict(ext0.versions), "candidates": cands}


def prepare_study(study_file: str | os.PathLike, out: str | os.PathLike, engine: Engine, *,
                  overwrite: bool = False, command: str = "",
                  on_message: Callable[[str], None] | None = None) -> Path:
    """Render every round of the study at ``study_file`` into the folder ``out``.

    Args:
        study_file: the study (YAML; :func:`ensemble.study.spec.load_spec`).
        out: the study folder to create; the app serves it at ``?study=NAME`` when it lies under the
            app's studies root and its name is the study's name.
        engine: the loaded engine (the app's).
        overwrite: replace an existing ``out``.
        command: the command line, recorded in the manifest.

    Returns:
        ``out``.

    Raises:
        EnsembleError: a bad study file, an existing ``out`` without ``overwrite``, a clip too short
            for its hidden reference, or whatever :func:`ensemble.extend.extend` refuses.
    """
    say = on_message or (lambda m: None)
    spec = load_spec(study_file)
    out = Path(out)
    if out.exists() and not overwrite:
        raise EnsembleError(f"{str(out)!r} exists; pass --overwrite to replace it")
    if out.name != spec.name:
        say(f"note: the folder is named {out.name!r}, the study {spec.name!r}; the app serves it at "
            f"?study={out.name} only when both agree")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        shutil.copyfile(study_file, tmp / "study.yaml")
        rounds = [_render_stimulus(engine, spec, s, tmp, say) for s in spec.stimuli]
        manifest = {
            "format": FORMAT_VERSION, "name": spec.name, "created_utc": datetime.now(UTC).isoformat(),
            "command": command, "study_file": Path(study_file).name,
            "study_sha256": sha256_file(study_file), "study": spec.to_dict(),
            "versions": {"model": engine.model_version, "database": engine.db.version,
                         "engine": engine.versions},
            "seeds": {"study": spec.seed, "stimuli": {s.id: s.seed for s in spec.stimuli}},
            "loudness_matched": True, "sample_rate": engine.sample_rate, "rounds": rounds,
            "prepare_seconds": round(time.perf_counter() - t0, 2)}
        write_json_atomic(tmp / MANIFEST, manifest)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"study {spec.name!r}: {len(rounds)} rounds in {out} ({time.perf_counter() - t0:.1f} s)")
    return out
