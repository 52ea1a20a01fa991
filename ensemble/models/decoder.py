"""Instrument decoder: f0 + loudness -> DDSP controls -> audio, one model per instrument.

Architecture (DDSP "RNN-FC" decoder, sized for a 2-core CPU)::

    [f0 (normalised MIDI), loudness (normalised)]  [B, T, 2]
      -> MLP (2 x Linear + LayerNorm + LeakyReLU)   [B, T, H]
      -> GRU, 3 layers                              [B, T, H]
      -> LayerNorm, concat inputs, MLP              [B, T, H]
      -> heads: amplitude [B,T,1], harmonic distribution [B,T,K], noise magnitudes [B,T,M]
      -> HarmonicSynth / FilteredNoiseSynth ``get_controls`` (exp-sigmoid, Nyquist mask,
         normalisation) and ``get_signal``   -> audio [B, N]

Unvoiced frames (f0 = 0 or NaN) are **held**: each takes the f0 of the nearest voiced frame before it
(or after it, at the start), for the network input and for the synth. A held pitch is what a real
instrument does while a note rings out after note-off; silence comes from the loudness input, which
the network maps to a near-zero amplitude. A clip with no voiced frame at all is rendered at a
nominal 110 Hz with whatever loudness says (usually silence).

``embed(f0, loudness) -> [B, H]``: mean over time of the GRU's LayerNorm'd states, L2-normalised:
a style embedding of a window used by the RAG for relevance.
"""

from __future__ import annotations

import copy
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ensemble import dsp
from ensemble.config import config_from_dict, config_to_json
from ensemble.errors import EnsembleError
from ensemble.music import hz_to_midi

__all__ = [
    "GRU_WEIGHTS",
    "enable_fast_cpu_inference",
    "for_rendering",
    "parallel_controls",
    "parallel_render",
    "DecoderConfig",
    "InstrumentDecoder",
    "make_debug_decoder",
    "normalize_f0",
    "normalize_loudness",
    "denormalize_loudness",
    "hold_unvoiced",
]

LOUDNESS_FLOOR_DB = -80.0  # loudness below this is silence for the models
GRU_WEIGHTS = ("float32", "float16")  # how a rendering copy stores its GRU's weights (for_rendering)


def normalize_loudness(loudness_db: torch.Tensor | np.ndarray, floor_db: float = LOUDNESS_FLOOR_DB):
    """A-weighted loudness in dB -> [0, 1]: 0 at ``floor_db`` and below, 1 at 0 dB."""
    x = (loudness_db - floor_db) / (-floor_db)
    return x.clamp(0.0, 1.0) if isinstance(x, torch.Tensor) else np.clip(x, 0.0, 1.0)


def denormalize_loudness(x: torch.Tensor | np.ndarray, floor_db: float = LOUDNESS_FLOOR_DB):
    """Inverse of :func:`normalize_loudness` (for values in [0, 1])."""
    return x * (-floor_db) + floor_db


def normalize_f0(f0_hz: torch.Tensor) -> torch.Tensor:
    """Hz -> MIDI note number / 127 (so 0..1 spans the MIDI range); f0 must be > 0."""
    midi = hz_to_midi(f0_hz.clamp_min(1e-3))
    return (midi / 127.0).clamp(0.0, 1.0)


def hold_unvoiced(f0_hz: torch.Tensor, default_hz: float = 110.0) -> torch.Tensor:
    """Replace unvoiced frames (<= 0 or NaN) by the previous voiced f0 (the next one at the start).

    Args:
        f0_hz: [B, T, 1] Hz.

    Returns:
        [B, T, 1] Hz, all > 0.
    """
    f0 = torch.nan_to_num(f0_hz.detach(), nan=0.0)[..., 0]  # [B, T]
    B, T = f0.shape
    voiced = f0 > 0
    idx = torch.where(voiced, torch.arange(T, device=f0.device).expand(B, T), -1)
    last = torch.cummax(idx, dim=1).values  # index of the last voiced frame so far, -1 if none
    first = torch.argmax(voiced.to(torch.int64), dim=1, keepdim=True)  # first voiced frame
    src = torch.where(last >= 0, last, first.expand(B, T))
    held = torch.gather(f0, 1, src)
    held = torch.where(held > 0, held, torch.full_like(held, default_hz))
    return held.unsqueeze(-1).to(f0_hz.dtype)


@dataclass(frozen=True)
class DecoderConfig:
    """Sizes and synth settings of an :class:`InstrumentDecoder`.

    Attributes:
        instrument: the instrument this decoder plays (e.g. "Guitar").
        sample_rate, hop_length: the project's frame grid (16 kHz, 100 frames/s).
        hidden: width of the MLPs and GRU (256: ~3x cheaper than DDSP's 512 on CPU).
        gru_layers: GRU depth (3).
        n_harmonics: K harmonics (100).
        n_noise_bands: M noise magnitudes, 0..Nyquist (65).
        timbres: names of the timbres a conditioned decoder plays (empty: one timbre). A conditioned
            decoder learns one ``timbre_dim`` vector per name (``nn.Embedding``), appended to the
            inputs of both MLPs; every call names the timbre (``timbre=`` index or [B] indices).
        timbre_dim: size of a timbre vector.
    """

    instrument: str = "Guitar"
    sample_rate: int = 16000
    hop_length: int = 160
    hidden: int = 256
    gru_layers: int = 3
    n_harmonics: int = 100
    n_noise_bands: int = 65
    timbres: tuple[str, ...] = ()
    timbre_dim: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "timbres", tuple(str(t) for t in self.timbres))
        if len(set(self.timbres)) != len(self.timbres):
            raise EnsembleError(f"timbres {self.timbres} repeat a name; allowed: distinct names")
        if self.timbre_dim < 1:
            raise EnsembleError(f"timbre_dim {self.timbre_dim}; allowed: >= 1")

    def to_json(self) -> str:
        return config_to_json(self)

    @classmethod
    def from_dict(cls, d: dict) -> DecoderConfig:
        return config_from_dict(cls, d)


def _mlp(n_in: int, n_hidden: int, n_layers: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers += [nn.Linear(n_in if i == 0 else n_hidden, n_hidden), nn.LayerNorm(n_hidden),
                   nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


class InstrumentDecoder(nn.Module):
    """MLP -> 3-layer GRU -> LayerNorm -> heads -> DDSP synth. See the module docstring."""

    def __init__(self, config: DecoderConfig = DecoderConfig()):
        super().__init__()
        self.config = config
        H = config.hidden
        E = config.timbre_dim if config.timbres else 0
        self.timbre_embedding = nn.Embedding(len(config.timbres), E) if config.timbres else None
        self.in_mlp = _mlp(2 + E, H)
        self.gru = nn.GRU(H, H, num_layers=config.gru_layers, batch_first=True)
        self.norm = nn.LayerNorm(H)
        self.out_mlp = _mlp(H + 2 + E, H)
        self.amplitude_head = nn.Linear(H, 1)
        self.harmonic_head = nn.Linear(H, config.n_harmonics)
        self.noise_head = nn.Linear(H, config.n_noise_bands)
        self.harmonic_synth = dsp.HarmonicSynth(config.sample_rate, config.hop_length,
                                                config.n_harmonics)
        self.noise_synth = dsp.FilteredNoiseSynth(config.hop_length, config.n_noise_bands)

    @staticmethod
    def _check(f0_hz: torch.Tensor, loudness_db: torch.Tensor) -> None:
        if f0_hz.ndim != 3 or f0_hz.shape[-1] != 1:
            raise EnsembleError(f"f0_hz must be [B, T, 1] Hz, got shape {tuple(f0_hz.shape)}")
        if loudness_db.shape != f0_hz.shape:
            raise EnsembleError(
                f"loudness_db {tuple(loudness_db.shape)} must match f0_hz {tuple(f0_hz.shape)}")
        if f0_hz.shape[1] < 1:
            raise EnsembleError("need at least one frame")

    def timbre_index(self, timbre: int | str | torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """[B] long indices of ``timbre`` (an index, a name or [B] indices; None for a decoder of one
        timbre).

        Raises:
            EnsembleError: a conditioned decoder called without a timbre, an unknown name or index,
                or a timbre given to a decoder of one timbre.
        """
        names = self.config.timbres
        if not names:
            if timbre is not None:
                raise EnsembleError(f"timbre {timbre!r}: the {self.config.instrument} decoder plays one "
                                    "timbre; allowed: None")
            return None
        if timbre is None:
            raise EnsembleError(f"the {self.config.instrument} decoder needs a timbre; allowed: "
                                f"{', '.join(names)} (or their indices 0..{len(names) - 1})")
        if isinstance(timbre, str):
            if timbre not in names:
                raise EnsembleError(f"timbre {timbre!r}; allowed: {', '.join(names)}")
            timbre = names.index(timbre)
        idx = torch.as_tensor(timbre, dtype=torch.long).reshape(-1)
        if idx.numel() == 1:
            idx = idx.expand(batch)
        if idx.shape != (batch,) or bool(((idx < 0) | (idx >= len(names))).any()):
            raise EnsembleError(f"timbre {timbre!r}; allowed: one index in 0..{len(names) - 1} or {batch} "
                                "of them, or a name")
        return idx

    def _inputs(self, f0_hz: torch.Tensor, loudness_db: torch.Tensor, timbre=None):
        self._check(f0_hz, loudness_db)
        idx = self.timbre_index(timbre, f0_hz.shape[0])
        f0_held = hold_unvoiced(f0_hz)
        x = torch.cat([normalize_f0(f0_held), normalize_loudness(torch.nan_to_num(
            loudness_db, nan=LOUDNESS_FLOOR_DB))], dim=-1)  # [B, T, 2]
        if idx is not None:
            z = self.timbre_embedding(idx)[:, None, :].expand(-1, x.shape[1], -1)
            x = torch.cat([x, z.to(x.dtype)], dim=-1)  # [B, T, 2 + E]
        return f0_held, x

    def hidden_states(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, 2] normalised inputs -> [B, T, H] LayerNorm'd GRU states."""
        h, _ = self.gru(self.in_mlp(x))
        return self.norm(h)

    def gru_states(self, f0_hz: torch.Tensor, loudness_db: torch.Tensor, *,
                   block_frames: int = 6000) -> torch.Tensor:
        """LayerNorm'd GRU states of a signal of any length: what the RAG database embeds.

        The same inputs as :meth:`controls` (unvoiced f0 held, normalised); the GRU runs over blocks
        of ``block_frames`` carrying its state, so a long track needs memory for one block only.

        Args:
            f0_hz: [B, T, 1] Hz (<= 0 or NaN = unvoiced).
            loudness_db: [B, T, 1] dB (A-weighted).
            block_frames: frames per GRU call (60 s at 100 frames/s).

        Returns:
            [B, T, H] states (call under ``torch.inference_mode()`` when no gradient is needed).
        """
        if block_frames < 1:
            raise EnsembleError(f"block_frames must be >= 1, got {block_frames}")
        _, x = self._inputs(f0_hz, loudness_db)  # [B, T, 2]
        h, out = None, []
        for s in range(0, x.shape[1], block_frames):
            y, h = self.gru(self.in_mlp(x[:, s:s + block_frames]), h)
            out.append(self.norm(y))
        return torch.cat(out, dim=1)

    def controls(self, f0_hz: torch.Tensor, loudness_db: torch.Tensor, timbre=None) -> dict[str, torch.Tensor]:
        """Synth controls for f0 [B, T, 1] Hz and loudness [B, T, 1] dB (A-weighted); ``timbre``: see
        :meth:`timbre_index`."""
        f0_held, x = self._inputs(f0_hz, loudness_db, timbre)
        h = self.out_mlp(torch.cat([self.hidden_states(x), x], dim=-1))  # [B, T, H]
        harmonic = self.harmonic_synth.get_controls(self.amplitude_head(h), self.harmonic_head(h),
                                                    f0_held)
        noise = self.noise_synth.get_controls(self.noise_head(h))
        return {**harmonic, **noise}

    def render(self, controls: dict[str, torch.Tensor], n_samples: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Controls -> audio [B, n_samples] (harmonic + filtered noise)."""
        harmonic = self.harmonic_synth.get_signal(controls, n_samples=n_samples)
        noise = self.noise_synth.get_signal(controls, n_samples=harmonic.shape[-1],
                                            generator=generator)
        return harmonic + noise

    def forward(self, f0_hz: torch.Tensor, loudness_db: torch.Tensor, n_samples: int | None = None,
                generator: torch.Generator | None = None, timbre=None) -> torch.Tensor:
        """f0 [B, T, 1] Hz, loudness [B, T, 1] dB -> audio [B, n_samples] (default T * hop)."""
        return self.render(self.controls(f0_hz, loudness_db, timbre), n_samples, generator)

    def embed(self, f0_hz: torch.Tensor, loudness_db: torch.Tensor) -> torch.Tensor:
        """Style embedding of a window: mean GRU state over time, L2-normalised. -> [B, H]."""
        _, x = self._inputs(f0_hz, loudness_db)
        e = self.hidden_states(x).mean(dim=1)
        return torch.nn.functional.normalize(e, dim=-1)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def enable_fast_cpu_inference() -> None:
    """Flush denormal floats to zero in torch's CPU kernels (process-wide; call it at an entry point).

    Trained GRUs drift into denormal activations on some inputs, and x86 CPUs process denormals
    ~100x slower: measured here, the Keys decoder on 3 x 20 s took 6-14 s with denormals and 0.8 s
    without. Zeroing values below ~1e-38 changes no audible sample.
    """
    torch.set_flush_denormal(True)


def for_rendering(decoder: InstrumentDecoder, gru_weights: str = "float16") -> InstrumentDecoder:
    """A copy of ``decoder`` for rendering at request time (the original is left as it is).

    ``"float16"`` stores the GRU's weights as float16 and runs it as fbgemm's dynamic GRU (products
    still accumulated in float32): the GRU is most of a render, and measured here on 2 cores the
    controls of 10-30 voices x 20 s take 0.48-1.73 s instead of 0.96-2.76 s (1.6-2.0x faster), the
    rendered audio within 90 dB SNR of float32 (``tests/test_decoder.py`` holds it to >= 60 dB).
    ``"float32"`` returns the decoder itself. Embeddings for retrieval keep the float32 GRU (the
    database was built with it).

    Raises:
        EnsembleError: ``gru_weights`` not in :data:`GRU_WEIGHTS`.
    """
    if gru_weights not in GRU_WEIGHTS:
        raise EnsembleError(f"gru_weights {gru_weights!r}; allowed: {', '.join(GRU_WEIGHTS)}")
    if gru_weights == "float32":
        return decoder
    out = copy.deepcopy(decoder).eval()
    with warnings.catch_warnings():
        # torch.ao.quantization warns that it will move to torchao; torch is pinned (requirements.txt)
        warnings.simplefilter("ignore")
        out.gru = torch.ao.quantization.quantize_dynamic(nn.Sequential(out.gru), {nn.GRU},
                                                         dtype=torch.float16)[0]
    return out


def parallel_controls(decoder: InstrumentDecoder, f0_hz: torch.Tensor, loudness_db: torch.Tensor, *,
                      workers: int = 2, timbre=None) -> dict[str, torch.Tensor]:
    """``decoder.controls`` of a batch, its rows split into ``workers`` parts run on as many threads.

    The float16 GRU of :func:`for_rendering` runs each call on one core whatever torch's thread
    count, so one batch leaves the second core idle: measured here, the Keys controls of 30 voices
    x 10.5 s take 0.52 s as two halves on two threads (one torch thread each) against 0.68-0.89 s
    as one batch. Rows are independent, so the result equals one call's (up to float rounding).
    Each worker runs in inference mode with denormals flushed (both are per-thread settings).

    Args:
        f0_hz, loudness_db: [B, T, 1] as :meth:`InstrumentDecoder.controls`.
        workers: threads (1: one plain call on this thread).
        timbre: as :meth:`InstrumentDecoder.controls`.
    """
    parts = max(1, min(int(workers), f0_hz.shape[0]))
    idx = decoder.timbre_index(timbre, f0_hz.shape[0])
    if parts == 1:
        return decoder.controls(f0_hz, loudness_db, idx)
    bounds = np.linspace(0, f0_hz.shape[0], parts + 1).round().astype(int)

    def run(i: int) -> dict[str, torch.Tensor]:
        enable_fast_cpu_inference()
        torch.set_num_threads(1)  # this thread's own setting (OpenMP): the other part has the other core
        with torch.inference_mode():
            sl = slice(int(bounds[i]), int(bounds[i + 1]))
            return decoder.controls(f0_hz[sl], loudness_db[sl], None if idx is None else idx[sl])

    with ThreadPoolExecutor(max_workers=parts, thread_name_prefix="decoder") as pool:
        outs = list(pool.map(run, range(parts)))
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


def parallel_render(decoder: InstrumentDecoder, controls: dict[str, torch.Tensor], *, n_samples: int,
                    seed: int, workers: int = 2) -> torch.Tensor:
    """``decoder.render`` of a batch, its rows split into ``workers`` parts on as many threads.

    The synth runs each call on one core (torch's intra-op threads are 1 in the server's request
    threads), so a batch of short rows leaves the second core idle. Part ``i``'s noise comes from
    its own generator seeded ``(seed, i)``: the result depends on ``workers`` in the noise only.
    -> [B, n_samples].
    """
    B = next(iter(controls.values())).shape[0]
    parts = max(1, min(int(workers), B))
    bounds = np.linspace(0, B, parts + 1).round().astype(int)

    def run(i: int) -> torch.Tensor:
        enable_fast_cpu_inference()
        torch.set_num_threads(1)
        with torch.inference_mode():
            sl = slice(int(bounds[i]), int(bounds[i + 1]))
            gen = torch.Generator().manual_seed(int(seed) * 1000 + i)
            return decoder.render({k: v[sl] for k, v in controls.items()}, n_samples=n_samples, generator=gen)

    if parts == 1:
        return run(0)
    with ThreadPoolExecutor(max_workers=parts, thread_name_prefix="synth") as pool:
        return torch.cat(list(pool.map(run, range(parts))))


def make_debug_decoder(instrument: str = "Guitar") -> InstrumentDecoder:
    """A tiny decoder for fast tests (hidden 16, 1 GRU layer, 8 harmonics, 9 noise bands)."""
    torch.manual_seed(0)
    return InstrumentDecoder(DecoderConfig(instrument=instrument, hidden=16, gru_layers=1,
                                           n_harmonics=8, n_noise_bands=9))
