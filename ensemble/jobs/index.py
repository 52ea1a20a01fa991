"""Build the RAG database (``python -m ensemble index build``): an offline job.

Reads every melodic line of a corpus -- per track, each stem named in ``RagConfig.stems`` (Guitar and
the Keys top line): its controls from the corpus's ``features.npz`` (f0 from the notes, voicing,
loudness of the stem's audio), or, for a folder without them, YIN and loudness of
``stems/<Stem>.flac`` -- and the track's tempo from ``metadata.json``. Each line is analysed once
(:func:`ensemble.rag.analyze_controls`: pitch-class profile, level-normalised GRU states of the
leader decoder) and the arrays that :class:`ensemble.rag.RagDatabase` loads are written --
``chunks.npz`` (per chunk start: context and segment vectors, dynamics, level, entry and approach
seam features), ``tracks.npz`` (per-frame f0, voicing, loudness; tempo per line) and
``manifest.json`` (command, config, sha256 of every file) -- into a temporary folder renamed into
place, so a failed build leaves nothing behind. Controls only: with ``keep_audio`` the monophonic
lines' audio is also kept as Ogg Vorbis, for the splice comparison mode. The layout and the scores
are described in :mod:`ensemble.rag`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from ensemble.audio import load_audio
from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig, f0_yin, loudness_db
from ensemble.files import sha256_file
from ensemble.models.decoder import InstrumentDecoder
from ensemble.rag import (
    DB_FORMAT,
    RagConfig,
    analyze_controls,
    cumsum0,
    dynamics_db,
    l2_normalize,
    phrase_level,
    project_embeddings,
    seam_stats,
    window_means,
)

__all__ = ["build_database"]

_POLYPHONIC_STEMS = ("Keys",)  # their audio is chords: indexed by the top line's controls only


def _line_controls(track: Path, stem: str, features: FeatureConfig, feats: dict | None):
    """(f0 [T] Hz, voiced [T], loudness [T] dB, audio or None) of one line, or None if absent."""
    audio_path = track / "stems" / f"{stem}.flac"
    if feats is not None and f"{stem}/f0_hz" in feats:
        f0 = feats[f"{stem}/f0_hz"].astype(np.float32)
        voiced = feats[f"{stem}/voiced"].astype(bool)
        loud = feats[f"{stem}/loudness_db"].astype(np.float32)
        return np.where(voiced, f0, 0.0).astype(np.float32), voiced, loud, audio_path
    if not audio_path.is_file():
        return None
    audio = load_audio(audio_path, max_seconds=3600).audio
    f0, voiced = f0_yin(audio, config=features)
    return f0, voiced, loudness_db(audio, config=features), audio_path


def _tempo(meta: dict) -> float:
    for key in ("beat_bpm", "tempo_bpm"):
        v = meta.get(key)
        if isinstance(v, (int, float)) and 20.0 <= float(v) <= 400.0:
            return float(v)
    return float("nan")


def build_database(data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   decoder: InstrumentDecoder, *, splits: tuple[str, ...] = ("train", "valid"),
                   config: RagConfig = RagConfig(), command: str = "", decoder_version: str = "",
                   progress: bool = True, features: FeatureConfig = FeatureConfig(),
                   keep_audio: bool = False) -> dict:
    """Build a RAG database from a corpus folder into ``out_dir`` (written whole, then renamed).

    Args:
        data_dir: a corpus folder (``TrackNNNNN/{metadata.json, features.npz, stems/<Stem>.flac}``).
        out_dir: the database folder (replaced whole when it exists).
        decoder: the leader decoder whose GRU states are embedded.
        splits: which tracks are indexed; ``config.stems`` which of their lines.
        config: layout and retrieval settings, saved in the manifest.
        command, decoder_version: recorded in the manifest.
        progress: show a progress bar.
        features: the frame grid (the project's one grid).
        keep_audio: also store the monophonic lines' audio (the splice comparison mode).

    Returns:
        The manifest dict.

    Raises:
        EnsembleError: no such lines, or no line long enough.
    """
    fps = int(features.frame_rate)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    tracks = []
    for meta_path in sorted(data_dir.glob("*/metadata.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if meta.get("split") in splits:
            tracks.append((meta_path.parent, meta))
    if not tracks:
        raise EnsembleError(f"no tracks in splits {list(splits)} of {str(data_dir)!r}")

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent if out_dir.parent.exists()
                                else None))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the database is shipped
    chunk_step = int(round(config.chunk_seconds * fps))
    seg_frames = int(round(config.segment_seconds * fps))
    seam = int(round(config.seam_seconds * fps))
    min_rem = int(round(config.min_remaining_seconds * fps))
    names, tempos, f0s, voiceds, louds, offsets = [], [], [], [], [], [0]
    rows = {k: [] for k in ("track", "start", "remaining", "dynamics", "level", "seam_pitch",
                            "seam_loud", "pre_pitch", "pre_loud")}
    ctx_states, ctx_chroma, seg_states, seg_chroma = [], [], [], []
    try:
        for track, meta in tqdm(tracks, desc="index tracks", disable=not progress):
            feats = None
            if (track / "features.npz").is_file():
                with np.load(track / "features.npz") as z:
                    feats = {k: z[k] for k in z.files}
            for stem in config.stems:
                line = _line_controls(track, stem, features, feats)
                if line is None:
                    continue
                f0, voiced, loud, audio_path = line
                if not voiced.any():
                    continue
                # a line ends where its last note does: what follows is silence, never a continuation
                T = min(len(f0), int(np.flatnonzero(voiced)[-1]) + 1 + seam)
                f0, voiced, loud = f0[:T], voiced[:T], loud[:T]
                an = analyze_controls(f0, voiced, loud, decoder)
                li = len(names)
                names.append(f"{track.name}/{stem}")
                tempos.append(_tempo(meta))
                f0s.append(an.f0)
                voiceds.append(an.voiced)
                louds.append(an.loud)
                offsets.append(offsets[-1] + T)
                if keep_audio and stem not in _POLYPHONIC_STEMS and audio_path.is_file():
                    (tmp / "audio").mkdir(exist_ok=True)
                    audio = load_audio(audio_path, max_seconds=3600).audio
                    sf.write(tmp / "audio" / f"{track.name}_{stem}.ogg", audio, features.sample_rate,
                             format="OGG", subtype="VORBIS", compression_level=1.0 - config.vorbis_quality)
                starts = np.arange(0, T - min_rem, chunk_step)
                if len(starts) == 0:
                    continue
                cs, cc = cumsum0(an.states), cumsum0(an.chroma)
                ends = np.minimum(starts + seg_frames, T)
                seg_states.append(window_means(cs, starts, ends))
                seg_chroma.append(window_means(cc, starts, ends))
                per_l_s, per_l_c = [], []
                for L in config.lookbacks:
                    lf = int(round(L * fps))
                    b = np.maximum(starts - lf, 0)
                    per_l_s.append(np.where((starts > 0)[:, None], window_means(cs, b, starts), np.nan))
                    per_l_c.append(np.where((starts > 0)[:, None], window_means(cc, b, starts), np.nan))
                ctx_states.append(np.stack(per_l_s))
                ctx_chroma.append(np.stack(per_l_c))
                for s, e in zip(starts, ends, strict=True):
                    level = phrase_level(an.loud[s:e])
                    rows["dynamics"].append(dynamics_db(an.loud[s:e]))
                    rows["level"].append(level)
                    p, ld = seam_stats(an.f0[s:s + seam], an.voiced[s:s + seam], an.loud[s:s + seam])
                    rows["seam_pitch"].append(p)
                    rows["seam_loud"].append(ld - level)
                    a = max(0, s - seam)
                    p, ld = seam_stats(an.f0[a:s], an.voiced[a:s], an.loud[a:s]) if s > 0 else (np.nan, np.nan)
                    rows["pre_pitch"].append(p)
                    rows["pre_loud"].append(ld - level)
                rows["track"] += [li] * len(starts)
                rows["start"] += starts.tolist()
                rows["remaining"] += (T - starts).tolist()
        if not rows["track"]:
            raise EnsembleError(f"no line of {list(config.stems)} in {str(data_dir)!r} is longer than "
                                f"{config.min_remaining_seconds} s")
        seg_s = np.concatenate(seg_states)
        ctx_s = np.concatenate(ctx_states, axis=1)  # [L, N, H]
        # PCA of the GRU window means (fit on segment windows)
        mean = seg_s.mean(axis=0)
        _, _, vt = np.linalg.svd(seg_s - mean, full_matrices=False)
        comps = vt[: config.embed_dims]
        seg_vec = np.concatenate([project_embeddings(seg_s, mean, comps), l2_normalize(np.concatenate(seg_chroma))], 1)
        ctx_vec = []
        for li in range(len(config.lookbacks)):
            valid = ~np.isnan(ctx_s[li, :, 0])
            e = np.zeros((ctx_s.shape[1], comps.shape[0]))
            e[valid] = project_embeddings(ctx_s[li, valid], mean, comps)
            c = np.nan_to_num(l2_normalize(np.nan_to_num(np.concatenate(ctx_chroma, axis=1)[li])))
            c[~valid] = 0.0
            ctx_vec.append(np.concatenate([e, c], axis=1))
        ctx_vec = np.stack(ctx_vec)
        f32 = {k: np.array(rows[k], np.float32) for k in ("dynamics", "level", "seam_pitch", "seam_loud",
                                                           "pre_pitch", "pre_loud")}
        _savez(tmp / "chunks.npz", track=np.array(rows["track"], np.int32),
               start=np.array(rows["start"], np.int32), remaining=np.array(rows["remaining"], np.int32),
               ctx=ctx_vec.astype(np.float16), seg=seg_vec.astype(np.float16),
               pca_mean=mean.astype(np.float32), pca_components=comps.astype(np.float32), **f32)
        _savez(tmp / "tracks.npz", names=np.array(names), offsets=np.array(offsets, np.int64),
               tempo_bpm=np.array(tempos, np.float32),
               f0_hz=np.concatenate(f0s).astype(np.float16), voiced=np.concatenate(voiceds),
               loudness_db=np.concatenate(louds).astype(np.float16))
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        version = hashlib.sha256("".join(files.values()).encode()).hexdigest()[:12]
        per_stem = {s: sum(1 for n in names if n.endswith(f"/{s}")) for s in config.stems}
        manifest = {"format": DB_FORMAT, "version": version, "command": command,
                    "data_dir": str(data_dir), "splits": list(splits), "stems": list(config.stems),
                    "lines_per_stem": per_stem, "keep_audio": bool(keep_audio),
                    "decoder_version": decoder_version, "config": asdict(config),
                    "n_tracks": len(tracks), "n_lines": len(names), "n_chunks": len(rows["track"]),
                    "minutes": round(offsets[-1] / fps / 60, 2), "files": files,
                    "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(out_dir)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _savez(path: Path, **arrays) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
