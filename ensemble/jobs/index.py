"""Build the RAG database (``python -m ensemble index build``): an offline job.

Reads the leader stems of a corpus, analyses every track once (:func:`ensemble.rag.analyze_signal`:
YIN f0, loudness, RMS, chroma, the leader decoder's GRU states), and writes the arrays that
:class:`ensemble.rag.RagDatabase` loads -- ``chunks.npz`` (per chunk start: context and segment
vectors, RMS statistics, entry and approach seam features), ``tracks.npz`` (per-frame f0, voicing,
loudness), ``audio/<track>.ogg`` and ``manifest.json`` (command, config, sha256 of every file) --
into a temporary folder that is renamed into place, so a failed build leaves nothing behind. The
layout and the scores are described in :mod:`ensemble.rag`.
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
from ensemble.features import FeatureConfig
from ensemble.files import sha256_file
from ensemble.models.decoder import InstrumentDecoder
from ensemble.rag import (
    DB_FORMAT,
    RagConfig,
    analyze_signal,
    cumsum0,
    l2_normalize,
    project_embeddings,
    seam_stats,
    window_means,
)

__all__ = ["build_database"]


def build_database(data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   decoder: InstrumentDecoder, *, splits: tuple[str, ...] = ("train", "valid"),
                   stem: str = "Guitar", config: RagConfig = RagConfig(), command: str = "",
                   decoder_version: str = "", progress: bool = True,
                   features: FeatureConfig = FeatureConfig()) -> dict:
    """Build a RAG database from a corpus folder into ``out_dir`` (written whole, then renamed).

    Args:
        data_dir: a corpus folder (``TrackNNNNN/{metadata.json, stems/<stem>.flac}``).
        out_dir: the database folder (replaced whole when it exists).
        decoder: the leader decoder whose GRU states are embedded.
        splits, stem: which tracks and which stem are indexed.
        config: layout and retrieval settings, saved in the manifest.
        command, decoder_version: recorded in the manifest.
        progress: show a progress bar.
        features: the frame grid (the project's one grid).

    Returns:
        The manifest dict.

    Raises:
        EnsembleError: no such stems, or no track long enough.
    """
    fps = int(features.frame_rate)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    tracks = []
    for meta_path in sorted(data_dir.glob("*/metadata.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if meta.get("split") in splits and (meta_path.parent / "stems" / f"{stem}.flac").is_file():
            tracks.append(meta_path.parent)
    if not tracks:
        raise EnsembleError(f"no {stem!r} stems in splits {list(splits)} of {str(data_dir)!r}")

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent if out_dir.parent.exists()
                                else None))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the database is shipped
    (tmp / "audio").mkdir()
    chunk_step = int(round(config.chunk_seconds * fps))
    seg_frames = int(round(config.segment_seconds * fps))
    seam = int(round(config.seam_seconds * fps))
    min_rem = int(round(config.min_remaining_seconds * fps))
    names, f0s, voiceds, louds, offsets = [], [], [], [], [0]
    rows = {k: [] for k in ("track", "start", "remaining", "rms_mean", "rms_std", "seam_pitch",
                            "seam_loud", "pre_pitch", "pre_loud")}
    ctx_states, ctx_chroma, seg_states, seg_chroma = [], [], [], []
    try:
        for ti, track in enumerate(tqdm(tracks, desc="index tracks", disable=not progress)):
            audio = load_audio(track / "stems" / f"{stem}.flac", max_seconds=3600).audio
            an = analyze_signal(audio, decoder, features)
            T = len(an.f0)
            names.append(track.name)
            f0s.append(an.f0)
            voiceds.append(an.voiced)
            louds.append(an.loud)
            offsets.append(offsets[-1] + T)
            sf.write(tmp / "audio" / f"{track.name}.ogg", audio, features.sample_rate, format="OGG",
                     subtype="VORBIS", compression_level=1.0 - config.vorbis_quality)
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
            r = an.rms
            for s, e in zip(starts, ends, strict=True):
                rows["rms_mean"].append(float(r[s:e].mean()))
                rows["rms_std"].append(float(r[s:e].std()))
                p, ld = seam_stats(an.f0[s:s + seam], an.voiced[s:s + seam], an.loud[s:s + seam])
                rows["seam_pitch"].append(p)
                rows["seam_loud"].append(ld)
                a = max(0, s - seam)
                p, ld = seam_stats(an.f0[a:s], an.voiced[a:s], an.loud[a:s]) if s > 0 else (np.nan, np.nan)
                rows["pre_pitch"].append(p)
                rows["pre_loud"].append(ld)
            rows["track"] += [ti] * len(starts)
            rows["start"] += starts.tolist()
            rows["remaining"] += (T - starts).tolist()
        if not rows["track"]:
            raise EnsembleError(f"no track in {str(data_dir)!r} is longer than "
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
        _savez(tmp / "chunks.npz", track=np.array(rows["track"], np.int32),
               start=np.array(rows["start"], np.int32), remaining=np.array(rows["remaining"], np.int32),
               ctx=ctx_vec.astype(np.float16), seg=seg_vec.astype(np.float16),
               rms_mean=np.array(rows["rms_mean"], np.float32), rms_std=np.array(rows["rms_std"], np.float32),
               seam_pitch=np.array(rows["seam_pitch"], np.float32),
               seam_loud=np.array(rows["seam_loud"], np.float32),
               pre_pitch=np.array(rows["pre_pitch"], np.float32),
               pre_loud=np.array(rows["pre_loud"], np.float32),
               pca_mean=mean.astype(np.float32), pca_components=comps.astype(np.float32))
        _savez(tmp / "tracks.npz", names=np.array(names), offsets=np.array(offsets, np.int64),
               f0_hz=np.concatenate(f0s).astype(np.float16), voiced=np.concatenate(voiceds),
               loudness_db=np.concatenate(louds).astype(np.float16))
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        version = hashlib.sha256("".join(files.values()).encode()).hexdigest()[:12]
        manifest = {"format": DB_FORMAT, "version": version, "command": command,
                    "data_dir": str(data_dir), "splits": list(splits), "stem": stem,
                    "decoder_version": decoder_version, "config": asdict(config),
                    "n_tracks": len(names), "n_chunks": len(rows["track"]),
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
