"""A server run's own temporary folder, and the start-up sweep of folders earlier runs left behind.

Stdlib only, so that ``app.py`` can prepare the process (this folder as ``GRADIO_TEMP_DIR``, the
allocator's settings) before it imports anything heavy. A run folder is named
``ensemble-app-<pid>-<random>``; a folder whose process is no longer alive belonged to a run that was
killed or crashed before it could clean up, and :func:`sweep_earlier_runs` deletes it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["RUN_PREFIX", "memory_breakdown", "new_run_folder", "object_counts", "release_memory", "sweep_earlier_runs",
           "trim_heap"]

RUN_PREFIX = "ensemble-app-"
_RUN_NAME = re.compile(re.escape(RUN_PREFIX) + r"(\d+)-[A-Za-z0-9_]+")


def new_run_folder(parent: str | os.PathLike | None = None) -> Path:
    """A fresh folder for this server run, ``<parent>/ensemble-app-<pid>-<random>`` (created).

    Args:
        parent: where run folders live; ``None``: the system's temporary folder.
    """
    parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-", dir=parent))


# jemalloc's mallctl name that purges the dirty pages of every arena (MALLCTL_ARENAS_ALL = 4096)
JEMALLOC_PURGE_ALL = b"arena.4096.purge"


def trim_heap() -> bool:
    """Hand the memory the C allocator holds free back to the system -> whether it ran (False where
    the allocator has no such call, e.g. musl, macOS).

    * jemalloc (where ``app.py`` preloaded it): every arena's dirty pages are purged now
      (``mallctl("arena.4096.purge")``); left alone, jemalloc returns them ~10 s after they were
      freed, so under steady load the last 10 s of each request's freed memory stay resident
      (~100-130 MB after a round of the app, measured).
    * glibc: ``malloc_trim(0)``, every arena. glibc keeps freed pages of its arenas mapped (resident)
      until it is asked to trim them.

    The app asks after every round it stores and every ``ServerConfig.trim_seconds``.
    """
    ran = False
    mallctl = _mallctl()
    if mallctl is not None:
        ran = mallctl(JEMALLOC_PURGE_ALL, None, None, None, 0) == 0
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return ran
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


def _mallctl():
    mallctl = getattr(ctypes.CDLL(None), "mallctl", None)  # only where jemalloc is loaded
    if mallctl is not None:
        mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        mallctl.restype = ctypes.c_int
    return mallctl


def release_memory() -> dict:
    """What the last requests freed, back to the system: first the garbage only the cycle collector
    can free (``gc.collect()``: a round's matplotlib figures are a web of objects that refer to each
    other, ~20k objects a round of the app, measured; left to the collector's own thresholds they
    pile up over several rounds and are freed into memory spread over fresh pages), then
    :func:`trim_heap`.

    Returns:
        ``collected`` (objects the collector found unreachable), ``gc_ms`` (its time) and ``trimmed``
        (whether :func:`trim_heap` ran).
    """
    import gc

    t = time.perf_counter()
    collected = gc.collect()
    gc_ms = round((time.perf_counter() - t) * 1000, 1)
    return {"collected": collected, "gc_ms": gc_ms, "trimmed": trim_heap()}


def memory_breakdown() -> dict:
    """Where this process's resident memory is, in MB (a diagnosis, read every ``trim_seconds`` when
    ``ENSEMBLE_MEMORY_LOG`` names a file; ``benchmarks/soak.py`` reports it):

    * ``rss_mb``, ``threads``, ``rss_anon_mb`` (anonymous: heaps, arenas, stacks) and ``rss_file_mb``
      (pages of mapped files: code and libraries, paged in as code paths first run): from
      ``/proc/self/status``;
    * under jemalloc: ``allocated_mb`` (live blocks), ``active_mb`` (their pages), ``resident_mb``
      (what jemalloc holds resident, its metadata included), ``mapped_mb``, ``retained_mb`` (virtual
      only) and ``arenas``; ``rss_mb - resident_mb`` is memory jemalloc does not manage: Python's own
      small-object arenas, thread stacks, code and libraries;
    * ``python_blocks``: ``sys.getallocatedblocks()``; ``gc_objects``: objects the collector tracks.
    """
    import gc
    import sys

    out: dict = {}
    try:
        status = Path("/proc/self/status").read_text()
        for key, name in (("VmRSS", "rss_mb"), ("Threads", "threads"), ("RssAnon", "rss_anon_mb"),
                          ("RssFile", "rss_file_mb")):
            m = re.search(rf"^{key}:\s+(\d+)", status, re.M)
            if m:
                out[name] = int(m.group(1)) if name == "threads" else round(int(m.group(1)) / 1024, 1)
    except OSError:
        pass
    mallctl = _mallctl()
    if mallctl is not None:
        epoch = ctypes.c_uint64(1)
        mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.sizeof(epoch))  # refresh the statistics
        for key in ("allocated", "active", "resident", "mapped", "retained"):
            v, n = ctypes.c_size_t(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_size_t))
            if mallctl(f"stats.{key}".encode(), ctypes.byref(v), ctypes.byref(n), None, 0) == 0:
                out[f"{key}_mb"] = round(v.value / 2**20, 1)
        v, n = ctypes.c_uint(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_uint))
        if mallctl(b"arenas.narenas", ctypes.byref(v), ctypes.byref(n), None, 0) == 0:
            out["arenas"] = int(v.value)
    out["python_blocks"] = sys.getallocatedblocks()
    out["gc_objects"] = len(gc.get_objects())
    return out


def object_counts() -> dict[str, int]:
    """How many objects of each type the garbage collector tracks (``module.qualname``): two readings
    apart say which kind of object a process keeps accumulating (the app's memory log, every 25th)."""
    import gc
    from collections import Counter

    return dict(Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_earlier_runs(parent: str | os.PathLike | None = None, *, keep: Path | None = None) -> list[Path]:
    """Delete the run folders under ``parent`` whose server process is gone (killed, crashed, or
    stopped before it could clean up); a live server's folder is left alone.

    Args:
        parent: where run folders live; ``None``: the system's temporary folder.
        keep: a folder never deleted (this run's).

    Returns:
        The folders deleted.
    """
    parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    removed = []
    for folder in parent.glob(f"{RUN_PREFIX}*"):
        match = _RUN_NAME.fullmatch(folder.name)
        if keep is not None and folder.resolve() == Path(keep).resolve():
            continue
        if match is None or not folder.is_dir() or _alive(int(match.group(1))):
            continue  # an older layout (no pid in its name) or a live run: not ours to judge
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
