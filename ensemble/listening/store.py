"""The rounds a server holds: bounded in number and age, each with its own folder of files."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path

from ensemble.errors import EnsembleError
from ensemble.listening.round import Round

__all__ = ["RoundStore"]


class RoundStore:
    """The rounds the server still holds, newest last, each with its folder under ``root``.

    Bounded by count and age; a dropped round's folder is deleted. Thread-safe.

    Args:
        root: parent of the round folders; ``None`` makes a fresh temporary folder.
        max_rounds: rounds kept (a listening session needs one at a time; the API may hold several).
        max_age_s: rounds older than this are dropped.
    """

    def __init__(self, root: str | Path | None = None, *, max_rounds: int = 200,
                 max_age_s: float = 6 * 3600.0) -> None:
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="ensemble-app-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_rounds = max_rounds
        self.max_age_s = max_age_s
        self._rounds: OrderedDict[str, Round] = OrderedDict()
        self._lock = threading.Lock()

    def new_folder(self) -> tuple[str, Path]:
        """A new round id and its (not yet created) folder."""
        round_id = uuid.uuid4().hex
        return round_id, self.root / round_id

    def add(self, rnd: Round) -> None:
        with self._lock:
            self._rounds[rnd.round_id] = rnd
            self._prune_locked()

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

    def _prune_locked(self) -> None:
        now = time.time()
        while self._rounds:
            oldest = next(iter(self._rounds.values()))
            if len(self._rounds) <= self.max_rounds and now - oldest.created <= self.max_age_s:
                break
            self._rounds.popitem(last=False)
            shutil.rmtree(oldest.folder, ignore_errors=True)

    def discard_folder(self, folder: Path) -> None:
        """Delete a folder of a round that failed before it was added."""
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Drop every round and delete the root."""
        with self._lock:
            self._rounds.clear()
        shutil.rmtree(self.root, ignore_errors=True)
