"""Files written whole or not at all, and file hashes: the one home of atomic writes in the package.

Every writer goes through :func:`atomic_write`: the content is written to a temporary name in the
destination's own folder (``tempfile.mkstemp``, so on the same file system), given its permissions,
and then renamed over the destination with :func:`os.replace`. A reader therefore sees either the
old file or the complete new one, never half a file, and a failed or interrupted write leaves no
temporary file behind (except after a hard kill, as ``.NAME.XXXXXXXX.tmp``).

A ground-floor module: the standard library only, so every layer may use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "write_json_atomic",
           "sha256_file"]

_HASH_BLOCK_BYTES = 1 << 20  # 1 MiB: large files are hashed without reading them whole


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *,
                 mode: int | None = 0o644) -> Path:
    """Write ``path`` through a temporary file in its folder, then rename it into place.

    The folder is created if needed. ``write`` receives the temporary file's path (an existing,
    empty file) and must write the whole content there, by name: e.g. ``fig.savefig(tmp)``,
    ``soundfile.write(tmp, ...)`` or ``open(tmp, "wb")``.

    Args:
        path: the destination; replaced if it exists.
        write: ``write(tmp)`` writes the content to ``tmp``.
        mode: permission bits given to the file before the rename; ``0o644`` (the default) makes it
            readable by every user of the machine. ``None`` keeps ``mkstemp``'s ``0o600`` (owner only).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        Whatever ``write`` or the file system raise (``OSError``, ...); the temporary file is
        removed first and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode: int | None = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`); returns ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), mode=mode)


def atomic_write_text(path: str | os.PathLike, text: str, *, mode: int | None = 0o644) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (:func:`atomic_write`); returns ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), mode=mode)


def write_json_atomic(path: str | os.PathLike, data: dict, *, mode: int | None = 0o644) -> Path:
    """Write ``data`` as JSON (one-space indent, keys in insertion order, a final newline) atomically.

    The format of the corpus's metadata files (``json.dumps(data, indent=1) + "\\n"``).

    Returns:
        ``path``.

    Raises:
        TypeError: ``data`` holds something JSON cannot represent (nothing is written).
    """
    text = json.dumps(data, indent=1, sort_keys=False) + "\n"
    return atomic_write_text(path, text, mode=mode)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_BLOCK_BYTES), b""):
            h.update(block)
    return h.hexdigest()
