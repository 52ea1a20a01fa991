"""A prepared study served to raters: who hears which round in which order, what they heard, what
they ranked -- all on disk, so a reload or a server restart resumes each rater at their next round.

Folder layout (``python -m ensemble study prepare`` writes the first three; the app the rest)::

    DIR/manifest.json        the rounds, their candidates (label, file, hash), versions, seeds
    DIR/study.yaml           the study file as given
    DIR/audio/<round>/*.wav  the candidates, loudness-matched, opaque names (all a browser may fetch)
    DIR/logs/raters/<id>.json  each rater's rounds in order, their seed, each round's shown order
    DIR/logs/ratings.csv     one row per shown candidate per submission (:data:`RATING_COLUMNS`)
    DIR/logs/listening.csv   every play / pause / seek / progress event (:data:`LISTENING_COLUMNS`)

Writes run under one ``filelock.FileLock`` (``logs/.lock``) for all processes: a rater's file is
written whole or not at all (:func:`ensemble.files.write_json_atomic`), a log append is one
``os.write`` of whole lines followed by ``fsync`` (the pattern of :mod:`ensemble.ratings.log`), and a
reader skips a partial last line and a submission with fewer rows than it declares. Which rounds a
rater has done is read from ``ratings.csv`` itself, so the log is the one truth: nothing can say a
round is done that has no rows, or the reverse.

Assignment: a rater's first visit takes the ``rounds_per_rater`` rounds that the fewest raters have
been given so far (ties broken by the rater's own seeded RNG), so each round is rated by about equally
many raters; the order of the rounds and of the candidates within each round are shuffled by that RNG,
whose seed (from the study's seed and the rater id) is stored and logged with every rating row.

Listening: the page's player reports what was heard as intervals of media time per candidate; the
server notes when each event arrives by its own clock (``server_ms``) and credits a heard stretch no
more media seconds than passed on that clock since the candidate's play (:class:`ListeningClock`, the
credit logged as ``credited_s``), so a page cannot claim 5 s heard in 1 s. A ranking is accepted only
when every candidate was credited ``min_heard_seconds`` in all, with the seam inside what was
credited (:func:`heard_summary`), checked here against the log at submission, not in the page.

Released logs: every rating row carries what the analysis needs -- the study's name and version
(``study_sha256``), the round, each candidate's condition and role (``system``, ``reference``,
``anchor``), the tau condition, the screening threshold and whether playback was loudness-matched --
so ``python -m ensemble study report`` reads the two logs alone (:func:`released_logs`), never the
manifest. A log of an older version lacks some of those columns and is refused, naming them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import filelock
import numpy as np

from ensemble.errors import EnsembleError
from ensemble.files import write_json_atomic
from ensemble.study.spec import ANCHOR, NAME_PATTERN, REFERENCE

__all__ = ["MANIFEST", "FORMAT_VERSION", "RATING_COLUMNS", "LISTENING_COLUMNS", "LISTEN_EVENTS",
           "Study", "RaterState", "Heard", "heard_summary", "read_log", "open_study"]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
LOCK_TIMEOUT_S = 10.0
SEAM_MARGIN_S = 0.25  # "the seam was heard": what was heard covers the seam +- this
JOIN_GAP_S = 0.3  # heard intervals closer than this are one stretch (timeupdate fires every ~250 ms)

LOG_VERSION = 2  # the logs' own format: 2 carries what the report needs (role, tau condition, server clock)
RATING_COLUMNS: tuple[str, ...] = (
    "submission_id", "timestamp_utc", "study", "study_sha256", "rater_id", "session_id", "round_id",
    "round_index", "order_seed", "n_shown", "shown_position", "label", "condition", "role", "ranking",
    "composite_rank", "human_rank", "loudness_matched", "blind", "heard_seconds", "seam_heard", "replays",
    "tau_condition", "screening_threshold", "model_version", "database_version", "log_version", "comment")
LISTENING_COLUMNS: tuple[str, ...] = (
    "timestamp_utc", "study", "rater_id", "session_id", "round_id", "shown_position", "label", "condition",
    "role", "event", "media_from_s", "media_to_s", "playback_rate", "client_ms", "server_ms", "credited_s",
    "log_version")
# what `study report` reads (a released log must hold at least these; an older log lacks some)
REPORT_RATING_COLUMNS: tuple[str, ...] = (
    "submission_id", "study", "study_sha256", "rater_id", "round_id", "n_shown", "shown_position", "label",
    "condition", "role", "composite_rank", "human_rank", "loudness_matched", "heard_seconds", "replays",
    "tau_condition", "screening_threshold")
REPORT_LISTENING_COLUMNS: tuple[str, ...] = (
    "study", "rater_id", "round_id", "shown_position", "role", "event", "media_from_s", "media_to_s",
    "server_ms", "credited_s")
ROLES = ("system", "reference", "anchor")  # a candidate's role in its round
# play: started at media_from_s; progress / pause / ended: heard media_from_s..media_to_s;
# seek: jumped from media_from_s to media_to_s (nothing heard); switch: started here from another
# candidate's playhead (media_from_s = that playhead)
LISTEN_EVENTS = ("play", "progress", "pause", "ended", "seek", "switch")
HEARD_EVENTS = ("progress", "pause", "ended")
# media may run this much ahead of the server's clock (timer jitter, an event batched behind another)
CLOCK_TOLERANCE = 1.1
MAX_EVENTS_PER_CALL = 200


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _one_line(text: object) -> str:
    s = "".join(" " if (ord(c) < 32 or c == "\x7f") else c for c in str(text))
    return ("'" + s) if s[:1] in ("=", "+", "-", "@") and not _is_number(s) else s


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _csv_bytes(columns: tuple[str, ...], rows: list[dict], header: bool) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(columns)
    for r in rows:
        w.writerow(["" if r.get(c) is None else _one_line(r[c]) for c in columns])
    return buf.getvalue().encode("utf-8")


def _append(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    """Append whole lines with one write + fsync (called under the study's lock); a partial last line
    left by a killed process is cut off first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            os.lseek(fd, max(0, size - 1), os.SEEK_SET)
            if os.read(fd, 1) != b"\n":  # a partial last line: cut it off
                data = open(path, "rb").read()
                size = data.rfind(b"\n") + 1
                os.ftruncate(fd, size)
        data = _csv_bytes(columns, rows, header=size == 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_log(path: str | os.PathLike, columns: tuple[str, ...]) -> list[dict]:
    """Rows of a study log as dicts of text (a missing file: none). A partial last line is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]
    reader = csv.reader(io.StringIO(data.decode("utf-8")))
    header = next(reader, None)
    if header is None:
        return []
    if tuple(header) != columns:
        missing = [c for c in columns if c not in header]
        raise EnsembleError(
            f"{str(path)!r} " + (f"lacks the columns {missing} (written by an older version of the app); "
                                 if missing else f"has the columns {header}; ")
            + f"this version writes {list(columns)}: move the old log aside to start a new one")
    return [dict(zip(columns, r, strict=True)) for r in reader if len(r) == len(columns)]


def read_released_log(path: str | os.PathLike, required: tuple[str, ...]) -> list[dict]:
    """Rows of a released study log that must hold at least ``required`` (other columns are kept).

    Raises:
        EnsembleError: no such file, or a log (e.g. from an older version) that lacks some of
            ``required``, naming them.
    """
    path = Path(path)
    if not path.is_file():
        raise EnsembleError(f"no log at {str(path)!r}; a study report needs the released ratings.csv and "
                            "listening.csv")
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]
    reader = csv.reader(io.StringIO(data.decode("utf-8")))
    header = next(reader, None) or []
    missing = [c for c in required if c not in header]
    if missing:
        raise EnsembleError(f"{str(path)!r} lacks the columns {missing} that a study report needs (a log written "
                            f"before log version {LOG_VERSION}); it has {header}")
    return [dict(zip(header, r, strict=True)) for r in reader if len(r) == len(header)]


def released_logs(folder: str | os.PathLike, *, missing_ok: bool = False) -> tuple[list[dict], list[dict]]:
    """The ratings and listening rows of a study's released logs: ``folder/logs/*.csv`` (a study
    folder) or ``folder/*.csv`` (the two logs alone).

    Args:
        missing_ok: a log not written yet reads as no rows (a study nobody has rated).

    Raises:
        EnsembleError: a log missing (unless ``missing_ok``) or lacking columns (see
            :func:`read_released_log`).
    """
    folder = Path(folder)
    logs = folder / "logs" if (folder / "logs").is_dir() or (folder / MANIFEST).is_file() else folder
    out = []
    for name, required in (("ratings.csv", REPORT_RATING_COLUMNS), ("listening.csv", REPORT_LISTENING_COLUMNS)):
        path = logs / name
        out.append([] if missing_ok and not path.is_file() else read_released_log(path, required))
    return out[0], out[1]


def complete_ratings(rows: list[dict]) -> list[dict]:
    """The rating rows of complete submissions only (as many rows as ``n_shown``)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["submission_id"]] = counts.get(r["submission_id"], 0) + 1
    return [r for r in rows if counts[r["submission_id"]] == int(r["n_shown"])]


# ------------------------------------------------------------------------------------ listening


@dataclass(frozen=True)
class Heard:
    """What the log credits one candidate's player with: seconds in all (union of the credited heard
    intervals, media time), whether those cover the seam, and how often play was pressed."""

    seconds: float
    seam: bool
    replays: int

    def enough(self, min_seconds: float) -> bool:
        return self.seam and self.seconds >= min_seconds - 1e-6


def role_of(condition: str) -> str:
    """A candidate's role from its condition: the hidden ``reference``, the low ``anchor``, else ``system``."""
    return condition if condition in (REFERENCE, ANCHOR) else "system"


class ListeningClock:
    """Credits heard stretches against the server's clock, event by event of one round (log order).

    A stretch of candidate p is open from the arrival (server ms) of its ``play``/``switch`` to that of
    its ``pause``/``ended``; each heard event (``progress``/``pause``/``ended``) is credited its media
    span cut to ``CLOCK_TOLERANCE`` x the server time since the stretch's previous event arrived. A
    ``play`` of another candidate ends p's stretch there (one player at a time: the page pauses the
    others), so four players claimed at once share one clock. A heard event without an open stretch
    is credited nothing.
    """

    def __init__(self) -> None:
        self._open: dict[int, int] = {}  # position -> server ms its credit is counted from
        self._cap: dict[int, int] = {}  # position -> server ms its stretch was ended by another's play

    def credit(self, position: int, event: str, media_from_s: float, media_to_s: float, server_ms: int) -> float:
        """Seconds of media credited to this event (0 for play, seek and switch)."""
        if event in ("play", "switch"):
            for p in self._open:
                if p != position:
                    self._cap.setdefault(p, server_ms)
            self._open[position] = server_ms
            self._cap.pop(position, None)
            return 0.0
        if event not in HEARD_EVENTS:
            return 0.0
        credit = 0.0
        if position in self._open:
            until = min(server_ms, self._cap.get(position, server_ms))
            elapsed = max(0, until - self._open[position]) / 1000.0
            credit = min(max(0.0, media_to_s - media_from_s), CLOCK_TOLERANCE * elapsed)
            self._open[position] = until
        if event in ("pause", "ended"):
            self._open.pop(position, None)
            self._cap.pop(position, None)
        return round(credit, 3)


def heard_summary(events: list[dict], seam_s: float) -> Heard:
    """:class:`Heard` of one candidate from its listening-log rows (``event``, ``media_from_s``,
    ``credited_s``): each heard event counts ``media_from_s .. media_from_s + credited_s``."""
    spans = []
    for e in events:
        if e["event"] in HEARD_EVENTS:
            a = float(e["media_from_s"])
            credited = min(float(e["credited_s"] or 0.0), float(e["media_to_s"]) - a)
            if credited > 0:
                spans.append((a, a + credited))
    spans.sort()
    merged: list[list[float]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1] + JOIN_GAP_S:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    seconds = sum(b - a for a, b in merged)
    seam = any(a <= seam_s - SEAM_MARGIN_S and b >= seam_s + SEAM_MARGIN_S for a, b in merged)
    plays = sum(e["event"] in ("play", "switch") for e in events)
    return Heard(round(seconds, 3), seam, max(0, plays - 1))


# --------------------------------------------------------------------------------------- raters


@dataclass(frozen=True)
class RaterState:
    """One rater's assignment: the round ids in the order they are played and, per round, the
    prepared candidate indices in shown order; the seed that drew both."""

    rater_id: str
    seed: int
    rounds: tuple[str, ...]
    orders: dict[str, list[int]]
    created_utc: str

    def to_dict(self) -> dict:
        return {"rater_id": self.rater_id, "seed": self.seed, "rounds": list(self.rounds),
                "orders": self.orders, "created_utc": self.created_utc}


def rater_seed(study_seed: int, rater_id: str) -> int:
    """The rater's RNG seed: 63 bits of SHA-256(study seed, rater id) -- the same rater, the same order."""
    digest = hashlib.sha256(f"{study_seed}:{rater_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class Study:
    """A prepared study folder, opened by the server (thread-safe; many processes may share it)."""

    def __init__(self, folder: str | os.PathLike, *, clock: Callable[[], float] = time.time) -> None:
        """Open ``folder``; ``clock`` is the server's wall clock in seconds (tests pass their own)."""
        self.folder = Path(folder)
        self._clock = clock
        path = self.folder / MANIFEST
        try:
            self.manifest = json.loads(path.read_text(encoding="utf-8"))
        except OSError:
            raise EnsembleError(f"{str(self.folder)!r} is not a prepared study (no {MANIFEST}); make one with "
                                "`python -m ensemble study prepare STUDY.yaml --out DIR`") from None
        except ValueError as exc:
            raise EnsembleError(f"{str(path)!r} is not valid JSON ({exc})") from None
        if self.manifest.get("format") != FORMAT_VERSION:
            raise EnsembleError(f"{str(path)!r} has format {self.manifest.get('format')!r}; this app reads "
                                f"format {FORMAT_VERSION}")
        self.name: str = self.manifest["name"]
        s = self.manifest["study"]
        self.title: str = s["title"]
        self.instructions: str = s["instructions"]
        self.consent: str = s["consent"]
        self.rounds_per_rater: int = int(s["rounds_per_rater"])
        self.seed: int = int(s["seed"])
        self.min_heard_seconds: float = float(s["min_heard_seconds"])
        self.preroll_seconds: float = float(s["preroll_seconds"])
        self.screening_threshold: float = float(s["screening_threshold"])
        self.rounds: dict[str, dict] = {r["round_id"]: r for r in self.manifest["rounds"]}
        # a study's playback is loudness-matched and fixed (prepare writes matched files)
        self.loudness_matched: bool = bool(self.manifest.get("loudness_matched", True))
        self.logs = self.folder / "logs"
        self.ratings_file = self.logs / "ratings.csv"
        self.listening_file = self.logs / "listening.csv"
        self._lock = filelock.FileLock(str(self.logs / ".lock"), timeout=LOCK_TIMEOUT_S)
        self._thread_lock = threading.RLock()

    # -- locking ---------------------------------------------------------------------------------
    def _locked(self):
        self.logs.mkdir(parents=True, exist_ok=True)
        return _Locked(self)

    # -- raters ----------------------------------------------------------------------------------
    def _rater_file(self, rater_id: str) -> Path:
        return self.logs / "raters" / f"{rater_id}.json"

    def _read_rater(self, rater_id: str) -> RaterState | None:
        path = self._rater_file(rater_id)
        if not path.is_file():
            return None
        d = json.loads(path.read_text(encoding="utf-8"))
        return RaterState(d["rater_id"], int(d["seed"]), tuple(d["rounds"]),
                          {k: list(v) for k, v in d["orders"].items()}, d["created_utc"])

    def rater(self, rater_id: object) -> RaterState:
        """The rater's assignment, made on their first visit (see the module docstring).

        Raises:
            EnsembleError: an empty or unusable rater id.
        """
        rid = "" if rater_id is None else str(rater_id).strip()
        if not NAME_PATTERN.fullmatch(rid.lower()):
            raise EnsembleError(f"rater id {str(rater_id)!r}; allowed: 1-64 characters of a-z, A-Z, 0-9, '_' "
                                "and '-' (e.g. ?rater=alice)")
        state = self._read_rater(rid)
        if state is not None:
            return state
        with self._locked():
            state = self._read_rater(rid)
            if state is not None:
                return state
            counts = {r: 0 for r in self.rounds}
            for f in (self.logs / "raters").glob("*.json"):
                for r in json.loads(f.read_text(encoding="utf-8"))["rounds"]:
                    if r in counts:
                        counts[r] += 1
            seed = rater_seed(self.seed, rid)
            rng = np.random.default_rng(seed)
            ids = list(self.rounds)
            tie = rng.permutation(len(ids))
            chosen = [ids[i] for i in sorted(range(len(ids)), key=lambda i: (counts[ids[i]], tie[i]))]
            chosen = chosen[:self.rounds_per_rater]
            order = [chosen[i] for i in rng.permutation(len(chosen))]
            orders = {r: [int(i) for i in rng.permutation(len(self.rounds[r]["candidates"]))] for r in order}
            state = RaterState(rid, seed, tuple(order), orders, _now())
            write_json_atomic(self._rater_file(rid), state.to_dict())
            return state

    def done_rounds(self, rater_id: str) -> dict[str, str]:
        """Round id -> submission id of every round the rater has submitted (from ``ratings.csv``)."""
        return {r["round_id"]: r["submission_id"] for r in complete_ratings(self.ratings())
                if r["rater_id"] == rater_id}

    def next_round(self, rater_id: object) -> tuple[int, str] | None:
        """(1-based index, round id) of the rater's next round, or None when they have done them all."""
        state = self.rater(rater_id)
        done = self.done_rounds(state.rater_id)
        for i, r in enumerate(state.rounds, start=1):
            if r not in done:
                return i, r
        return None

    def shown(self, rater_id: str, round_id: str) -> list[dict]:
        """The round's candidates in the rater's shown order, each with ``position`` 1..n added."""
        state = self.rater(rater_id)
        if round_id not in state.orders:
            raise EnsembleError(f"round {round_id!r} is not one of rater {rater_id!r}'s rounds "
                                f"{list(state.rounds)}")
        cands = self.rounds[round_id]["candidates"]
        return [{**cands[i], "position": pos} for pos, i in enumerate(state.orders[round_id], start=1)]

    # -- logs -----------------------------------------------------------------------------------
    def ratings(self) -> list[dict]:
        return read_log(self.ratings_file, RATING_COLUMNS)

    def listening(self) -> list[dict]:
        return read_log(self.listening_file, LISTENING_COLUMNS)

    def _current(self, rater_id: object, round_id: str) -> tuple[RaterState, int]:
        nxt = self.next_round(rater_id)
        state = self.rater(rater_id)
        if nxt is None or nxt[1] != round_id:
            where = "has finished every round" if nxt is None else f"is on round {nxt[1]!r}"
            raise EnsembleError(f"rater {state.rater_id!r} {where}, not {round_id!r}; reload the page")
        return state, nxt[0]

    def log_listening(self, rater_id: object, round_id: str, events: list[dict], *,
                      session_id: str = "") -> dict[int, Heard]:
        """Append the player's events for the rater's current round; returns :meth:`heard`.

        Each event: ``position`` (shown, 1..n), ``event`` (:data:`LISTEN_EVENTS`), ``from`` and ``to``
        (media seconds), optional ``rate`` and ``client_ms``. Each row records when it arrived by the
        server's clock (``server_ms``) and the media seconds :class:`ListeningClock` credits it
        (``credited_s``): a page cannot claim more heard time than the server saw pass.

        Raises:
            EnsembleError: not the rater's current round, an unknown event or position, times outside
                the clip.
        """
        state, _ = self._current(rater_id, round_id)
        shown = self.shown(state.rater_id, round_id)
        duration = float(self.rounds[round_id]["seconds"])
        if not isinstance(events, list) or len(events) > MAX_EVENTS_PER_CALL:
            raise EnsembleError(f"events: expected a list of at most {MAX_EVENTS_PER_CALL} events")
        parsed = []
        for e in events:
            try:
                pos, kind = int(e["position"]), str(e["event"])
                t0, t1 = float(e.get("from", 0.0)), float(e.get("to", e.get("from", 0.0)))
                rate = float(e.get("rate", 1.0))
                client_ms = int(e.get("client_ms", 0))
            except (KeyError, TypeError, ValueError, AttributeError):
                raise EnsembleError(f"listening event {e!r}: expected position, event, from, to") from None
            if not 1 <= pos <= len(shown) or kind not in LISTEN_EVENTS:
                raise EnsembleError(f"listening event {e!r}: position 1..{len(shown)}, event one of "
                                    f"{list(LISTEN_EVENTS)}")
            if not (math.isfinite(t0) and math.isfinite(t1)) or min(t0, t1) < -0.05 or max(t0, t1) > duration + 0.5:
                raise EnsembleError(f"listening event {e!r}: times must lie within the clip (0..{duration:g} s)")
            if kind in HEARD_EVENTS and t1 < t0:
                raise EnsembleError(f"listening event {e!r}: heard from {t0:g} s to {t1:g} s runs backwards")
            parsed.append((pos, kind, round(max(0.0, t0), 3), round(max(0.0, t1), 3), rate, client_ms))
        if parsed:
            with self._locked():
                server_ms = int(round(self._clock() * 1000))
                clock = ListeningClock()
                for r in self.listening():  # this round's earlier events set the clock's state
                    if r["rater_id"] == state.rater_id and r["round_id"] == round_id:
                        clock.credit(int(r["shown_position"]), r["event"], float(r["media_from_s"]),
                                     float(r["media_to_s"]), int(r["server_ms"]))
                rows = []
                for pos, kind, t0, t1, rate, client_ms in parsed:
                    c = shown[pos - 1]
                    rows.append({"timestamp_utc": _now(), "study": self.name, "rater_id": state.rater_id,
                                 "session_id": session_id, "round_id": round_id, "shown_position": pos,
                                 "label": c["label"], "condition": c["condition"], "role": role_of(c["condition"]),
                                 "event": kind, "media_from_s": t0, "media_to_s": t1, "playback_rate": rate,
                                 "client_ms": client_ms, "server_ms": server_ms,
                                 "credited_s": clock.credit(pos, kind, t0, t1, server_ms), "log_version": LOG_VERSION})
                _append(self.listening_file, LISTENING_COLUMNS, rows)
        return self.heard(state.rater_id, round_id)

    def clamped(self, rater_id: str, round_id: str) -> list[str]:
        """One phrase per candidate whose page claimed more heard time than the server's clock allowed."""
        claimed: dict[int, list[float]] = {}
        for r in self.listening():
            if r["rater_id"] == rater_id and r["round_id"] == round_id and r["event"] in HEARD_EVENTS:
                c = claimed.setdefault(int(r["shown_position"]), [0.0, 0.0])
                c[0] += float(r["media_to_s"]) - float(r["media_from_s"])
                c[1] += float(r["credited_s"])
        return [f"candidate {p}: the page reported {a:.1f} s heard, the server's clock allows {b:.1f} s"
                for p, (a, b) in sorted(claimed.items()) if a - b > 0.5]

    def heard(self, rater_id: str, round_id: str) -> dict[int, Heard]:
        """Shown position -> :class:`Heard`, from the listening log."""
        seam = float(self.rounds[round_id]["seam_seconds"])
        events: dict[int, list[dict]] = {}
        for r in self.listening():
            if r["rater_id"] == rater_id and r["round_id"] == round_id:
                events.setdefault(int(r["shown_position"]), []).append(r)
        n = len(self.rounds[round_id]["candidates"])
        return {p: heard_summary(events.get(p, []), seam) for p in range(1, n + 1)}

    def missing_listening(self, rater_id: str, round_id: str) -> list[str]:
        """What is still to hear, one phrase per candidate (empty: the ranking may be given)."""
        out = []
        for pos, h in self.heard(rater_id, round_id).items():
            need = []
            if h.seconds < self.min_heard_seconds - 1e-6:
                need.append(f"heard {h.seconds:.1f} s of {self.min_heard_seconds:g} s")
            if not h.seam:
                need.append("the seam not heard")
            if need:
                out.append(f"candidate {pos}: {', '.join(need)}")
        return out

    def submit(self, rater_id: object, round_id: str, ranks: list[object], *, session_id: str = "",
               comment: str = "") -> str:
        """Log the rater's ranking of their current round (one rank per shown position, 1 = best).

        Raises:
            EnsembleError: not the rater's current round (or already submitted), a missing, duplicate
                or out-of-range rank, or listening the log does not show (naming each candidate and
                what is missing). Nothing is written then.
        """
        with self._locked():
            state, index = self._current(rater_id, round_id)
            shown = self.shown(state.rater_id, round_id)
            n = len(shown)
            # the listening gate first: whatever the page sent, nothing is ranked unheard
            missing = self.missing_listening(state.rater_id, round_id)
            if missing:
                clamped = self.clamped(state.rater_id, round_id)
                raise EnsembleError("not yet heard enough to rank (each candidate "
                                    f"{self.min_heard_seconds:g} s by the server's clock, across the seam): "
                                    + "; ".join(missing)
                                    + (f" (not counted: {'; '.join(clamped)})" if clamped else ""))
            if len(ranks) < n:
                raise EnsembleError(f"{len(ranks)} ranks for {n} candidates; give each candidate a rank 1..{n}")
            clean: list[int] = []
            for pos, r in enumerate(ranks[:n], start=1):
                try:
                    x = int(str(r).strip()) if r is not None and str(r).strip() else None
                except ValueError:
                    x = None
                if x is None or not 1 <= x <= n:
                    raise EnsembleError(f"candidate {pos} has no rank (give each candidate a rank 1..{n})")
                clean.append(x)
            dup = sorted({x for x in clean if clean.count(x) > 1})
            if dup:
                raise EnsembleError(f"rank{'s' if len(dup) > 1 else ''} {dup} given twice; each rank 1..{n} once")
            heard = self.heard(state.rater_id, round_id)
            sid = uuid.uuid4().hex
            ts = _now()
            versions = self.manifest["versions"]
            rows = [{"submission_id": sid, "timestamp_utc": ts, "study": self.name,
                     "study_sha256": self.manifest["study_sha256"], "rater_id": state.rater_id,
                     "session_id": session_id, "round_id": round_id, "round_index": index,
                     "order_seed": state.seed, "n_shown": n, "shown_position": c["position"],
                     "label": c["label"], "condition": c["condition"], "role": role_of(c["condition"]),
                     "ranking": c.get("ranking") or "", "composite_rank": c.get("composite_rank"),
                     "human_rank": rank, "loudness_matched": self.loudness_matched, "blind": True,
                     "heard_seconds": heard[c["position"]].seconds, "seam_heard": heard[c["position"]].seam,
                     "replays": heard[c["position"]].replays, "tau_condition": tau_condition(self),
                     "screening_threshold": self.screening_threshold, "model_version": versions["model"],
                     "database_version": versions["database"], "log_version": LOG_VERSION,
                     "comment": comment or ""} for c, rank in zip(shown, clean, strict=True)]
            _append(self.ratings_file, RATING_COLUMNS, rows)
            return sid

    def revealed(self, rater_id: str, round_id: str) -> list[dict]:
        """Once submitted: each shown candidate's condition and scores (what blind mode kept back)."""
        if round_id not in self.done_rounds(rater_id):
            raise EnsembleError(f"round {round_id!r} is not submitted yet: its conditions stay hidden")
        keys = ("position", "label", "condition", "composite_rank", "composite", "relevance", "coherence",
                "seam_pitch_jump_cents", "seam_loudness_jump_db")
        return [{k: c.get(k) for k in keys} for c in self.shown(rater_id, round_id)]


class _Locked:
    """The study's file lock (processes) and thread lock (this server's threads), held together."""

    def __init__(self, study: Study) -> None:
        self.study = study

    def __enter__(self):
        self.study._thread_lock.acquire()
        try:
            self.study._lock.acquire()
        except filelock.Timeout:
            self.study._thread_lock.release()
            raise EnsembleError(f"the study's logs stayed locked for {LOCK_TIMEOUT_S:g} s; try again") from None
        return self

    def __exit__(self, *exc) -> None:
        self.study._lock.release()
        self.study._thread_lock.release()


def open_study(root: str | os.PathLike, name: object) -> Study:
    """The study ``name`` under the studies root (its folder ``root/name``).

    Raises:
        EnsembleError: a name that is not a study name, or no prepared study of that name.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise EnsembleError(f"study {str(name)!r}; allowed: a study name of a-z, 0-9, '_' and '-'")
    folder = Path(root) / name
    if not (folder / MANIFEST).is_file():
        raise EnsembleError(f"no study named {name!r} is prepared on this server")
    study = Study(folder)
    if study.name != name:
        raise EnsembleError(f"the folder {name!r} holds the study {study.name!r}; rename one of them")
    return study


__all__ += ["complete_ratings", "rater_seed", "REFERENCE", "ANCHOR"]


def tau_condition(study: Study) -> str:
    """The condition whose composite ranks the tau compares: the first with ``ranking: composite``
    (else the first condition)."""
    conds = study.manifest["study"]["conditions"]
    return next((c["name"] for c in conds if c["ranking"] == "composite"), conds[0]["name"])


def report_of(study: Study, *, config=None, include_flagged: bool = False) -> dict:
    """:func:`ensemble.study.analysis.report_from_logs` of the study's own logs (what ``study report``
    reads from the released logs; nothing from the manifest)."""
    from ensemble.study.analysis import report_from_logs

    return report_from_logs(*released_logs(study.folder, missing_ok=True), config=config,
                            include_flagged=include_flagged, study=study.name)


__all__ += ["tau_condition", "report_of", "released_logs", "read_released_log", "ListeningClock", "role_of",
            "LOG_VERSION", "REPORT_RATING_COLUMNS", "REPORT_LISTENING_COLUMNS", "ROLES", "CLOCK_TOLERANCE"]
