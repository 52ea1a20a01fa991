"""Checkpoint files: ``NAME.pt`` (state_dict + config + metadata) with ``NAME.json`` beside it.

The ``.pt`` holds only tensors, strings and numbers, so it loads with
``torch.load(weights_only=True)`` (no pickled code runs). The ``.json`` repeats the config and
metadata for people and tools, plus the ``.pt``'s sha256 so a swapped or damaged file is caught.
Both are written to temp names and renamed, so an interrupted save never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ensemble.errors import EnsembleError
from ensemble.files import atomic_write, atomic_write_text, sha256_file
from ensemble.models.arranger import Arranger, ArrangerConfig
from ensemble.models.decoder import DecoderConfig, InstrumentDecoder

__all__ = ["save_checkpoint", "load_checkpoint", "load_decoder", "load_arranger", "decoder_file",
           "ARRANGER_FILE"]

ARRANGER_FILE = "arranger.pt"


def decoder_file(instrument: str) -> str:
    """The file name of an instrument's decoder checkpoint in a checkpoints folder."""
    return f"decoder_{instrument}.pt"


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, kind: str,
                    meta: dict[str, Any]) -> Path:
    """Write ``path`` (.pt) and its ``.json`` sidecar.

    Args:
        model: an :class:`InstrumentDecoder` or :class:`Arranger` (its ``config`` is saved).
        kind: "decoder" or "arranger".
        meta: JSON-serialisable training metadata (data manifest hash, steps, wall time, losses...).
    """
    path = Path(path)
    config = json.loads(model.config.to_json())
    payload = {"kind": kind, "config_json": json.dumps(config, sort_keys=True),
               "meta_json": json.dumps(meta, sort_keys=True),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    sidecar = {"kind": kind, "config": config, "meta": meta, "file": path.name,
               "sha256": sha256_file(path), "bytes": path.stat().st_size,
               "n_parameters": sum(p.numel() for p in model.parameters())}
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return path


def load_checkpoint(path: str | os.PathLike, kind: str) -> tuple[dict, dict, dict]:
    """Read and check a checkpoint -> (config dict, meta dict, state_dict).

    Raises:
        EnsembleError: missing file, wrong kind, sha256 mismatch with the sidecar, or a file that is
            not a checkpoint (truncated, corrupt, or pickled code that ``weights_only`` refuses).
    """
    path = Path(path)
    if not path.is_file():
        raise EnsembleError(f"checkpoint {str(path)!r} does not exist")
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            expected = json.loads(sidecar.read_text()).get("sha256")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise EnsembleError(f"checkpoint sidecar {str(sidecar)!r} is not valid JSON") from None
        if expected and expected != sha256_file(path):
            raise EnsembleError(
                f"checkpoint {str(path)!r} does not match the sha256 in {sidecar.name} "
                "(the file is damaged or was replaced); rebuild it with `python -m ensemble train`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise EnsembleError(f"checkpoint {str(path)!r} cannot be read: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        found = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise EnsembleError(f"checkpoint {str(path)!r} holds {found!r}, expected a {kind!r}")
    try:
        return json.loads(payload["config_json"]), json.loads(payload["meta_json"]), payload["state_dict"]
    except (KeyError, TypeError, json.JSONDecodeError):
        raise EnsembleError(f"checkpoint {str(path)!r} lacks config/meta/state_dict") from None


def _load_state(model: torch.nn.Module, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise EnsembleError(f"checkpoint {str(path)!r} does not fit its config: "
                            f"{str(exc).splitlines()[0]}") from None


def load_decoder(path: str | os.PathLike) -> tuple[InstrumentDecoder, dict]:
    """Load an instrument decoder in eval mode -> (model, meta)."""
    config, meta, state = load_checkpoint(path, "decoder")
    model = InstrumentDecoder(DecoderConfig.from_dict(config))
    _load_state(model, state, Path(path))
    return model.eval(), meta


def load_arranger(path: str | os.PathLike) -> tuple[Arranger, dict]:
    """Load the arranger in eval mode -> (model, meta)."""
    config, meta, state = load_checkpoint(path, "arranger")
    model = Arranger(ArrangerConfig.from_dict(config))
    _load_state(model, state, Path(path))
    return model.eval(), meta
