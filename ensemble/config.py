"""The one (de)serialiser of the project's frozen config dataclasses.

Every config (``FeatureConfig``, ``DecoderConfig``, ``ArrangerConfig``, ``RagConfig``,
``PerformConfig``, ``MetricsConfig``, ``EngineConfig``, ...) is saved as JSON next to what it made
(checkpoints, databases, results) and read back through :func:`config_from_dict`, which refuses
unknown keys with a message naming them and the allowed ones (a file written by another version is
never half-understood), turns JSON lists back into tuples and rebuilds nested configs.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from ensemble.errors import EnsembleError

__all__ = ["config_to_dict", "config_to_json", "config_from_dict"]


def config_to_dict(config: Any) -> dict:
    """A config as a JSON-ready dict (nested configs become dicts; tuples stay sequences)."""
    return dataclasses.asdict(config)


def config_to_json(config: Any) -> str:
    """A config as one line of JSON with sorted keys (hashable text: the same config, the same text)."""
    return json.dumps(config_to_dict(config), sort_keys=True)


def config_from_dict(cls: type, d: object, *, what: str | None = None) -> Any:
    """Build the frozen dataclass ``cls`` from a JSON dict.

    Args:
        cls: the config class.
        d: its fields by name; a field whose type is itself a config dataclass may be given as a dict.
        what: how to name the source in messages (default: the class name).

    Raises:
        EnsembleError: ``d`` is not a dict, has keys ``cls`` does not know, or a value the class refuses.
    """
    name = what or cls.__name__
    if not isinstance(d, dict):
        raise EnsembleError(f"{name} must be a JSON object of settings, got {type(d).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise EnsembleError(f"unknown {name} keys {sorted(unknown)}; allowed: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in d.items():
        kind = hints.get(key)
        if isinstance(value, dict) and isinstance(kind, type) and dataclasses.is_dataclass(kind):
            value = config_from_dict(kind, value, what=f"{name}.{key}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a wrong type that the class's own checks did not word
        raise EnsembleError(f"{name}: {exc}") from None
