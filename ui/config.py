"""The app's hosting configuration: where the files it keeps between restarts live.

Only the ratings log so far: ``$RATINGS_DIR`` when set, else Hugging Face Spaces' persistent storage
(``/data``) when the Space has it, else a folder the app chooses (its checkout's ``ratings/``).
Gradio-free, so the command line and the tests can use it too; read at call time, never at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ensemble.ratings.log import RATINGS_FILENAME

__all__ = ["SPACES_DATA_DIR", "ratings_dir", "ratings_path"]

SPACES_DATA_DIR = Path("/data")  # Hugging Face Spaces' persistent storage, when the Space has it


def ratings_dir(default: str | os.PathLike[str] = "ratings", *, env: Mapping[str, str] | None = None,
                spaces_data: str | os.PathLike[str] = SPACES_DATA_DIR) -> Path:
    """The folder that holds ``ratings.csv``; nothing is created.

    Args:
        default: folder used when neither of the rules below applies (the app passes its repo-relative
            ``ratings`` folder).
        env: environment to read ``RATINGS_DIR`` from; ``None`` reads :data:`os.environ` at call time.
        spaces_data: Hugging Face Spaces' persistent-storage mount.

    Returns:
        ``$RATINGS_DIR`` when set and non-empty; otherwise ``<spaces_data>/ratings`` when
        ``spaces_data`` is an existing, writable folder (on a Space with persistent storage the log is
        ``/data/ratings/ratings.csv``); otherwise ``default``.
    """
    env = os.environ if env is None else env
    if env.get("RATINGS_DIR", "").strip():
        return Path(env["RATINGS_DIR"].strip())
    data = Path(spaces_data)
    if data.is_dir() and os.access(data, os.W_OK | os.X_OK):
        return data / "ratings"
    return Path(default)


def ratings_path(default: str | os.PathLike[str] = "ratings", *, env: Mapping[str, str] | None = None,
                 spaces_data: str | os.PathLike[str] = SPACES_DATA_DIR) -> Path:
    """``ratings_dir(...) / "ratings.csv"``; see :func:`ratings_dir`."""
    return ratings_dir(default, env=env, spaces_data=spaces_data) / RATINGS_FILENAME

