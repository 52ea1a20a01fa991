"""What the user sees when a handler fails: library errors in their own words, the rest as a reference.

:class:`ensemble.EnsembleError` (a bad upload, a bad setting, an invalid ranking) becomes a
``gr.Error`` carrying its message, HTML-escaped. Anything else is a bug or a server problem: it is
logged with its traceback under a short reference, and the user gets a generic message naming the
reference, never the traceback.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import time
from collections.abc import Callable

import gradio as gr

from ensemble.errors import EnsembleError

__all__ = ["user_errors", "user_message"]

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


def user_errors(what: str) -> Callable[[Callable], Callable]:
    """Decorator: EnsembleError -> gr.Error(message); other exceptions -> logged + generic gr.Error.

    Works on plain functions and generators (Gradio streams a generator's yields), keeping the
    signature Gradio inspects (``gr.Progress`` defaults, ``gr.Request`` hints, the API's parameter
    names and docstring).

    Args:
        what: the action, as the generic message names it ("Generating", "Rating", ...).

    Returns:
        The decorator.
    """

    def shown(exc: Exception) -> gr.Error:
        """What the user sees for an exception other than a gr.Error."""
        if isinstance(exc, EnsembleError):
            return gr.Error(user_message(exc), print_exception=False)
        return _internal(what, exc)

    def decorate(fn: Callable) -> Callable:
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except gr.Error:
                    raise
                except Exception as exc:
                    raise shown(exc) from None
            return gen

        @functools.wraps(fn)
        def plain(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise shown(exc) from None
        return plain

    return decorate
