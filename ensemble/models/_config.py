"""Shared (de)serialisation of the frozen model configs saved beside every checkpoint."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

from ensemble.errors import EnsembleError


def config_to_json(config: Any) -> str:
    return json.dumps(asdict(config), sort_keys=True)


def config_from_dict(cls: type, d: dict) -> Any:
    """Build ``cls`` from a JSON dict, refusing unknown keys; JSON lists become tuples."""
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise EnsembleError(f"unknown {cls.__name__} keys {sorted(unknown)}; allowed: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
