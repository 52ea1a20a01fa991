"""What stands between a client and the handlers: a request-rate cap, and inputs the app checks itself.

* :class:`RateLimiter` -- at most N requests per minute per client address (``ENSEMBLE_RATE_LIMIT``,
  :class:`ui.config.ServerConfig`); a client over it is told, in words, how long to wait.
* :func:`app_checked` -- a Gradio Slider or CheckboxGroup, drawn the same in the page, whose
  preprocessing passes an API client's value through unchanged. Gradio's own
  range and choice checks answer "Value 0 is less than minimum value 1." (no field named) and print a
  server traceback; with these the handler's own check
  (:func:`ensemble.listening.settings.check_settings`) names the field, the value and what is allowed.
* :func:`check_text`, :func:`check_ranks` -- the API's parameters by type (a string of ranks would be
  walked letter by letter, a number taken for a rater id).
* :func:`discard_upload` -- a refused upload is deleted at once, not left in Gradio's folder.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from pathlib import Path

import gradio as gr

from ensemble.errors import EnsembleError

__all__ = ["RateLimiter", "app_checked", "check_ranks", "check_text", "discard_upload"]


def _as_given(payload):
    return payload


def app_checked(component: gr.Slider | gr.CheckboxGroup):
    """``component`` (a Slider or CheckboxGroup), drawn as it is, whose value reaches the handler
    unchecked: the handler's own check names the field. Set on the instance: a subclass would make
    Gradio write a ``.pyi`` stub beside this file at import.
    """
    component.preprocess = _as_given
    return component


class RateLimiter:
    """At most ``per_minute`` requests per client address in any 60 s window. Thread-safe.

    Args:
        per_minute: the cap; 0 turns it off.
        max_clients: addresses remembered (the least recently seen are forgotten first).
    """

    def __init__(self, per_minute: int, *, max_clients: int = 10_000) -> None:
        self.per_minute = int(per_minute)
        self.max_clients = max_clients
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, request: object) -> None:
        """Count one request from ``request``'s client (a ``gr.Request``; None: not counted).

        Raises:
            EnsembleError: the client made ``per_minute`` requests in the last 60 s; nothing is done.
        """
        if self.per_minute <= 0 or request is None:
            return
        client = getattr(request, "client", None)
        key = str(getattr(client, "host", None) or getattr(request, "session_hash", None) or "unknown")
        now = time.monotonic()
        with self._lock:
            times = self._seen.pop(key, None) or deque()
            while times and now - times[0] >= 60.0:
                times.popleft()
            self._seen[key] = times
            while len(self._seen) > self.max_clients:
                self._seen.popitem(last=False)
            if len(times) >= self.per_minute:
                wait = 60.0 - (now - times[0])
                raise EnsembleError(f"too many requests from your address: {len(times)} in the last minute; "
                                    f"allowed: {self.per_minute} per minute. Wait {wait:.0f} s and try again")
            times.append(now)


def check_text(name: str, value: object, *, optional: bool = True) -> str:
    """An API parameter that must be text (``None`` reads as empty when ``optional``).

    Raises:
        EnsembleError: anything else (a number would be coerced silently), naming field and value.
    """
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise EnsembleError(f"{name} {value!r} ({type(value).__name__}); allowed: text")
    return value


def check_ranks(value: object) -> list[int | None]:
    """``/rate``'s ``ranks``: a list of whole numbers (``None`` for a candidate left unranked, which the
    log's own check then refuses by position).

    Raises:
        EnsembleError: not a list (a string or a dict would be walked character by character or key
            by key), or an item that is not a whole number, naming the value and what is allowed.
    """
    allowed = "allowed: a list of whole numbers, the rank 1..K of each shown candidate, e.g. [2, 1, 3]"
    if not isinstance(value, (list, tuple)):
        raise EnsembleError(f"ranks {value!r} ({type(value).__name__}); {allowed}")
    for i, r in enumerate(value):
        if r is None:
            continue
        if isinstance(r, bool) or not isinstance(r, (int, float)) or r != int(r):
            raise EnsembleError(f"ranks[{i}] = {r!r} (rank of candidate {i + 1}); {allowed}")
    return [None if r is None else int(r) for r in value]


def discard_upload(path: object) -> bool:
    """Delete a refused upload at once (with the folder Gradio made for it), when it lies in Gradio's
    upload folder; a file anywhere else (an example, a path given by a local caller) is left alone.

    Returns:
        True when something was deleted.
    """
    if not isinstance(path, str) or not path.strip():
        return False
    from gradio.utils import get_upload_folder, is_in_or_equal

    upload_root = Path(get_upload_folder()).resolve()
    file = Path(path).resolve()
    if file == upload_root or not is_in_or_equal(file, upload_root):
        return False
    try:
        file.unlink(missing_ok=True)
        folder = file.parent
        if folder != upload_root and not any(folder.iterdir()):
            folder.rmdir()
    except OSError:
        return False
    return True
