"""The one exception the library raises for bad input, bad files and bad settings.

Library code raises :class:`EnsembleError` with a message that names the offending value and
what is allowed; only the CLI and the app decide how to show it to a person.
"""

from __future__ import annotations

__all__ = ["EnsembleError"]


class EnsembleError(ValueError):
    """Raised for any input, file or setting the library cannot use.

    It subclasses :class:`ValueError` so callers that already catch ``ValueError`` keep working.
    """
