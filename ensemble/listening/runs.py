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
from pathlib import Path

__all__ = ["RUN_PREFIX", "new_run_folder", "sweep_earlier_runs", "trim_heap"]

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


def trim_heap() -> bool:
    """Hand the memory the C allocator holds free back to the system (glibc's ``malloc_trim(0)``,
    every arena) -> whether it ran (False where the C library has no such call, e.g. musl, macOS).

    A long-running server frees what each request allocated, but glibc keeps freed pages of its
    arenas mapped (they stay in the process's resident memory) until it is asked to trim them; the
    app asks periodically (``ServerConfig.trim_seconds``).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


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
