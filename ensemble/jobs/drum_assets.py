"""Build the performer's shipped asset from a corpus: the drum database and the learned harmony model.

``python -m ensemble drums build --data data/babyband --out assets/drums`` runs
:func:`build_assets`: every track of the *train* split gives (a) groove loops cut from its Drums stem
(:func:`ensemble.perform.drums.track_loops`) and (b) harmony counts -- its Guitar stem is analysed
exactly as the performer analyses a leader (:func:`~ensemble.perform.analysis.analyze_leader`: fast
YIN, chroma, tracked beats, estimated key) and each beat's key-relative pitch evidence is counted
against the ground-truth bass pitch class of that beat (from ``features.npz``). The counts become a
:class:`~ensemble.perform.harmony.HarmonyModel`. Valid and test tracks are never read.

Everything lands in one folder with a ``manifest.json`` (command, seed, config, sources, sha256 and
size of each file); each file must stay under 10 MB.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ensemble.audio import load_audio
from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig
from ensemble.jobs.corpus.layout import list_tracks
from ensemble.perform.analysis import analyze_leader
from ensemble.perform.config import PerformConfig
from ensemble.perform.drums import DrumDB, LoopCut, track_loops
from ensemble.perform.harmony import HarmonyModel, harmony_counts, unit_evidence, unit_labels

__all__ = ["AssetBuildConfig", "build_assets"]


@dataclass(frozen=True)
class AssetBuildConfig:
    """What ``drums build`` makes.

    Attributes:
        split: the corpus split read (train only, so evaluation on test stays clean).
        leader, bass, drums: stem names in the corpus.
        bars_per_loop: bars per drum loop (raised to reach ``min_loop_beats``).
        min_loop_beats: shortest loop, in beats.
        max_loops_per_track: distinct loops kept per track.
        subdivisions: onset-pattern points per beat.
        ogg_quality: Vorbis compression level, 0 (best) .. 1 (smallest); 0.5 ~ 26 kbit/s.
        seed: loop choice within a track.
        harmony_smoothing: add-k smoothing of the harmony counts.
        harmony_evidence_scale: effective notes per beat of the learned model (tuned on the valid
            split: 3).
        max_file_mb: refuse to write a file larger than this.
    """

    split: str = "train"
    leader: str = "Guitar"
    bass: str = "Bass"
    drums: str = "Drums"
    bars_per_loop: int = 1
    min_loop_beats: int = 2
    max_loops_per_track: int = 4
    subdivisions: int = 12
    ogg_quality: float = 0.5
    seed: int = 0
    harmony_smoothing: float = 2.0
    harmony_evidence_scale: float = 3.0
    max_file_mb: float = 10.0


def build_assets(data_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                 config: AssetBuildConfig = AssetBuildConfig(),
                 perform_config: PerformConfig = PerformConfig(), command: str = "",
                 progress: bool = False) -> dict:
    """Build the drum database and the learned harmony model from a corpus's train split.

    Args:
        data_dir: corpus folder (TrackNNNNN/ with metadata.json, features.npz, stems/).
        out_dir: the asset folder to (re)write.
        config: build settings.
        perform_config: analysis settings (must match the performer's, which they do by default).
        command: the command line, recorded in the manifest.
        progress: print one line per track.

    Returns:
        The manifest written to ``out_dir/manifest.json``.

    Raises:
        EnsembleError: no corpus, no track in the split, no loop found.
    """
    data_dir = Path(data_dir)
    tracks = list_tracks(data_dir)
    if not tracks:
        raise EnsembleError(f"corpus {str(data_dir)!r} has no complete tracks; build it with "
                            "`python -m ensemble corpus build`")
    rng = np.random.default_rng(config.seed)
    fc = FeatureConfig()
    loops: list[LoopCut] = []
    prior, emis, trans = np.zeros((2, 12)), np.zeros((2, 12, 12)), np.zeros((2, 12, 12))
    used, skipped, units_total = [], [], 0
    t0 = time.monotonic()
    for track in tracks:
        try:
            meta = json.loads((track / "metadata.json").read_text())
        except (OSError, ValueError):
            skipped.append(track.name)
            continue
        if meta.get("split") != config.split:
            continue
        stems = meta.get("stems", {})
        if not all(s in stems for s in (config.leader, config.bass, config.drums)):
            skipped.append(track.name)
            continue
        drums = load_audio(track / stems[config.drums]["audio"], max_seconds=3600).audio
        loops += track_loops(drums, meta, track=track.name, bars_per_loop=config.bars_per_loop,
                             min_loop_beats=config.min_loop_beats,
                             max_loops=config.max_loops_per_track, sample_rate=fc.sample_rate,
                             rng=rng)
        leader = load_audio(track / stems[config.leader]["audio"], max_seconds=3600).audio
        ana = analyze_leader(leader, perform_config, features=fc)
        with np.load(track / "features.npz") as npz:
            bass_f0 = npz[f"{config.bass}/f0_hz"]
            bass_voiced = npz[f"{config.bass}/voiced"]
        bounds = np.clip(np.round(ana.beats.times_s * fc.frame_rate).astype(np.int64), 0,
                         ana.n_frames)
        if ana.pitched:
            labels = unit_labels(bass_f0, bass_voiced, bounds)
            p, e, t = harmony_counts(unit_evidence(ana.evidence, bounds), ana.key, labels)
            prior, emis, trans = prior + p, emis + e, trans + t
            units_total += int((labels >= 0).sum())
        used.append(track.name)
        if progress:
            print(f"{track.name}: {len(loops)} loops so far, key {ana.key.name}, "
                  f"{ana.beats.tempo_bpm:.1f} BPM", flush=True)
    if not used:
        raise EnsembleError(f"corpus {str(data_dir)!r} has no {config.split!r} tracks with "
                            f"{config.leader}, {config.bass} and {config.drums} stems")
    if not loops:
        raise EnsembleError(f"no drum loop could be cut from the {len(used)} {config.split!r} tracks "
                            f"of {str(data_dir)!r}")
    harmony = None
    if units_total:
        harmony = HarmonyModel.from_counts(prior, emis, trans, smoothing=config.harmony_smoothing,
                                           evidence_scale=config.harmony_evidence_scale)
    db = DrumDB.from_loops(loops, subdivisions=config.subdivisions, config=fc, harmony=harmony)
    from ensemble.jobs.training import corpus_manifest_hash

    manifest = {
        "kind": "ensemble drum database + learned harmony model",
        "command": command,
        "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.monotonic() - t0, 1),
        "seed": config.seed,
        "config": asdict(config),
        "perform_analysis": {k: v for k, v in perform_config.to_dict().items()
                             if k in ("f0_weight", "key_final_bonus", "activity_db",
                                      "min_voiced_fraction", "default_tempo_bpm", "min_beats")},
        "feature_config": fc.to_dict(),
        "corpus": {"path": str(data_dir), "manifest_sha256": corpus_manifest_hash(data_dir),
                   "split": config.split, "tracks_used": used, "tracks_skipped": skipped},
        "harmony": {"units": units_total, "model": harmony.name if harmony else None},
        "loops": {"count": len(db), "seconds": round(float(db.table["lengths"].sum()) / fc.sample_rate, 1),
                  "tempo_bpm_range": [round(float(db.table["tempo_bpm"].min()), 2),
                                      round(float(db.table["tempo_bpm"].max()), 2)],
                  "beats_per_bar": sorted({int(x) for x in db.table["beats_per_bar"]})},
    }
    return db.save(out_dir, manifest=manifest, ogg_quality=config.ogg_quality,
                   max_file_bytes=int(config.max_file_mb * 1024 * 1024))
