"""The listening-test ratings log (``ratings.csv``): what a submission holds, appending it, reading it.

The log is a long-format CSV: one row per candidate per submission, columns :data:`RATINGS_COLUMNS`.
A rater ranks all K candidates of one request with distinct ranks 1..K, may mark one favourite and
leave a comment; :func:`append_submission` validates that and appends the whole submission.

Writing is safe for many threads and processes at once and survives a crash:

* every append runs under ``filelock.FileLock(<log>.lock)``; the header is written only when the file
  is empty, checked under the lock, so it appears exactly once, across restarts too;
* the CSV text of a submission is built in memory first and written with **one** ``os.write`` on an
  ``O_APPEND`` descriptor, then ``fsync`` -- a submission that fails validation or formatting writes
  nothing, and a failed write is truncated away again;
* every record is exactly one physical line (line breaks and other control characters in text are
  replaced by spaces), so a process killed mid-append can leave at most one partial *last* line.
  :func:`read_ratings` ignores such a line and any submission with fewer rows than its ``k``, and the
  next :func:`append_submission` cuts the partial line off before appending;
* text cells that start with ``= + - @`` (or tab / CR) get a leading ``'`` so a spreadsheet shows them
  as text instead of running a formula (CSV injection).  Numbers are written as numbers and never
  changed -- ``-3.5`` stays ``-3.5`` -- and so is text that is a plain decimal number such as ``-3``.
  The ``'`` stays in the log and in what :func:`read_ratings` returns.

Older logs. A log written before a column existed (its header is one of :data:`EARLIER_COLUMNS`) is
read with that column empty (:data:`_ADDED_DEFAULTS`); the first :func:`append_submission` to it
upgrades it once, under the lock: its header and every row, the new columns empty, go into a temporary
file beside it that replaces the log in one ``os.replace`` (fsync'd), so a reader sees the old log or
the upgraded one, never a mix, and no row is lost. Earlier columns are never renamed or removed.

Where the log lives (``$RATINGS_DIR``, Hugging Face Spaces' ``/data``) is the app's hosting choice:
see ``ui/config.py``. The statistics of a log are in :mod:`ensemble.ratings.stats`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import numbers
import os
import re
import tempfile
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import filelock

from ensemble.errors import EnsembleError

if TYPE_CHECKING:  # pandas is imported when a log is read, so that appending stays cheap to import
    import pandas as pd

__all__ = [
    "RATINGS_COLUMNS",
    "EARLIER_COLUMNS",
    "RATINGS_FILENAME",
    "LOUDNESS_MATCHED_VALUES",
    "MAX_COMMENT_CHARS",
    "CandidateRating",
    "Submission",
    "sanitize_rater_id",
    "pseudonymize_rater_id",
    "validate_submission",
    "append_submission",
    "read_ratings",
]

# The log's columns, in file order. Per-submission values repeat on each of its K rows.
RATINGS_COLUMNS: tuple[str, ...] = (
    "submission_id",           # uuid4 hex, 32 characters
    "timestamp_utc",           # ISO-8601 with Z, milliseconds, e.g. 2026-01-31T12:00:00.000Z
    "rater_id",                # sanitize_rater_id(...)
    "session_id",              # the app's per-browser-session id, same character set as rater_id
    "input_sha256",            # SHA-256 (hex) of the uploaded clip
    "input_seconds",           # length of the uploaded clip, s
    "target_seconds",          # requested continuation length, s
    "k",                       # number of candidates shown (= rows of this submission)
    "alpha",                   # relevance weight of the composite score
    "beta",                    # coherence weight of the composite score
    "blind",                   # 1 = shown in shuffled order without scores, 0 = in composite order
    "shown_position",          # 1..K, where the rater saw this candidate
    "composite_rank",          # 1..K, the system's rank by composite score (1 = best)
    "human_rank",              # 1..K, the rater's rank (1 = best)
    "favourite",               # 1 for the rater's favourite candidate, else 0
    "db_chunk_idx",            # index of the retrieved database chunk
    "composite",               # composite score
    "relevance",               # style-relevance score
    "coherence",               # seam-coherence score
    "lookback_s",              # seconds of input the retrieval looked back over, s
    "transpose",               # transposition applied to the chunk, semitones
    "seam_pitch_jump_cents",   # SIGNED: 1200 log2(after/before) across the seam, cents (+ = up); empty if unvoiced
    "seam_loudness_jump_db",   # SIGNED: after - before across the seam, dB (+ = louder); empty when undefined
    "timbre",                  # the timbre that rendered the candidates (guitar, violin, ...); empty in old rows
    "loudness_matched",        # playback: 1 = loudness-matched throughout, 0 = as rendered throughout,
                               # "mixed" = switched during the round; empty in rows from before it was logged
    "weights",                 # which weights ranked the candidates: "hand-set" or a fitted file's version
                               # ("pl-..."; ensemble.ratings.fit); empty in rows from before it was logged
    "model_version",
    "database_version",
    "comment",                 # the rater's comment (one line; line breaks become spaces)
)
# The headers of earlier logs, newest first; what they lack reads as _ADDED_DEFAULTS.
EARLIER_COLUMNS: tuple[tuple[str, ...], ...] = (
    tuple(c for c in RATINGS_COLUMNS if c != "weights"),  # before the ranking weights were recorded
    tuple(c for c in RATINGS_COLUMNS if c not in ("loudness_matched", "weights")),  # before the playback
    tuple(c for c in RATINGS_COLUMNS if c not in ("timbre", "loudness_matched", "weights")),  # before the timbre
)
_ADDED_DEFAULTS = {"timbre": "", "loudness_matched": "", "weights": ""}
# what the loudness_matched column holds (Submission.loudness_matched -> cell)
LOUDNESS_MATCHED_VALUES = {True: "1", False: "0", "mixed": "mixed", None: ""}
RATINGS_FILENAME = "ratings.csv"
MAX_COMMENT_CHARS = 2000
MAX_VERSION_CHARS = 200
MAX_ID_CHARS = 64

_INT_COLUMNS = ("k", "blind", "shown_position", "composite_rank", "human_rank", "favourite", "db_chunk_idx")
_FLOAT_COLUMNS = ("input_seconds", "target_seconds", "alpha", "beta", "composite", "relevance", "coherence",
                  "lookback_s", "transpose", "seam_pitch_jump_cents", "seam_loudness_jump_db")
_HEADER = (",".join(RATINGS_COLUMNS) + "\n").encode("utf-8")
_EARLIER_HEADERS = tuple((",".join(columns) + "\n").encode("utf-8") for columns in EARLIER_COLUMNS)
_HEAD_BYTES = max(len(h) for h in (_HEADER, *_EARLIER_HEADERS))
_ID_DISALLOWED = re.compile(r"[^A-Za-z0-9_.-]")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LOCK_TIMEOUT_S = 30.0


def sanitize_rater_id(text: object) -> str:
    """A rater id safe for the log and for file names.

    Keeps only ``A-Z a-z 0-9 _ . -``, drops leading ``.`` and ``-`` (so the id never starts like a
    formula, an option or a hidden file), keeps at most 64 characters, and gives ``"anonymous"`` for
    what is left empty (including ``None``).
    """
    cleaned = _ID_DISALLOWED.sub("", "" if text is None else str(text)).lstrip(".-")[:MAX_ID_CHARS]
    return cleaned or "anonymous"


def pseudonymize_rater_id(rater_id: str, salt: str) -> str:
    """A rater id as the log keeps it when raters are pseudonymised: ``"p-"`` and 16 hex digits of
    SHA-256 over the salt and the (sanitised) id, so one rater's rows still group together but the
    id cannot be read back, nor guessed from a list of names without the salt.

    Args:
        rater_id: the id the rater gave (sanitised first, :func:`sanitize_rater_id`).
        salt: the server's secret salt (``ENSEMBLE_RATER_SALT``); empty: the id is kept as it is.
    """
    rater_id = sanitize_rater_id(rater_id)
    if not salt:
        return rater_id
    digest = hashlib.sha256(f"{salt}\x00{rater_id}".encode()).hexdigest()
    return f"p-{digest[:16]}"


def _sanitize_session_id(text: object) -> str:
    return _ID_DISALLOWED.sub("", "" if text is None else str(text)).lstrip(".-")[:MAX_ID_CHARS]


# --------------------------------------------------------------------------------------------------
# what one submission holds


@dataclass(frozen=True)
class CandidateRating:
    """One candidate of a submission, as shown and as ranked.

    Attributes:
        shown_position: 1..K, the candidate's place on the page.
        composite_rank: 1..K, the system's rank by composite score (1 = best).
        human_rank: 1..K, the rater's rank (1 = best); ``None`` while the rater has not ranked it
            (:func:`validate_submission` then rejects the submission).
        db_chunk_idx: index (>= 0) of the retrieved database chunk.
        composite, relevance, coherence: the scores, finite.
        lookback_s: seconds of input the retrieval looked back over, finite, >= 0.
        transpose: transposition of the chunk, semitones, finite.
        seam_pitch_jump_cents: signed pitch jump across the seam, ``1200 log2(after / before)`` cents
            (+ = up); ``None`` when undefined (a side unvoiced). The candidate's own number
            (``Candidate.seam_pitch_jump_cents``, measured on the rendered audio by
            :func:`ensemble.metrics.seam_metrics`), the one the app's card and ``results.json`` show.
        seam_loudness_jump_db: signed loudness jump across the seam, after - before, dB (+ = louder);
            ``None`` when undefined. Likewise the candidate's own.
    """

    shown_position: int
    composite_rank: int
    human_rank: int | None
    db_chunk_idx: int
    composite: float
    relevance: float
    coherence: float
    lookback_s: float
    transpose: float
    seam_pitch_jump_cents: float | None = None
    seam_loudness_jump_db: float | None = None


@dataclass(frozen=True)
class Submission:
    """One rater's ranking of the K candidates of one request.

    Attributes:
        rater_id: free text; written as :func:`sanitize_rater_id` of it.
        session_id: the app's session id; written with the same character filter (may be empty).
        input_sha256: SHA-256 of the uploaded clip, 64 hex digits.
        input_seconds: length of the uploaded clip, s, > 0.
        target_seconds: requested continuation length, s, > 0.
        k: number of candidates; ``len(candidates)`` must equal it.
        alpha, beta: weights of relevance and coherence in the composite score, finite.
        blind: whether the candidates were shown shuffled and without scores.
        candidates: the K candidates, in any order (rows are written by ``shown_position``).
        favourite: ``shown_position`` of the rater's favourite, or ``None`` for none.
        comment: free text, at most :data:`MAX_COMMENT_CHARS` characters.
        model_version, database_version: free text, at most 200 characters each.
        timbre: the timbre that rendered the candidates (``TimbreChoice.name``: "guitar", "violin",
            ...; empty when none did), at most 200 characters.
        loudness_matched: how the rater's players played the candidates: ``True`` loudness-matched
            throughout, ``False`` as rendered throughout, ``"mixed"`` switched during the round,
            ``None`` not known (written ``1``, ``0``, ``mixed``, empty).
        weights: which weights ranked the candidates: ``"hand-set"`` (the composite) or the version
            of the fitted weights file (``Candidate.weights``); empty when not known; <= 200 characters.
    """

    rater_id: str
    session_id: str
    input_sha256: str
    input_seconds: float
    target_seconds: float
    k: int
    alpha: float
    beta: float
    blind: bool
    candidates: tuple[CandidateRating, ...]
    favourite: int | None = None
    comment: str = ""
    model_version: str = ""
    database_version: str = ""
    timbre: str = ""
    loudness_matched: bool | str | None = None
    weights: str = ""


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    if not _is_int(value):
        raise EnsembleError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise EnsembleError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_float(name: str, value: object, *, minimum: float | None = None, strict: bool = False,
                 optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        allowed = "a finite number or None" if optional else "a finite number"
        raise EnsembleError(f"{name} must be {allowed}, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise EnsembleError(f"{name} must be finite, got {number}")
    if minimum is not None and (number <= minimum if strict else number < minimum):
        raise EnsembleError(f"{name} must be {'>' if strict else '>='} {minimum}, got {number}")
    return number


def _check_text(name: str, value: object, max_chars: int) -> str:
    if not isinstance(value, str):
        raise EnsembleError(f"{name} must be text, got {type(value).__name__} {value!r}")
    if len(value) > max_chars:
        raise EnsembleError(f"{name} has {len(value)} characters; at most {max_chars} are allowed")
    return value


def _check_permutation(what: str, values: Sequence[object], holders: Sequence[str], k: int) -> None:
    """Raise unless ``values`` (one per candidate; ``holders`` name the candidates) are 1..k, each once."""
    seen: dict[int, str] = {}
    for value, holder in zip(values, holders, strict=True):
        if value is None:
            raise EnsembleError(f"{holder} has no {what}; give every candidate a distinct {what} 1..{k}")
        if not _is_int(value):
            raise EnsembleError(f"{what} {value!r} of {holder} is not an integer; {what}s must be 1..{k}")
        if not 1 <= value <= k:
            raise EnsembleError(f"{what} {value} of {holder} is out of range; {what}s must be 1..{k}")
        if value in seen:
            raise EnsembleError(f"{what} {value} is given to both {seen[value]} and {holder}; "
                                f"each {what} 1..{k} must be used exactly once")
        seen[int(value)] = holder


def validate_submission(submission: Submission) -> None:
    """Check a submission before anything is written.

    Args:
        submission: the submission to check.

    Raises:
        EnsembleError: naming the bad value and what is allowed -- ``k`` not matching the number of
            candidates; shown positions, composite ranks or human ranks that are not each of 1..K
            exactly once (missing, duplicate, 0 or K+1); a favourite that is not a shown position;
            a non-finite or negative number where it must not be; a malformed SHA-256; an overlong
            comment or version text.
    """
    if not isinstance(submission, Submission):
        raise EnsembleError(f"expected a Submission, got {type(submission).__name__}")
    s = submission
    k = _check_int("k", s.k, minimum=1)
    if not isinstance(s.candidates, (tuple, list)):
        raise EnsembleError("candidates must be a tuple of CandidateRating, "
                            f"got {type(s.candidates).__name__}")
    if len(s.candidates) != k:
        raise EnsembleError(f"k = {k} but {len(s.candidates)} candidates were given; one row per candidate")
    for i, c in enumerate(s.candidates):
        if not isinstance(c, CandidateRating):
            raise EnsembleError(f"candidate {i} must be a CandidateRating, got {type(c).__name__}")

    _check_permutation("shown position", [c.shown_position for c in s.candidates],
                       [f"candidates[{i}]" for i in range(k)], k)
    holders = [f"the candidate at position {c.shown_position}" for c in s.candidates]
    _check_permutation("composite rank", [c.composite_rank for c in s.candidates], holders, k)
    _check_permutation("rank", [c.human_rank for c in s.candidates], holders, k)
    if s.favourite is not None and (not _is_int(s.favourite) or not 1 <= s.favourite <= k):
        raise EnsembleError(f"favourite {s.favourite!r} is not one of the shown positions 1..{k} "
                            "(or None for no favourite)")

    for c in s.candidates:
        at = f"candidate at position {c.shown_position}"
        _check_int(f"db_chunk_idx of the {at}", c.db_chunk_idx, minimum=0)
        for name in ("composite", "relevance", "coherence", "transpose"):
            _check_float(f"{name} of the {at}", getattr(c, name))
        _check_float(f"lookback_s of the {at}", c.lookback_s, minimum=0.0)
        for name in ("seam_pitch_jump_cents", "seam_loudness_jump_db"):
            _check_float(f"{name} of the {at}", getattr(c, name), optional=True)

    _check_float("input_seconds", s.input_seconds, minimum=0.0, strict=True)
    _check_float("target_seconds", s.target_seconds, minimum=0.0, strict=True)
    _check_float("alpha", s.alpha)
    _check_float("beta", s.beta)
    if not isinstance(s.blind, bool):
        raise EnsembleError(f"blind must be True or False, got {s.blind!r}")
    if not isinstance(s.input_sha256, str) or not _SHA256.fullmatch(s.input_sha256.lower()):
        raise EnsembleError(f"input_sha256 must be 64 hex digits, got {s.input_sha256!r}")
    for name in ("rater_id", "session_id"):
        if getattr(s, name) is not None and not isinstance(getattr(s, name), str):
            raise EnsembleError(f"{name} must be text, got {getattr(s, name)!r}")
    _check_text("comment", s.comment, MAX_COMMENT_CHARS)
    _check_text("model_version", s.model_version, MAX_VERSION_CHARS)
    _check_text("database_version", s.database_version, MAX_VERSION_CHARS)
    _check_text("timbre", s.timbre, MAX_VERSION_CHARS)
    _check_text("weights", s.weights, MAX_VERSION_CHARS)
    if not any(s.loudness_matched is v for v in (True, False, None)) and s.loudness_matched != "mixed":
        raise EnsembleError(f"loudness_matched must be True, False, 'mixed' or None, "
                            f"got {s.loudness_matched!r}")


# --------------------------------------------------------------------------------------------------
# writing


def _one_line(text: str) -> str:
    """Replace control characters and Unicode line/paragraph separators by spaces: one record, one line."""
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)


def _neutralise(text: str) -> str:
    """Prefix ``'`` to text a spreadsheet would run as a formula; plain decimal numbers stay as they are."""
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if _is_int(value):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)  # str(float) round-trips exactly
    return _neutralise(_one_line(str(value)))


def _submission_csv(submission: Submission, submission_id: str, timestamp_utc: str) -> bytes:
    """The CSV lines (no header) of one validated submission, as UTF-8 bytes."""
    s = submission
    shared = {
        "submission_id": submission_id,
        "timestamp_utc": timestamp_utc,
        "rater_id": sanitize_rater_id(s.rater_id),
        "session_id": _sanitize_session_id(s.session_id),
        "input_sha256": s.input_sha256.lower(),
        "input_seconds": s.input_seconds,
        "target_seconds": s.target_seconds,
        "k": s.k,
        "alpha": s.alpha,
        "beta": s.beta,
        "blind": s.blind,
        "model_version": s.model_version,
        "database_version": s.database_version,
        "timbre": s.timbre,
        "loudness_matched": LOUDNESS_MATCHED_VALUES[s.loudness_matched],
        "weights": s.weights,
        "comment": s.comment,
    }
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    for c in sorted(s.candidates, key=lambda c: c.shown_position):
        row = dict(shared, favourite=c.shown_position == s.favourite, shown_position=c.shown_position,
                   composite_rank=c.composite_rank, human_rank=c.human_rank, db_chunk_idx=c.db_chunk_idx,
                   composite=c.composite, relevance=c.relevance, coherence=c.coherence,
                   lookback_s=c.lookback_s, transpose=c.transpose,
                   seam_pitch_jump_cents=c.seam_pitch_jump_cents,
                   seam_loudness_jump_db=c.seam_loudness_jump_db)
        writer.writerow([_cell(row[name]) for name in RATINGS_COLUMNS])
    return buffer.getvalue().encode("utf-8")


def _cut_partial_last_line(fd: int, size: int) -> int:
    """Truncate a file that does not end in a newline back to its last newline; return the new size.

    Only an append interrupted by a crash leaves such a tail; appending after it would glue the next
    row onto the fragment.
    """
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            new_size = start + found + 1
            break
        end = start
    else:
        new_size = 0
    os.ftruncate(fd, new_size)
    return new_size


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # regular files practically never write short, but the contract allows it
        view = view[os.write(fd, view):]


def append_submission(path: str | os.PathLike[str], submission: Submission) -> str:
    """Validate ``submission`` and append its K rows to the log at ``path``.

    The parent folder is created if needed. Under ``FileLock(path + ".lock")`` the file is opened for
    appending, a partial last line left by a crash is cut off, the header is written if the file is
    empty, and the header plus all K rows go out in one ``os.write`` followed by ``fsync``. A log with an
    earlier header (:data:`EARLIER_COLUMNS`) is first upgraded to :data:`RATINGS_COLUMNS` (module docstring).

    Args:
        path: the CSV log, e.g. the app's ``ratings_path()`` (``ui/config.py``).
        submission: the rater's ranking; see :func:`validate_submission`.

    Returns:
        The new ``submission_id`` (uuid4 hex).

    Raises:
        EnsembleError: the submission is invalid (nothing is written, the file is not created); the
            file exists but is not a ratings log with these (or earlier) columns; the lock is not free
            within 30 s; the file cannot be written (what was appended is truncated away again).
    """
    validate_submission(submission)
    path = Path(path)
    submission_id = uuid.uuid4().hex
    timestamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    rows = _submission_csv(submission, submission_id, timestamp)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnsembleError(f"cannot create the ratings folder {path.parent}: {exc}") from exc
    lock = filelock.FileLock(f"{path}.lock", timeout=_LOCK_TIMEOUT_S, poll_interval=0.005)
    try:
        with lock:
            _append_locked(path, rows)
    except filelock.Timeout as exc:
        raise EnsembleError(f"the ratings log {path} stayed locked for more than {_LOCK_TIMEOUT_S:g} s "
                            f"(lock file {path}.lock); try again") from exc
    except OSError as exc:
        raise EnsembleError(f"cannot write the ratings log {path}: {exc}") from exc
    return submission_id


def _earlier_columns(head: bytes) -> tuple[str, ...] | None:
    """The columns of the earlier header ``head`` (a file's first bytes) starts with, if any."""
    for header, columns in zip(_EARLIER_HEADERS, EARLIER_COLUMNS, strict=True):
        if head.startswith(header):
            return columns
    return None


def _append_locked(path: Path, rows: bytes) -> None:
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        head = os.pread(fd, _HEAD_BYTES, 0)
        earlier = None if head.startswith(_HEADER) else _earlier_columns(head)
        if earlier is not None:  # a log from before a column was added: upgraded once, then appended to
            os.close(fd)
            fd = -1
            _upgrade_locked(path, earlier)
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
            head = os.pread(fd, _HEAD_BYTES, 0)
        head = head[:len(_HEADER)]
        size = os.fstat(fd).st_size
        # Check before repairing anything, so that a foreign file is never truncated. A strict prefix
        # of the header is what a crash during the very first append leaves.
        if head != _HEADER and not (len(head) < len(_HEADER) and _HEADER.startswith(head)):
            raise EnsembleError(
                f"{path} exists but does not start with the ratings header "
                f"({','.join(RATINGS_COLUMNS[:3])},...); move it aside or choose another RATINGS_DIR")
        size = _cut_partial_last_line(fd, size)
        data = rows if size > 0 else _HEADER + rows
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)  # a failed request writes nothing
            raise
    finally:
        if fd >= 0:
            os.close(fd)
    if created:
        _fsync_dir(path.parent)


def _upgrade_locked(path: Path, columns: tuple[str, ...]) -> None:
    """Rewrite the log at ``path``, whose header is the earlier ``columns``, with :data:`RATINGS_COLUMNS`
    (the added ones :data:`_ADDED_DEFAULTS`), replacing it in one ``os.replace``. Called under the lock.

    A partial last line (an interrupted append) is left out, as the next append would cut it off.

    Raises:
        EnsembleError: a row before the last line does not have ``len(columns)`` fields, or the file is
            not UTF-8 (the log is left as it is).
    """
    raw = path.read_bytes()
    raw = raw[: raw.rfind(b"\n") + 1]
    try:
        records = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    except UnicodeDecodeError as exc:
        raise EnsembleError(f"ratings log {path} is not UTF-8 text: {exc}; it is left as it is") from exc
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(RATINGS_COLUMNS)
    for line, record in enumerate(records[1:], start=2):
        if len(record) != len(columns):
            raise EnsembleError(f"ratings log {path} line {line} has {len(record)} fields, expected "
                                f"{len(columns)}; the file is corrupt (left as it is, not upgraded)")
        cells = dict(zip(columns, record, strict=True))
        writer.writerow([cells[name] if name in cells else _ADDED_DEFAULTS[name] for name in RATINGS_COLUMNS])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".upgrade", dir=path.parent)
    try:
        try:
            os.fchmod(fd, os.stat(path).st_mode & 0o777)
            _write_all(fd, buffer.getvalue().encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a newly created file's directory entry durable (best effort: not every system allows it)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # e.g. file systems that do not support fsync on directories; the data itself is synced
    finally:
        os.close(dir_fd)


# --------------------------------------------------------------------------------------------------
# reading


def _empty_frame() -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame({name: pd.Series([], dtype="int64" if name in _INT_COLUMNS else
                                          "float64" if name in _FLOAT_COLUMNS else "str")
                          for name in RATINGS_COLUMNS})
    frame.attrs["dropped_rows"] = 0
    return frame


def _typed_frame(rows: list[list[str]], path: Path, header: tuple[str, ...] = RATINGS_COLUMNS) -> pd.DataFrame:
    """The data rows (file lines 2, 3, ...) under ``header`` (:data:`RATINGS_COLUMNS` or one of
    :data:`EARLIER_COLUMNS`) as typed columns, those ``header`` lacks filled with :data:`_ADDED_DEFAULTS`;
    a cell that does not parse raises."""
    import pandas as pd

    columns: dict[str, list] = {name: [] for name in header}
    for line, record in enumerate(rows, start=2):
        for name, value in zip(header, record, strict=True):
            try:
                if name in _INT_COLUMNS:
                    value = int(value)
                elif name in _FLOAT_COLUMNS:
                    value = float(value) if value else math.nan  # empty: undefined seam metric
            except ValueError as exc:
                kind = "an integer" if name in _INT_COLUMNS else "a number"
                raise EnsembleError(f"ratings log {path} line {line}: {name} must be {kind}, "
                                    f"got {value!r}; the file is corrupt") from exc
            columns[name].append(value)
    for name in RATINGS_COLUMNS:
        if name not in columns:
            columns[name] = [_ADDED_DEFAULTS[name]] * len(rows)
    return pd.DataFrame({name: pd.Series(columns[name], dtype="int64" if name in _INT_COLUMNS else
                                         "float64" if name in _FLOAT_COLUMNS else "str")
                         for name in RATINGS_COLUMNS})


def read_ratings(path: str | os.PathLike[str], *, missing_ok: bool = False) -> pd.DataFrame:
    """Read the log into a DataFrame with the columns :data:`RATINGS_COLUMNS`, in file order.

    Integer columns (``k``, ranks, ``favourite``, ``blind``, ``db_chunk_idx``) are int64, the other
    numeric ones float64 (empty seam cells are NaN), text columns strings (empty comment = ``""``).
    What a crash mid-append can leave is skipped, not an error: a last line without a newline, and
    the rows of any submission with fewer rows than its ``k``. ``frame.attrs["dropped_rows"]`` counts
    the rows skipped (the partial line included). A log with an earlier header
    (:data:`EARLIER_COLUMNS`) is read as it is (never upgraded here), the columns it lacks empty
    (``timbre``, ``loudness_matched`` and ``weights`` are ``""``).

    Args:
        path: the CSV log.
        missing_ok: return an empty frame instead of raising when the file does not exist.

    Raises:
        EnsembleError: the file is missing (unless ``missing_ok``), unreadable, not UTF-8, has another
            header, or has a malformed row before its last line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        if missing_ok:
            return _empty_frame()
        raise EnsembleError(f"ratings log {path} does not exist") from exc
    except OSError as exc:
        raise EnsembleError(f"cannot read the ratings log {path}: {exc}") from exc

    dropped = 0
    if raw and not raw.endswith(b"\n"):  # partial last line of an interrupted append
        raw = raw[: raw.rfind(b"\n") + 1]
        dropped = 1
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnsembleError(f"ratings log {path} is not UTF-8 text: {exc}") from exc
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records:
        frame = _empty_frame()
        frame.attrs["dropped_rows"] = dropped
        return frame
    header = tuple(records[0])
    if header != RATINGS_COLUMNS and header not in EARLIER_COLUMNS:
        raise EnsembleError(f"{path} is not a ratings log: its header is {','.join(records[0])[:200]!r}, "
                            f"expected {','.join(RATINGS_COLUMNS)!r}")
    for line, record in enumerate(records[1:], start=2):
        if len(record) != len(header):
            raise EnsembleError(f"ratings log {path} line {line} has {len(record)} fields, "
                                f"expected {len(header)}; the file is corrupt")
    if len(records) == 1:
        frame = _empty_frame()
        frame.attrs["dropped_rows"] = dropped
        return frame

    frame = _typed_frame(records[1:], path, header)
    rows_per_submission = frame.groupby("submission_id", sort=False)["submission_id"].transform("size")
    too_many = rows_per_submission > frame["k"]
    if too_many.any():
        bad = frame.loc[too_many, "submission_id"].iloc[0]
        raise EnsembleError(f"ratings log {path}: submission {bad} has more rows than its k; "
                            "the file is corrupt")
    complete = rows_per_submission == frame["k"]
    dropped += int((~complete).sum())
    frame = frame.loc[complete].reset_index(drop=True)
    frame.attrs["dropped_rows"] = dropped
    return frame
