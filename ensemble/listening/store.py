"""The rounds a server holds: bounded in number, age and disk, each with its own folder of files.

A server run owns one folder, ``<temp>/ensemble-app-<pid>-<random>/`` (:mod:`.runs`): the
rounds' folders (32 hex digits each) and, when the app points ``GRADIO_TEMP_DIR`` there, everything
Gradio writes (uploads, cached outputs; files already inside it are served in place, not copied).
:meth:`RoundStore.close` deletes the folder at shutdown, and ``runs.sweep_earlier_runs`` deletes at
start-up what a run that was killed left behind (its process no longer alive; :mod:`.runs`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from ensemble.errors import EnsembleError
from ensemble.listening.round import Round
from ensemble.listening.runs import new_run_folder

__all__ = ["RoundStore"]

_ROUND_NAME = re.compile(r"[0-9a-f]{32}")
log = logging.getLogger("ensemble.listening")
def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


class RoundStore:
    """The rounds the server still holds, newest last, each with its folder under ``root``.

    Bounded by count, age and disk; a dropped round's folder is deleted. Anything else under ``root``
    (Gradio's uploads and cached outputs when ``GRADIO_TEMP_DIR`` points there, CSV exports), except
    what was there before the first round (the page's own files, such as its examples), is deleted
    once older than ``max_age_s``, and first in line (oldest first) when the disk cap is
    reached, before the rounds. Thread-safe.

    Args:
        root: parent of the round folders; ``None`` makes a fresh run folder (:func:`new_run_folder`).
        max_rounds: rounds kept (a listening session needs one at a time; the API may hold several).
        max_age_s: rounds (and other files under ``root``) older than this are dropped.
        max_bytes: the most ``root`` may hold; oldest first go beyond it (``None``: no cap).
        on_add: called (no arguments, outside the store's lock) after each round is added; the app
            wakes its allocator trim with it, so what the round freed leaves resident memory at once.
    """

    def __init__(self, root: str | Path | None = None, *, max_rounds: int = 200,
                 max_age_s: float = 6 * 3600.0, max_bytes: int | None = None,
                 on_add: Callable[[], None] | None = None) -> None:
        self.root = Path(root) if root is not None else new_run_folder()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_rounds = max_rounds
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.on_add = on_add
        self._rounds: OrderedDict[str, Round] = OrderedDict()
        self._lock = threading.Lock()
        self._startup: set[str] | None = None  # what Gradio wrote before the first round: the page's
        # own files (the examples it serves), kept for the run's life (a page would 404 without them)

    def new_folder(self) -> tuple[str, Path]:
        """A new round id and its (not yet created) folder."""
        round_id = uuid.uuid4().hex
        return round_id, self.root / round_id

    def add(self, rnd: Round) -> None:
        with self._lock:
            if self._startup is None:
                self._startup = {p.name for p in self.root.iterdir() if p.name != rnd.round_id}
            self._rounds[rnd.round_id] = rnd
            self._prune_locked()
            self._sweep_locked()
        # what the takes add (stems, MIDI) is written after the round is answered, on one thread in
        # order: the disk is checked again once the last of it is there
        pending = [s.take_sources for s in getattr(rnd, "shown", ()) if s.take_sources is not None]
        if pending:
            pending[-1].add_done_callback(lambda _: self.sweep())
        if self.on_add is not None:
            self.on_add()

    def sweep(self) -> None:
        """Apply the age and disk limits now (``add`` does; so does each round's last take file)."""
        with self._lock:
            self._prune_locked()
            self._sweep_locked()

    def get(self, round_id: str) -> Round:
        """The round with this id.

        Raises:
            EnsembleError: unknown or expired id.
        """
        with self._lock:
            self._prune_locked()
            rnd = self._rounds.get(str(round_id))
        if rnd is None:
            raise EnsembleError(f"round {str(round_id)[:40]!r} is unknown or has expired (rounds are kept "
                                f"{self.max_age_s / 3600:g} h, the newest {self.max_rounds}); "
                                "generate again")
        return rnd

    def __len__(self) -> int:
        with self._lock:
            return len(self._rounds)

    def disk_bytes(self) -> int:
        """Bytes under ``root`` now (rounds, and Gradio's files when they live here)."""
        return _size(self.root)

    def _prune_locked(self) -> None:
        now = time.time()
        while self._rounds:
            oldest = next(iter(self._rounds.values()))
            if len(self._rounds) <= self.max_rounds and now - oldest.created <= self.max_age_s:
                break
            self._rounds.popitem(last=False)
            shutil.rmtree(oldest.folder, ignore_errors=True)

    def _others(self) -> list[tuple[float, Path]]:
        """Entries under ``root`` that are not a held round's folder, oldest first (mtime)."""
        held = set(self._rounds) | (self._startup or set())
        out = []
        for entry in self.root.iterdir():
            if entry.name in held or (_ROUND_NAME.fullmatch(entry.name) and entry.is_dir()
                                      and time.time() - entry.stat().st_mtime < 3600):
                continue  # a held round, or one being made right now (not yet added)
            try:
                out.append((entry.stat().st_mtime, entry))
            except OSError:
                pass
        return sorted(out, key=lambda t: t[0])

    def _sweep_locked(self) -> None:
        """Old files that are not rounds go; then, over the disk cap, other files and rounds, oldest first."""
        now = time.time()
        others = []
        for mtime, entry in self._others():
            if now - mtime > self.max_age_s:
                _remove(entry)
            else:
                others.append(entry)
        if self.max_bytes is None:
            return
        total = self.disk_bytes()
        log.debug("run folder %s: %d bytes (cap %d), %d rounds, %d other entries", self.root, total,
                  self.max_bytes, len(self._rounds), len(others))
        while total > self.max_bytes and (others or len(self._rounds) > 1):
            if others:
                victim = others.pop(0)
            else:  # the newest round (just made) always stays
                victim = self._rounds.popitem(last=False)[1].folder
            size = _size(victim) if victim.is_dir() else victim.stat().st_size if victim.exists() else 0
            _remove(victim)
            total -= size
            log.info("disk cap %.0f MB: removed %s (%.1f MB)", self.max_bytes / 2**20, victim.name, size / 2**20)

    def discard_folder(self, folder: Path) -> None:
        """Delete a folder of a round that failed before it was added."""
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Drop every round and delete the root."""
        with self._lock:
            self._rounds.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        try:
            entry.unlink()
        except OSError:
            pass
