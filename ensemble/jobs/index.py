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

The build is two steps, so that it can be spread over machines (:mod:`ensemble.jobs.distributed`
runs the first on Dask):

1. :func:`extract_track` -- one track's lines analysed into a *shard* (a dict of arrays; one task);
2. :func:`merge_shards` -- the shards, in track order, joined into the database: the PCA of the GRU
   window means is fitted on every segment window (as a single-process build always did), or taken
   from an existing database (``pca``: then each shard already holds its final vectors, and the
   merge never holds the GRU-width window means of the whole corpus -- what a corpus of millions of
   segments needs).

``variants`` makes a larger controls-only corpus from the same lines: each line is also indexed
transposed (f0 shifted by whole semitones) and at other tempos (its controls resampled in time, its
tempo scaled), each copy named ``TrackNNNNN/<Stem>@+3st@x0.9``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from ensemble.audio import load_audio
from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig, f0_yin, loudness_db
from ensemble.files import sha256_file
from ensemble.models.decoder import InstrumentDecoder
from ensemble.rag import (
    DB_FORMAT,
    RagConfig,
    RagDatabase,
    analyze_controls,
    cumsum0,
    dynamics_db,
    l2_normalize,
    phrase_level,
    project_embeddings,
    seam_stats,
    window_means,
)
from ensemble.rag_index import AnnConfig, build_ann, save_ann

__all__ = ["Variant", "build_database", "extract_track", "merge_shards", "list_tracks", "read_pca",
           "decoder_digest", "rebuild_ann"]

_POLYPHONIC_STEMS = ("Keys",)  # their audio is chords: indexed by the top line's controls only
_ROWS = ("dynamics", "level", "seam_pitch", "seam_loud", "pre_pitch", "pre_loud")


@dataclass(frozen=True)
class Variant:
    """One copy of every line: f0 shifted by ``semitones``, controls played ``tempo`` times as fast.

    The identity ``Variant()`` is the line as it is (a plain build indexes only that one).
    """

    semitones: int = 0
    tempo: float = 1.0

    def __post_init__(self) -> None:
        if not -12 <= int(self.semitones) <= 12:
            raise EnsembleError(f"variant semitones = {self.semitones}; allowed: -12..12")
        if not 0.5 <= float(self.tempo) <= 2.0:
            raise EnsembleError(f"variant tempo = {self.tempo}; allowed: 0.5..2.0 (a factor)")

    @property
    def suffix(self) -> str:
        """What the line's name gets ("" for the identity), e.g. ``@+3st@x0.9``."""
        if self.semitones == 0 and self.tempo == 1.0:
            return ""
        return f"@{int(self.semitones):+d}st@x{float(self.tempo):g}"

    def apply(self, f0: np.ndarray, voiced: np.ndarray, loud: np.ndarray):
        """(f0 [T'] Hz, voiced [T'], loudness [T'] dB) of this copy: nearest-frame resampling in
        time (T' = round(T / tempo)) and f0 times 2^(semitones / 12)."""
        if self.tempo != 1.0:
            n = max(1, int(round(len(f0) / self.tempo)))
            src = np.minimum(np.floor(np.arange(n) * self.tempo + 0.5).astype(np.int64), len(f0) - 1)
            f0, voiced, loud = f0[src], voiced[src], loud[src]
        if self.semitones:
            f0 = (f0 * np.float32(2.0 ** (self.semitones / 12.0))).astype(np.float32)
        return f0, voiced, loud


IDENTITY = (Variant(),)


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


def list_tracks(data_dir: str | os.PathLike, splits: tuple[str, ...]) -> list[tuple[Path, dict]]:
    """(track folder, metadata) of every track of ``splits``, sorted by folder name.

    Raises:
        EnsembleError: no such track.
    """
    data_dir = Path(data_dir)
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
    return tracks


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """The GRU pass on one thread: the same arithmetic in every process (a serial build, a Dask
    worker), and on this shared 2-core machine two threads per GRU ran 50x slower (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def extract_track(track: Path, meta: dict, decoder: InstrumentDecoder, *, config: RagConfig,
                  features: FeatureConfig = FeatureConfig(), variants: tuple[Variant, ...] = IDENTITY,
                  pca: tuple[np.ndarray, np.ndarray] | None = None,
                  audio_dir: Path | None = None) -> dict[str, np.ndarray]:
    """One track's lines analysed into a shard (one task of a distributed build).

    Args:
        track: the track folder; ``meta`` its ``metadata.json``.
        decoder: the leader decoder whose GRU states are embedded.
        config: layout settings (stems, chunk length, lookbacks, seam).
        variants: copies of each line to index (transposed / other tempos).
        pca: (mean [H], components [D, H]) to project with here; None keeps the GRU window means
            (``seg_states`` [n, H], ``ctx_states`` [L, n, H]) for a PCA fitted at the merge.
        audio_dir: keep the monophonic lines' audio there as Ogg Vorbis (``--keep-audio``).

    Returns:
        A dict of arrays: per line ``names``, ``tempo_bpm``, ``frames`` and the concatenated per-frame
        ``f0`` (Hz), ``voiced``, ``loud`` (dB); per chunk ``line`` (index into this shard's lines),
        ``start``, ``remaining`` (frames), the seam/dynamics rows and either the window means or
        the final ``seg_vec`` [n, D + 12] and ``ctx_vec`` [L, n, D + 12] (float32).
    """
    fps = int(features.frame_rate)
    chunk_step = int(round(config.chunk_seconds * fps))
    seg_frames = int(round(config.segment_seconds * fps))
    seam = int(round(config.seam_seconds * fps))
    min_rem = int(round(config.min_remaining_seconds * fps))
    names, tempos, frames, f0s, voiceds, louds = [], [], [], [], [], []
    rows = {k: [] for k in ("line", "start", "remaining", *_ROWS)}
    ctx_states, ctx_chroma, seg_states, seg_chroma = [], [], [], []
    feats = None
    if (track / "features.npz").is_file():
        with np.load(track / "features.npz") as z:
            feats = {k: z[k] for k in z.files}
    with _one_torch_thread():
        for stem in config.stems:
            line = _line_controls(track, stem, features, feats)
            if line is None:
                continue
            f0_src, voiced_src, loud_src, audio_path = line
            for variant in variants:
                f0, voiced, loud = variant.apply(f0_src, voiced_src, loud_src)
                if not voiced.any():
                    continue
                # a line ends where its last note does: what follows is silence, never a continuation
                T = min(len(f0), int(np.flatnonzero(voiced)[-1]) + 1 + seam)
                f0, voiced, loud = f0[:T], voiced[:T], loud[:T]
                an = analyze_controls(f0, voiced, loud, decoder)
                li = len(names)
                names.append(f"{track.name}/{stem}{variant.suffix}")
                tempos.append(_tempo(meta) * variant.tempo)
                f0s.append(an.f0)
                voiceds.append(an.voiced)
                louds.append(an.loud)
                frames.append(T)
                if audio_dir is not None and not variant.suffix and stem not in _POLYPHONIC_STEMS \
                        and audio_path.is_file():
                    _keep_audio(audio_path, audio_dir / f"{track.name}_{stem}.ogg", features, config)
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
                rows["line"] += [li] * len(starts)
                rows["start"] += starts.tolist()
                rows["remaining"] += (T - starts).tolist()
    H = decoder.config.hidden
    L = len(config.lookbacks)
    shard = {"names": np.array(names, dtype=str), "tempo_bpm": np.array(tempos, np.float64),
             "frames": np.array(frames, np.int64),
             "f0": np.concatenate(f0s) if f0s else np.zeros(0, np.float32),
             "voiced": np.concatenate(voiceds) if voiceds else np.zeros(0, bool),
             "loud": np.concatenate(louds) if louds else np.zeros(0, np.float32),
             "line": np.array(rows["line"], np.int64), "start": np.array(rows["start"], np.int64),
             "remaining": np.array(rows["remaining"], np.int64),
             **{k: np.array(rows[k], np.float64) for k in _ROWS}}
    seg_s = np.concatenate(seg_states) if seg_states else np.zeros((0, H))
    seg_c = np.concatenate(seg_chroma) if seg_chroma else np.zeros((0, 12))
    ctx_s = np.concatenate(ctx_states, axis=1) if ctx_states else np.zeros((L, 0, H))
    ctx_c = np.concatenate(ctx_chroma, axis=1) if ctx_chroma else np.zeros((L, 0, 12))
    if pca is None:
        shard.update(seg_states=seg_s, seg_chroma=seg_c, ctx_states=ctx_s, ctx_chroma=ctx_c)
    else:
        seg_vec, ctx_vec = _vectors(seg_s, seg_c, ctx_s, ctx_c, *pca)
        shard.update(seg_vec=seg_vec.astype(np.float32), ctx_vec=ctx_vec.astype(np.float32))
    return shard


def _keep_audio(src: Path, dst: Path, features: FeatureConfig, config: RagConfig) -> None:
    audio = load_audio(src, max_seconds=3600).audio
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=".ogg", dir=dst.parent)
    os.close(fd)
    try:
        sf.write(name, audio, features.sample_rate, format="OGG", subtype="VORBIS",
                 compression_level=1.0 - config.vorbis_quality)
        os.chmod(name, 0o644)
        os.replace(name, dst)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _vectors(seg_s: np.ndarray, seg_c: np.ndarray, ctx_s: np.ndarray, ctx_c: np.ndarray,
             mean: np.ndarray, comps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segment [n, D + 12] and context [L, n, D + 12] vectors from window means (the PCA applied)."""
    seg_vec = np.concatenate([project_embeddings(seg_s, mean, comps), l2_normalize(seg_c)], 1)
    ctx_vec = []
    for li in range(ctx_s.shape[0]):
        valid = ~np.isnan(ctx_s[li, :, 0])
        e = np.zeros((ctx_s.shape[1], comps.shape[0]))
        e[valid] = project_embeddings(ctx_s[li, valid], mean, comps)
        c = np.nan_to_num(l2_normalize(np.nan_to_num(ctx_c[li])))
        c[~valid] = 0.0
        ctx_vec.append(np.concatenate([e, c], axis=1))
    return seg_vec, np.stack(ctx_vec) if ctx_vec else np.zeros((0, len(seg_vec), seg_vec.shape[1]))


def read_pca(database: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(mean [H], components [D, H]) of an existing database (``--pca-from``).

    Raises:
        EnsembleError: no ``chunks.npz`` there.
    """
    path = Path(database) / "chunks.npz"
    if not path.is_file():
        raise EnsembleError(f"--pca-from {str(database)!r} has no chunks.npz; allowed: a database folder "
                            "built by `python -m ensemble index build`")
    with np.load(path) as z:
        return z["pca_mean"].astype(np.float32), z["pca_components"].astype(np.float32)


def decoder_digest(decoder: InstrumentDecoder) -> str:
    """sha256 (12 hex) of a decoder's config and weights: which shards a resumed build may reuse."""
    h = hashlib.sha256(json.dumps(asdict(decoder.config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(decoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def build_database(data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   decoder: InstrumentDecoder, *, splits: tuple[str, ...] = ("train", "valid"),
                   config: RagConfig = RagConfig(), command: str = "", decoder_version: str = "",
                   progress: bool = True, features: FeatureConfig = FeatureConfig(),
                   keep_audio: bool = False, variants: tuple[Variant, ...] = IDENTITY,
                   pca: tuple[np.ndarray, np.ndarray] | None = None,
                   ann: AnnConfig = AnnConfig()) -> dict:
    """Build a RAG database from a corpus folder into ``out_dir``, in this process (no Dask).

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
        variants: copies of every line (see :class:`Variant`); default: the lines as they are.
        pca: (mean, components) to embed with; None fits them on this corpus.
        ann: the approximate index built above ``config.ivf_threshold`` chunks.

    Returns:
        The manifest dict.

    Raises:
        EnsembleError: no such lines, or no line long enough.
    """
    tracks = list_tracks(data_dir, splits)
    out_dir = Path(out_dir)
    tmp = _staging_dir(out_dir)
    try:
        audio_dir = tmp / "audio" if keep_audio else None
        shards = (extract_track(track, meta, decoder, config=config, features=features, variants=variants,
                                pca=pca, audio_dir=audio_dir)
                  for track, meta in tqdm(tracks, desc="index tracks", disable=not progress))
        return merge_shards(shards, tmp, out_dir, config=config, features=features, data_dir=data_dir,
                            splits=splits, n_tracks=len(tracks), command=command,
                            decoder_version=decoder_version, keep_audio=keep_audio, variants=variants,
                            pca=pca, ann=ann)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _staging_dir(out_dir: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent if out_dir.parent.exists()
                                else None))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the database is shipped
    return tmp


def merge_shards(shards: Iterable[dict], tmp: Path, out_dir: Path, *, config: RagConfig,
                 features: FeatureConfig, data_dir, splits, n_tracks: int, command: str,
                 decoder_version: str, keep_audio: bool, variants: tuple[Variant, ...],
                 pca: tuple[np.ndarray, np.ndarray] | None, ann: AnnConfig = AnnConfig(),
                 build: dict | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Join shards (in track order) into the database files in ``tmp``, then rename it to ``out_dir``.

    Args:
        shards: :func:`extract_track` results in track order (any iterable: read one at a time).
        tmp: the staging folder (on ``out_dir``'s file system); ``audio/`` there is kept.
        build: how the shards were made (workers, times), recorded in the manifest.

    Returns:
        The manifest dict.

    Raises:
        EnsembleError: no line long enough.
    """
    fps = int(features.frame_rate)
    names, tempos, f0s, voiceds, louds, offsets = [], [], [], [], [], [0]
    cols = {k: [] for k in ("track", "start", "remaining", *_ROWS)}
    vec = {k: [] for k in ("seg_states", "seg_chroma", "ctx_states", "ctx_chroma", "seg_vec", "ctx_vec")}
    for shard in shards:
        base = len(names)
        names += [str(x) for x in shard["names"]]
        tempos += shard["tempo_bpm"].tolist()
        for n in shard["frames"].tolist():
            offsets.append(offsets[-1] + n)
        f0s.append(shard["f0"])
        voiceds.append(shard["voiced"])
        louds.append(shard["loud"])
        cols["track"].append(shard["line"] + base)
        for k in ("start", "remaining", *_ROWS):
            cols[k].append(shard[k])
        for k in vec:
            if k in shard:
                vec[k].append(shard[k])
    n_chunks = sum(len(x) for x in cols["track"])
    if n_chunks == 0:
        raise EnsembleError(f"no line of {list(config.stems)} in {str(data_dir)!r} is longer than "
                            f"{config.min_remaining_seconds} s")
    if pca is None:
        seg_s = np.concatenate(vec["seg_states"])
        # PCA of the GRU window means (fit on segment windows)
        mean = seg_s.mean(axis=0)
        _, _, vt = np.linalg.svd(seg_s - mean, full_matrices=False)
        comps = vt[: config.embed_dims]
        seg_vec, ctx_vec = _vectors(seg_s, np.concatenate(vec["seg_chroma"]),
                                    np.concatenate(vec["ctx_states"], axis=1),
                                    np.concatenate(vec["ctx_chroma"], axis=1), mean, comps)
        del seg_s, vec
    else:
        mean, comps = pca
        seg_vec, ctx_vec = np.concatenate(vec["seg_vec"]), np.concatenate(vec["ctx_vec"], axis=1)
        del vec
    ctx16, seg16 = ctx_vec.astype(np.float16), seg_vec.astype(np.float16)
    del ctx_vec, seg_vec
    f32 = {k: np.concatenate(cols[k]).astype(np.float32) for k in _ROWS}
    _savez(tmp / "chunks.npz", track=np.concatenate(cols["track"]).astype(np.int32),
           start=np.concatenate(cols["start"]).astype(np.int32),
           remaining=np.concatenate(cols["remaining"]).astype(np.int32),
           ctx=ctx16, seg=seg16, pca_mean=mean.astype(np.float32), pca_components=comps.astype(np.float32),
           **f32)
    _savez(tmp / "tracks.npz", names=np.array(names), offsets=np.array(offsets, np.int64),
           tempo_bpm=np.array(tempos, np.float32),
           f0_hz=np.concatenate(f0s).astype(np.float16), voiced=np.concatenate(voiceds),
           loudness_db=np.concatenate(louds).astype(np.float16))
    del f0s, voiceds, louds
    ann_section = None
    if n_chunks > config.ivf_threshold:
        if log:
            log(f"{n_chunks} chunks > ivf_threshold {config.ivf_threshold}: building the IVF index")
        del ctx16, seg16
        # the index holds coherence features read from every array: build it from the database as loaded
        (tmp / "manifest.json").write_text(json.dumps({"format": DB_FORMAT, "config": asdict(config)}))
        db = RagDatabase.load(tmp, features=features, index=False)
        index, ann_section = build_ann(db, ann, log=log)
        ann_section["files"] = save_ann(index, tmp)
        del index, db
        (tmp / "manifest.json").unlink()
    files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    version = hashlib.sha256("".join(files.values()).encode()).hexdigest()[:12]
    per_stem = {s: sum(1 for n in names if n.split("@")[0].endswith(f"/{s}")) for s in config.stems}
    manifest = {"format": DB_FORMAT, "version": version, "command": command,
                "data_dir": str(data_dir), "splits": list(splits), "stems": list(config.stems),
                "lines_per_stem": per_stem, "keep_audio": bool(keep_audio),
                "decoder_version": decoder_version, "config": asdict(config),
                "n_tracks": n_tracks, "n_lines": len(names), "n_chunks": n_chunks,
                "minutes": round(offsets[-1] / fps / 60, 2), "files": files,
                "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if tuple(variants) != IDENTITY:
        manifest["variants"] = {
            "how": "every line indexed once per variant: f0 times 2^(semitones/12), controls resampled "
                   "to tempo x the original (nearest frame), the line's tempo scaled alike",
            "variants": [asdict(v) for v in variants]}
    if pca is not None:
        manifest["pca"] = "taken from an existing database (--pca-from), not fitted on this corpus"
    if build is not None:
        manifest["build"] = build
    if ann_section is not None:
        manifest["ann"] = ann_section
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


def rebuild_ann(database: str | os.PathLike, ann: AnnConfig = AnnConfig(), *,
                log: Callable[[str], None] | None = None) -> dict:
    """Rebuild only the approximate index of a database above ``ivf_threshold`` (its arrays are kept).

    For a database whose index is of another layout (``ensemble.rag_index.LAYOUT``) or to try other
    index settings without extracting features again. Writes ``ann.faiss``, removes index files of
    older layouts and updates the manifest (its ``ann`` section, file hashes and version).

    Raises:
        EnsembleError: not a database, or at most ``ivf_threshold`` chunks (it is searched exactly).
    """
    root = Path(database)
    db = RagDatabase.load(root, index=False)
    if db.n_chunks <= db.config.ivf_threshold:
        raise EnsembleError(f"RAG database {str(root)!r} has {db.n_chunks} chunks, at most ivf_threshold "
                            f"{db.config.ivf_threshold}: it is searched exactly and keeps no approximate index")
    index, section = build_ann(db, ann, log=log)
    manifest = dict(db.manifest)
    del db
    faiss_name = save_ann(index, root)[0]  # written only once trained and measured
    del index
    for old in root.glob("ann_L*.faiss"):  # the per-lookback relevance indexes of the previous layout
        old.unlink()
    section["files"] = [faiss_name]
    section["command"] = (f"python -c \"from ensemble.jobs.index import rebuild_ann; rebuild_ann({str(root)!r})\"")
    files = {k: v for k, v in manifest.get("files", {}).items() if (root / k).is_file()}
    files[faiss_name] = sha256_file(root / faiss_name)
    manifest.update(files=dict(sorted(files.items())), ann=section,
                    version=hashlib.sha256("".join(v for _, v in sorted(files.items())).encode()).hexdigest()[:12])
    tmp = root / ".manifest.json.part"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(root / "manifest.json")
    return manifest


def _savez(path: Path, **arrays) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
