"""Arranger: a Transformer that reads the leader's features and predicts each follower's loudness.

Inputs per frame (100 frames/s), chosen by ``ArrangerConfig.inputs``:

* ``loudness`` -- leader loudness, normalised to [0, 1] (:func:`normalize_loudness`);
* ``onset``    -- leader onset strength, ``log1p``-compressed;
* ``f0``       -- leader f0 as normalised MIDI (0 where unvoiced);
* ``voiced``   -- 1 where the leader is voiced;
* ``beat``     -- where the frame sits in the leader's beat: sin and cos of 2*pi*k*phase, k = 1..4
  (8 columns), from the beat grid tracked on the leader's onset envelope
  (:func:`ensemble.beats.track_beats`, the grid the performer lays its drums on). Drum and keys
  loudness rise and fall with the beat's subdivisions; from onsets alone the model has to find that
  grid itself (measured: see the model card).

Outputs: one loudness curve per follower (``followers``, default Bass, Drums, Keys) in [0, 1] on the
same scale, i.e. directly usable as the loudness input of that follower's decoder.

The encoder works on frames pooled by ``pool`` (default 4: 25 steps/s), with sinusoidal positions
computed for any length (no position table to overflow). Training uses windows of
``window_seconds``; :meth:`Arranger.predict` runs any length by cutting it into such windows with
``overlap_seconds`` of overlap and crossfading the predictions linearly, so a 10-minute leader is
arranged whole, never truncated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ensemble.beats import beat_phase_features, track_beats
from ensemble.config import config_from_dict, config_to_json
from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig, onset_strength
from ensemble.models.decoder import normalize_f0, normalize_loudness

__all__ = ["ArrangerConfig", "Arranger", "make_debug_arranger", "ARRANGER_INPUTS", "input_columns",
           "arranger_features"]

ARRANGER_INPUTS = ("loudness", "onset", "f0", "voiced", "beat")
INPUT_COLUMNS = {"loudness": 1, "onset": 1, "f0": 1, "voiced": 1, "beat": 8}


def input_columns(inputs: tuple[str, ...]) -> int:
    """Feature columns of a set of arranger inputs (``beat`` has 8)."""
    return sum(INPUT_COLUMNS[i] for i in inputs)


@dataclass(frozen=True)
class ArrangerConfig:
    """Sizes and I/O of the :class:`Arranger`.

    Attributes:
        inputs: leader features used, a subset of ``ARRANGER_INPUTS``.
        followers: names of the predicted curves, in output order.
        d_model, n_heads, n_layers, dropout: Transformer encoder sizes.
        pool: frames averaged into one encoder step (4 at 100 frames/s = 25 steps/s).
        window_seconds, overlap_seconds: chunking used by :meth:`Arranger.predict`.
        frame_rate: frames/s of inputs and outputs.
    """

    inputs: tuple[str, ...] = ("loudness", "onset", "f0", "voiced")
    followers: tuple[str, ...] = ("Bass", "Drums", "Keys")
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    dropout: float = 0.1
    pool: int = 4
    window_seconds: float = 10.0
    overlap_seconds: float = 2.0
    frame_rate: float = 100.0

    def __post_init__(self) -> None:
        bad = [i for i in self.inputs if i not in ARRANGER_INPUTS]
        if bad or not self.inputs:
            raise EnsembleError(f"arranger inputs {list(self.inputs)}: allowed {list(ARRANGER_INPUTS)}")
        if not self.followers:
            raise EnsembleError("arranger needs at least one follower")
        if not 0 <= self.overlap_seconds < self.window_seconds:
            raise EnsembleError(
                f"overlap {self.overlap_seconds} s must be in [0, window {self.window_seconds} s)")

    def to_json(self) -> str:
        return config_to_json(self)

    @classmethod
    def from_dict(cls, d: dict) -> ArrangerConfig:
        return config_from_dict(cls, d)

    @property
    def n_columns(self) -> int:
        return input_columns(self.inputs)

    @property
    def window_frames(self) -> int:
        return int(round(self.window_seconds * self.frame_rate))

    @property
    def overlap_frames(self) -> int:
        return int(round(self.overlap_seconds * self.frame_rate))


def sinusoidal_positions(n: int, d: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[n, d] fixed sinusoidal position codes (any n)."""
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(1e4) / d))
    pe = torch.zeros(n, d, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: d // 2])
    return pe.to(dtype)


class Arranger(nn.Module):
    """Transformer encoder: leader features [B, T, C] -> follower loudness [B, T, F] in [0, 1]."""

    def __init__(self, config: ArrangerConfig = ArrangerConfig()):
        super().__init__()
        self.config = config
        c = config
        self.input_proj = nn.Linear(c.n_columns * c.pool, c.d_model)
        layer = nn.TransformerEncoderLayer(c.d_model, c.n_heads, 4 * c.d_model, c.dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, len(c.followers) * c.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T, C] leader features (C = config.n_columns) -> [B, T, F] in [0, 1]."""
        c = self.config
        if x.ndim != 3 or x.shape[-1] != c.n_columns:
            raise EnsembleError(f"arranger input must be [B, T, {c.n_columns}], got {tuple(x.shape)}")
        B, T, C = x.shape
        pad = (-T) % c.pool
        if pad:
            x = torch.cat([x, x[:, -1:].expand(B, pad, C)], dim=1)
        steps = x.shape[1] // c.pool
        h = self.input_proj(x.reshape(B, steps, c.pool * C))  # [B, S, D]
        h = h + sinusoidal_positions(steps, c.d_model, h.device, h.dtype)
        h = self.norm(self.encoder(h))
        y = torch.sigmoid(self.head(h)).reshape(B, steps * c.pool, len(c.followers))  # [B, T', F]
        return y[:, :T]

    @torch.no_grad()
    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Any-length inference with overlapping windows.

        Args:
            x: [T, C] leader features of one clip.

        Returns:
            [T, F] follower loudness in [0, 1].
        """
        c = self.config
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != c.n_columns or x.shape[0] < 1:
            raise EnsembleError(f"predict needs [T >= 1, {c.n_columns}] features, got {tuple(x.shape)}")
        was_training = self.training
        self.eval()
        T, W, O = x.shape[0], c.window_frames, c.overlap_frames
        if T <= W:
            out = self(x[None])[0].numpy()
        else:
            out = np.zeros((T, len(c.followers)), np.float32)
            weight = np.zeros((T, 1), np.float32)
            step = W - O
            starts = list(range(0, T - W + 1, step))
            if starts[-1] != T - W:
                starts.append(T - W)
            ramp = np.ones((W, 1), np.float32)
            if O > 0:
                ramp[:O, 0] = np.linspace(1.0 / (O + 1), 1.0, O, dtype=np.float32)
                ramp[-O:, 0] = ramp[:O, 0][::-1]
            chunks = torch.stack([x[s:s + W] for s in starts])  # [n, W, C]
            preds = self(chunks).numpy()  # [n, W, F]
            for s, p in zip(starts, preds, strict=True):
                out[s:s + W] += p * ramp
                weight[s:s + W] += ramp
            out /= weight
        self.train(was_training)
        return out

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def make_debug_arranger() -> Arranger:
    """A tiny arranger for fast tests."""
    torch.manual_seed(0)
    return Arranger(ArrangerConfig(d_model=16, n_heads=2, n_layers=1, window_seconds=2.0,
                                   overlap_seconds=0.5))


# ----------------------------------------------------------------------------- input features

def arranger_features(audio: np.ndarray | None, f0_hz: np.ndarray, voiced: np.ndarray,
                      loud_db: np.ndarray, inputs: tuple[str, ...],
                      onset: np.ndarray | None = None, beats_s: np.ndarray | None = None,
                      config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Leader features [T, C] in the order of ``inputs`` (see :mod:`ensemble.models.arranger`).

    ``onset`` is computed from ``audio`` when not given; ``beats_s`` (a grid spanning the clip, e.g.
    the performer's) is tracked on the onset envelope when not given, with the performer's defaults.
    """
    T = len(loud_db)
    if onset is None and any(i in inputs for i in ("onset", "beat")):
        if audio is None:
            raise EnsembleError("onset and beat inputs need the leader audio or its onset envelope")
        onset = onset_strength(audio, config=config)
    cols = []
    for name in inputs:
        if name == "loudness":
            cols.append(normalize_loudness(loud_db)[:, None])
        elif name == "onset":
            cols.append(np.log1p(np.maximum(onset[:T], 0.0))[:, None])
        elif name == "f0":
            f0 = torch.tensor(np.where(voiced, f0_hz, 1.0), dtype=torch.float32)
            cols.append(np.where(voiced, normalize_f0(f0).numpy(), 0.0)[:, None])
        elif name == "voiced":
            cols.append(voiced.astype(np.float32)[:, None])
        elif name == "beat":
            if beats_s is None:
                beats_s = track_beats(onset[:T], frame_rate=config.frame_rate,
                                      duration_s=T / config.frame_rate).times_s
            cols.append(beat_phase_features(beats_s, T, config.frame_rate))
    return np.concatenate(cols, axis=-1).astype(np.float32)
