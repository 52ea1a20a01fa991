"""The app's hosting configuration: where the files it keeps between restarts live.

The ratings log: ``$RATINGS_DIR`` when set, else Hugging Face Spaces' persistent storage
(``/data``) when the Space has it, else a folder the app chooses (its checkout's ``ratings/``).
And what each client may send (upload size, request rate), the disk the rounds may take, and the
researcher key and rater-id salt (:func:`server_config`). Gradio-free, so the command line and the
tests can use it too; read at call time, never at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ensemble.errors import EnsembleError
from ensemble.ratings.log import RATINGS_FILENAME

__all__ = ["SPACES_DATA_DIR", "ServerConfig", "ratings_dir", "ratings_path", "server_config"]

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



@dataclass(frozen=True)
class ServerConfig:
    """What the server allows each client, and who may read raters' data (read from the environment
    at start-up by :func:`server_config`).

    Attributes:
        max_upload_mb: the largest upload, MiB (``ENSEMBLE_MAX_UPLOAD_MB``, default 200); Gradio's
            upload route refuses a larger file before any handler runs.
        rate_limit: requests per minute per client address to Generate and ``/rate``
            (``ENSEMBLE_RATE_LIMIT``, default 60; 0 turns the cap off).
        read_rate_limit: requests per minute per client address to the endpoints that only read
            (``/candidate_audio``, ``/take``, ``/summary``, ``/ratings``; ``ENSEMBLE_READ_RATE_LIMIT``,
            default 600: a round of K = 10 fetched through the API is 10 calls; 0 turns it off).
        disk_cap_mb: the most the rounds' files may take, MiB (``ENSEMBLE_DISK_CAP_MB``, default
            2048); the oldest rounds go first.
        researcher_key: the key that unlocks the full ratings log and per-rater data
            (``ENSEMBLE_RESEARCHER_KEY``; unset: nobody gets them through the app).
        rater_salt: when set, rater ids are written to the log as a salted hash
            (``ENSEMBLE_RATER_SALT``).
        study_only: free mode's ``/generate`` is off (``ENSEMBLE_STUDY_ONLY=1``): while a study runs, a
            rater could otherwise cut a study clip's input, generate it again unblinded and read the
            scores of the very candidates the study plays blind (retrieval is deterministic).
        trim_seconds: how often the C allocator's free memory is handed back to the system
            (``ENSEMBLE_TRIM_SECONDS``, default 20; 0 turns it off;
            :func:`ensemble.listening.runs.release_memory`: the cycle collector, then the trim).
    """

    max_upload_mb: float = 200.0
    rate_limit: int = 60
    read_rate_limit: int = 600
    disk_cap_mb: float = 2048.0
    researcher_key: str = ""
    rater_salt: str = ""
    study_only: bool = False
    trim_seconds: float = 20.0


def server_config(env: Mapping[str, str] | None = None) -> ServerConfig:
    """The server's caps and keys from the environment (see :class:`ServerConfig`).

    Raises:
        EnsembleError: a cap that is not a number, or out of range, naming the variable.
    """
    env = os.environ if env is None else env
    default = ServerConfig()

    def number(name: str, fallback: float, *, minimum: float) -> float:
        text = env.get(name, "").strip()
        if not text:
            return fallback
        try:
            value = float(text)
        except ValueError:
            raise EnsembleError(f"{name}={text!r} is not a number; allowed: a number >= {minimum:g}") from None
        if not (value >= minimum) or value != value or value == float("inf"):
            raise EnsembleError(f"{name}={text!r}; allowed: a finite number >= {minimum:g}")
        return value

    return ServerConfig(
        max_upload_mb=number("ENSEMBLE_MAX_UPLOAD_MB", default.max_upload_mb, minimum=1),
        rate_limit=int(number("ENSEMBLE_RATE_LIMIT", default.rate_limit, minimum=0)),
        read_rate_limit=int(number("ENSEMBLE_READ_RATE_LIMIT", default.read_rate_limit, minimum=0)),
        disk_cap_mb=number("ENSEMBLE_DISK_CAP_MB", default.disk_cap_mb, minimum=10),
        researcher_key=env.get("ENSEMBLE_RESEARCHER_KEY", "").strip(),
        rater_salt=env.get("ENSEMBLE_RATER_SALT", "").strip(),
        study_only=env.get("ENSEMBLE_STUDY_ONLY", "").strip().lower() in ("1", "true", "yes"),
        trim_seconds=number("ENSEMBLE_TRIM_SECONDS", default.trim_seconds, minimum=0))
