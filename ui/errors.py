"""What the user sees when a handler fails: library errors in their own words, the rest as a reference.

:class:`ensemble.EnsembleError` (a bad upload, a bad setting, an invalid ranking) becomes a
``gr.Error`` carrying its message, HTML-escaped. Anything else is a bug or a server problem: it is
logged with its traceback under a short reference, and the user gets a generic message naming the
reference, never the traceback.

A toast fades after a few seconds, and the output it failed leaves only Gradio's bare "Error": so a
handler given a :class:`LastErrors` also remembers, per browser session, what it told the user, and a
``.failure`` event writes that message where it stays (:func:`make_show_failure`: the Generate tab's
status line).
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import gradio as gr

from ensemble.errors import EnsembleError

__all__ = ["LastErrors", "make_show_failure", "user_errors", "user_message"]

log = logging.getLogger("ensemble.app")


def user_message(exc: BaseException) -> str:
    """``exc``'s message, safe to show in a ``gr.Error`` or ``gr.Warning``.

    Args:
        exc: the exception; its text may hold user input (file names).

    Returns:
        The message with ``<``, ``>`` and ``&`` escaped: Gradio renders these messages as HTML, and
        user text must not become markup.
    """
    return html.escape(str(exc), quote=False)


def _internal(what: str, exc: BaseException) -> gr.Error:
    ref = f"{time.strftime('%Y%m%d-%H%M%S')}-{id(exc) % 10000:04d}"
    log.error("%s failed (ref %s)", what, ref, exc_info=exc)
    return gr.Error(f"{what} failed because of a problem on the server (ref {ref}); it has been "
                    "logged. Please try again.", print_exception=False)


class LastErrors:
    """The last error message each browser session was shown, for the ``.failure`` event that keeps
    it on screen (bounded: the newest ``max_sessions`` sessions). Thread-safe."""

    def __init__(self, max_sessions: int = 1000) -> None:
        self.max_sessions = max_sessions
        self._messages: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, request: object, message: str) -> None:
        """Keep ``message`` for the session of ``request`` (a ``gr.Request``; others are ignored)."""
        key = getattr(request, "session_hash", None)
        if not key:
            return
        with self._lock:
            self._messages[key] = message
            self._messages.move_to_end(key)
            while len(self._messages) > self.max_sessions:
                self._messages.popitem(last=False)

    def pop(self, request: object) -> str | None:
        """The session's last message (forgotten once read), or None."""
        key = getattr(request, "session_hash", None)
        with self._lock:
            return self._messages.pop(key, None) if key else None


def make_show_failure(last: LastErrors, *, heading: str) -> Callable[[gr.Request], str]:
    """A ``.failure`` handler: the session's last error as Markdown, e.g. ``**Not generated:** why``.

    Args:
        last: where the failed handler remembered its message (``user_errors(..., last=last)``).
        heading: the words before the message.
    """

    def show_failure(request: gr.Request) -> str:
        message = last.pop(request)
        return f"**{heading}:** {message}" if message else f"**{heading}.**"

    return show_failure


def user_errors(what: str, *, last: LastErrors | None = None) -> Callable[[Callable], Callable]:
    """Decorator: EnsembleError -> gr.Error(message); other exceptions -> logged + generic gr.Error.

    Works on plain functions and generators (Gradio streams a generator's yields), keeping the
    signature Gradio inspects (``gr.Progress`` defaults, ``gr.Request`` hints, the API's parameter
    names and docstring).

    Args:
        what: the action, as the generic message names it ("Generating", "Rating", ...).
        last: where to remember the message for the session (the handler must take a ``gr.Request``
            parameter, which the decorator finds among its arguments), for :func:`make_show_failure`.

    Returns:
        The decorator.
    """

    def shown(exc: Exception, args: tuple, kwargs: dict) -> gr.Error:
        """What the user sees for an exception other than a gr.Error (remembered when asked)."""
        if isinstance(exc, EnsembleError):
            error = gr.Error(user_message(exc), print_exception=False)
        else:
            error = _internal(what, exc)
        if last is not None:
            request = next((a for a in (*args, *kwargs.values()) if isinstance(a, gr.Request)), None)
            last.remember(request, error.message)
        return error

    def decorate(fn: Callable) -> Callable:
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except gr.Error:
                    raise
                except Exception as exc:
                    raise shown(exc, args, kwargs) from None
            return gen

        @functools.wraps(fn)
        def plain(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise shown(exc, args, kwargs) from None
        return plain

    return decorate
