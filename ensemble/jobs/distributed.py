"""The RAG database build on Dask (``python -m ensemble index build --workers N | --scheduler ADDR``).

One task is one track's feature extraction (:func:`ensemble.jobs.index.extract_track`): the worker
analyses the track's lines and writes the result as a *shard* (``<work_dir>/<fingerprint>/
TrackNNNNN.npz``) through a temporary name renamed into place, so a shard on disk is always whole.
When every track has its shard, they are merged in track order (:func:`ensemble.jobs.index.
merge_shards`) into the same database a single-process build writes. A build that is killed or
fails leaves its finished shards behind: run the same command again and only the missing tracks are
computed. The fingerprint (a hash of the layout config, frame grid, variants, PCA and decoder
weights) keeps a changed build from reusing shards made with other settings. The shards are deleted
once the database is in place.

The cluster is a local one (``workers`` processes, one thread each: the GRU pass is one thread,
see :func:`ensemble.jobs.index._one_torch_thread`) unless ``scheduler`` names a running one; with a
cluster of several machines, ``work_dir`` must be a folder every worker can write (a shared file
system) and the corpus must be at the same path on every worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig
from ensemble.files import atomic_write_text
from ensemble.models.decoder import InstrumentDecoder
from ensemble.rag import RagConfig
from ensemble.rag_index import AnnConfig

from .index import IDENTITY, Variant, _staging_dir, decoder_digest, extract_track, list_tracks, merge_shards

__all__ = ["build_database_distributed", "MAX_WORKERS"]

MAX_WORKERS = 256
CONNECT_TIMEOUT_S = 10


def _fingerprint(config: RagConfig, features: FeatureConfig, variants, pca, decoder: InstrumentDecoder,
                 splits, keep_audio: bool) -> str:
    h = hashlib.sha256(json.dumps({"config": asdict(config), "features": asdict(features),
                                   "variants": [asdict(v) for v in variants], "splits": list(splits),
                                   "keep_audio": keep_audio}, sort_keys=True).encode())
    h.update(decoder_digest(decoder).encode())
    if pca is not None:
        h.update(np.ascontiguousarray(pca[0]).tobytes())
        h.update(np.ascontiguousarray(pca[1]).tobytes())
    return h.hexdigest()[:16]


def _write_shard(path: Path, shard: dict) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **shard)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a shard on disk is whole or absent
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_shard(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# A worker rebuilds the decoder once from its (config, weights) and keeps it for its next tasks (the
# module (torch parametrizations, weak references) does not pickle; its state dict does).
_DECODERS: dict[str, InstrumentDecoder] = {}


def _decoder_parts(decoder: InstrumentDecoder) -> tuple[str, object, dict]:
    return decoder_digest(decoder), decoder.config, {k: v.detach().cpu().clone() for k, v in
                                                    decoder.state_dict().items()}


def _worker_decoder(parts: tuple[str, object, dict]) -> InstrumentDecoder:
    digest, config, state = parts
    if digest not in _DECODERS:
        decoder = InstrumentDecoder(config)
        decoder.load_state_dict(state)
        decoder.eval()
        _DECODERS.clear()
        _DECODERS[digest] = decoder
    return _DECODERS[digest]


def _peak_rss_kb() -> int:
    """This process's peak resident memory, kB: VmHWM (reset at exec, so a spawned worker does not
    report its parent's peak as ru_maxrss does), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kB


def _extract_task(track: str, meta: dict, decoder_parts: tuple, shard_path: str, config: RagConfig,
                  features: FeatureConfig, variants: tuple[Variant, ...], pca, audio_dir: str | None) -> dict:
    """Runs on a worker: one track into its shard. Returns timing and the process's peak memory."""
    from ensemble.models.decoder import enable_fast_cpu_inference

    enable_fast_cpu_inference()  # the worker is an entry point too: the same GRU arithmetic as the CLI
    t0 = time.perf_counter()
    decoder = _worker_decoder(decoder_parts)
    shard = extract_track(Path(track), meta, decoder, config=config, features=features, variants=variants,
                          pca=pca, audio_dir=Path(audio_dir) if audio_dir else None)
    _write_shard(Path(shard_path), shard)
    try:
        from distributed import get_worker

        worker = get_worker().address
    except ValueError:  # not on a worker (never here; kept for direct calls)
        worker = f"pid-{os.getpid()}"
    peak_kb = _peak_rss_kb()
    return {"track": Path(track).name, "seconds": time.perf_counter() - t0, "worker": worker,
            "peak_rss_mb": round(peak_kb / 1024, 1), "chunks": int(len(shard["line"]))}


def _client(workers: int | None, scheduler: str | None, timeout_s: float):
    """A dask.distributed Client: to ``scheduler``, or to a new local cluster of ``workers`` processes."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=timeout_s), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise EnsembleError(f"--scheduler {scheduler!r} cannot be reached within {timeout_s:g} s "
                                f"({type(exc).__name__}: {exc}); allowed: the address of a running Dask "
                                "scheduler, e.g. tcp://10.0.0.5:8786") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    return Client(cluster), cluster


def check_workers(workers: int | None, scheduler: str | None) -> None:
    """Raises EnsembleError for a bad ``workers`` (1..MAX_WORKERS, or None with a scheduler)."""
    if scheduler is not None and not str(scheduler).strip():
        raise EnsembleError("--scheduler ''; allowed: the address of a running Dask scheduler, "
                            "e.g. tcp://10.0.0.5:8786")
    if scheduler is None and (workers is None or isinstance(workers, bool) or not isinstance(workers, int)
                              or not 1 <= workers <= MAX_WORKERS):
        raise EnsembleError(f"--workers {workers!r}; allowed: an integer 1..{MAX_WORKERS} (local worker "
                            "processes)")


def build_database_distributed(data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                               decoder: InstrumentDecoder, *, workers: int | None = 2,
                               scheduler: str | None = None, work_dir: str | os.PathLike | None = None,
                               splits: tuple[str, ...] = ("train", "valid"), config: RagConfig = RagConfig(),
                               command: str = "", decoder_version: str = "", progress: bool = True,
                               features: FeatureConfig = FeatureConfig(), keep_audio: bool = False,
                               variants: tuple[Variant, ...] = IDENTITY,
                               pca: tuple[np.ndarray, np.ndarray] | None = None, ann: AnnConfig = AnnConfig(),
                               keep_shards: bool = False, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                               log: Callable[[str], None] | None = None) -> dict:
    """Build a RAG database with one Dask task per track; resumable (see the module docstring).

    Args:
        workers: local worker processes (ignored with ``scheduler``).
        scheduler: address of a running Dask scheduler (``tcp://HOST:8786``); None: a local cluster.
        work_dir: where shards go (default: ``.<out>.shards`` next to ``out_dir``).
        keep_shards: leave the shards after the merge (default: deleted).
        connect_timeout_s: how long to try reaching ``scheduler``.
        Others: as :func:`ensemble.jobs.index.build_database`.

    Returns:
        The manifest, with ``build``: workers, tracks computed and reused, seconds, tracks/s of the
        extraction, peak memory per worker.

    Raises:
        EnsembleError: bad ``workers``, an unreachable scheduler, no tracks, or a track that failed
            (named, with its error; the finished shards stay for the next run).
    """
    check_workers(workers, scheduler)
    say = log or (lambda m: print(m, file=sys.stderr))
    tracks = list_tracks(data_dir, splits)
    out_dir = Path(out_dir)
    root = Path(work_dir) if work_dir else out_dir.with_name(f".{out_dir.name}.shards")
    fp = _fingerprint(config, features, variants, pca, decoder, splits, keep_audio)
    shard_dir = root / fp
    shard_dir.mkdir(parents=True, exist_ok=True)
    audio_dir = shard_dir / "audio" if keep_audio else None
    path_of = {track.name: shard_dir / f"{track.name}.npz" for track, _ in tracks}
    todo = [(track, meta) for track, meta in tracks if not path_of[track.name].is_file()]
    reused = len(tracks) - len(todo)
    if reused:
        say(f"resuming: {reused} of {len(tracks)} tracks already have shards in {shard_dir}")
    results: list[dict] = []
    t0 = time.perf_counter()
    start_s = 0.0
    n_workers = workers
    if todo:
        client, cluster = _client(workers, scheduler, connect_timeout_s)
        try:
            from distributed import as_completed

            n_workers = len(client.scheduler_info(n_workers=-1)["workers"]) if scheduler else workers
            if n_workers == 0:
                raise EnsembleError(f"--scheduler {scheduler!r} has no workers; allowed: a cluster with at "
                                    "least one worker")
            dec = client.scatter([_decoder_parts(decoder)], broadcast=True)[0]
            start_s = time.perf_counter() - t0  # cluster up, decoder on every worker
            futures = {client.submit(_extract_task, str(track), meta, dec, str(path_of[track.name]), config,
                                     features, variants, pca, str(audio_dir) if audio_dir else None,
                                     key=f"extract-{fp}-{track.name}", pure=False): track.name
                       for track, meta in todo}
            done = as_completed(futures)
            for future in done:
                name = futures[future]
                if future.status != "finished":
                    exc = future.exception()
                    for other in futures:
                        other.cancel()
                    raise EnsembleError(f"track {name!r} failed ({type(exc).__name__}: {exc}); "
                                        f"{len(results) + reused} of {len(tracks)} shards are in {shard_dir}: "
                                        "run the same command again to resume") from None
                results.append(future.result())
                if progress:
                    say(f"[{len(results) + reused}/{len(tracks)}] {name}: {results[-1]['chunks']} chunks in "
                        f"{results[-1]['seconds']:.1f} s on {results[-1]['worker']}")
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    extract_s = time.perf_counter() - t0 - start_s  # the tasks only, from the first submit
    peaks: dict[str, float] = {}
    for r in results:
        peaks[r["worker"]] = max(peaks.get(r["worker"], 0.0), r["peak_rss_mb"])
    build = {"engine": "dask.distributed", "scheduler": scheduler or f"LocalCluster({workers} processes)",
             "workers": n_workers, "tracks": len(tracks), "tracks_computed": len(results),
             "tracks_reused": reused, "cluster_start_seconds": round(start_s, 2),
             "extract_seconds": round(extract_s, 2),
             "tracks_per_second": round(len(results) / extract_s, 4) if results and extract_s > 0 else None,
             "task_seconds_total": round(sum(r["seconds"] for r in results), 2),
             "peak_rss_mb_per_worker": peaks, "fingerprint": fp}
    t1 = time.perf_counter()
    tmp = _staging_dir(out_dir)
    try:
        if audio_dir is not None and audio_dir.is_dir():
            shutil.copytree(audio_dir, tmp / "audio")
        shards = (_read_shard(path_of[track.name]) for track, _ in tracks)
        manifest = merge_shards(shards, tmp, out_dir, config=config, features=features, data_dir=data_dir,
                                splits=splits, n_tracks=len(tracks), command=command,
                                decoder_version=decoder_version, keep_audio=keep_audio, variants=variants,
                                pca=pca, ann=ann, build=build, log=say)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest["build"]["merge_seconds"] = round(time.perf_counter() - t1, 2)
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    if not keep_shards:
        shutil.rmtree(shard_dir, ignore_errors=True)
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
    return manifest
