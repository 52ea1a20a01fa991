"""The user's own sound: which of the leader decoder's timbres continues the upload.

The leader decoder that renders continuations (``checkpoints/decoder_Leader.pt``) is one network
conditioned on a learned vector per timbre (bowed strings, flute, clarinet, trumpet, nylon and steel
guitar, piano, organ, voice; :mod:`ensemble.jobs.timbres`). At request time
:func:`choose_timbre` re-synthesises the input's last ``select_seconds`` from its own controls (f0 and
loudness as analysed) in **every** timbre, in one batch, and keeps the one whose rendering is nearest
the user's audio by multi-resolution STFT distance (DDSP's spectral loss, each rendering first brought
to the passage's RMS so that the level does not decide). What colour is left (the room, the
microphone, a program the decoder never learned) is matched afterwards by :mod:`ensemble.colour`.

The decoder learned every timbre from renderings at one level (``TimbreConfig.render_level_dbfs``), and
its loudness input is absolute: a violin recorded 9 dB quieter would otherwise be heard, and played, as
a softer, darker instrument (the clarinet, measured on the held-out violin at -28.7 dBFS). So the
decoder always receives the controls as if the clip had been recorded at that level
(``TimbreChoice.level_offset_db``); the rendering is brought back to the user's level afterwards.

A user may name the timbre instead (``timbre="violin"``); ``"guitar"`` is BabyBand's guitar decoder,
the sound every continuation had before (kept for comparison). The choice and every timbre's distance
go into ``results.json``, ``perform.json``, the candidate cards and the ratings log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ensemble.errors import EnsembleError
from ensemble.models.decoder import LOUDNESS_FLOOR_DB, InstrumentDecoder, parallel_controls
from ensemble.models.losses import multi_resolution_stft_loss

__all__ = ["AUTO", "GUITAR", "TimbreConfig", "TimbreChoice", "timbre_distances", "choose_timbre",
           "check_timbre", "level_offset_db"]

AUTO = "auto"      # infer the timbre from the upload
GUITAR = "guitar"  # BabyBand's guitar decoder (the previous sound)


@dataclass(frozen=True)
class TimbreConfig:
    """How the timbre is inferred and how the switch into the rendering is hidden.

    Attributes:
        render_level_dbfs: the RMS level (dBFS) the timbre decoder's training renderings were made at
            (:mod:`ensemble.jobs.timbres` renders at this level, +-2 dB): the input's controls are
            offset to it before the decoder sees them.
        select_seconds: the input's last seconds re-synthesised in every timbre (or all of it).
        min_voiced_seconds: fewer voiced seconds in that passage -> no inference (the default timbre).
        default: the timbre used when it cannot be inferred (an unpitched or very short input).
        preroll_seconds: the user's own last controls rendered before each continuation (the
            decoder's state is then the user's playing at the join, not a cold start).
        fft_sizes: MR-STFT resolutions of the distance.
    """

    render_level_dbfs: float = -20.0
    select_seconds: float = 6.0
    min_voiced_seconds: float = 1.0
    default: str = "nylon guitar"
    preroll_seconds: float = 0.5
    fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128)

    def __post_init__(self) -> None:
        if not 1.0 <= self.select_seconds <= 60.0:
            raise EnsembleError(f"select_seconds {self.select_seconds:g}; allowed: 1..60 s")
        if not 0.0 <= self.preroll_seconds <= 5.0:
            raise EnsembleError(f"preroll_seconds {self.preroll_seconds:g}; allowed: 0..5 s")


@dataclass(frozen=True)
class TimbreChoice:
    """The timbre that renders a request's continuations.

    Attributes:
        name: a timbre of the leader decoder, or :data:`GUITAR`.
        index: its index in the leader decoder's timbres (None for :data:`GUITAR`).
        chosen_by: "auto" (inferred from the upload), "user" (named in the request) or "default"
            (could not be inferred: ``note`` says why).
        distances: per timbre, the MR-STFT distance of its re-synthesis to the user's passage (auto).
        note: plain words for the CLI and the app.
        level_offset_db: added to every loudness curve this timbre renders (the input as if recorded
            at ``TimbreConfig.render_level_dbfs``; 0 for :data:`GUITAR`).
    """

    name: str
    index: int | None
    chosen_by: str
    distances: dict[str, float] = field(default_factory=dict)
    note: str = ""
    level_offset_db: float = 0.0

    def summary(self) -> dict:
        return {"name": self.name, "chosen_by": self.chosen_by,
                "distances": {k: round(v, 4) for k, v in self.distances.items()}, "note": self.note,
                "level_offset_db": round(self.level_offset_db, 2)}


def level_offset_db(audio: np.ndarray, config: TimbreConfig = TimbreConfig()) -> float:
    """dB that bring ``audio``'s RMS to ``config.render_level_dbfs`` (0 for a silent clip)."""
    rms = float(np.sqrt(np.mean(np.square(np.asarray(audio, np.float64))))) if len(audio) else 0.0
    return config.render_level_dbfs - 20.0 * math.log10(rms) if rms > 1e-9 else 0.0


def check_timbre(value: object, timbres: tuple[str, ...]) -> str:
    """A request's ``timbre`` -> its canonical name.

    Raises:
        EnsembleError: not :data:`AUTO`, :data:`GUITAR` or one of ``timbres`` (names the allowed).
    """
    allowed = (AUTO, GUITAR, *timbres)
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text not in allowed:
        raise EnsembleError(f"timbre {value!r}; allowed: {', '.join(allowed)}")
    return text


@torch.inference_mode()
def timbre_distances(decoder: InstrumentDecoder, audio: np.ndarray, f0_hz: np.ndarray, loudness_db: np.ndarray,
                     *, hop: int, seed: int = 0, workers: int = 2,
                     fft_sizes: tuple[int, ...] = TimbreConfig.fft_sizes) -> dict[str, float]:
    """Per timbre, the MR-STFT distance between ``audio`` and its re-synthesis in that timbre.

    Args:
        decoder: a conditioned leader decoder.
        audio: [T * hop] the user's passage (16 kHz mono).
        f0_hz, loudness_db: [T] its controls (f0 0 where unvoiced).
        hop: samples per frame.
    """
    names = decoder.config.timbres
    if not names:
        raise EnsembleError("timbre_distances needs a decoder conditioned on timbres")
    n = len(names)
    T = len(f0_hz)
    f0 = torch.from_numpy(np.asarray(f0_hz, np.float32)).reshape(1, T, 1).repeat(n, 1, 1)
    ld = torch.from_numpy(np.asarray(loudness_db, np.float32)).reshape(1, T, 1).repeat(n, 1, 1)
    controls = parallel_controls(decoder, f0, ld, workers=workers, timbre=torch.arange(n))
    out = decoder.render(controls, n_samples=T * hop, generator=torch.Generator().manual_seed(seed))
    target = torch.from_numpy(np.asarray(audio[:T * hop], np.float32))[None]
    target_rms = float(target.pow(2).mean().sqrt())
    dist = {}
    for i, name in enumerate(names):
        y = out[i:i + 1]
        rms = float(y.pow(2).mean().sqrt())
        y = y * (target_rms / rms) if rms > 0 else y
        dist[name] = float(multi_resolution_stft_loss(y, target, fft_sizes=fft_sizes))
    return dist


def choose_timbre(decoder: InstrumentDecoder | None, requested: str, *, audio: np.ndarray, f0_hz: np.ndarray,
                  voiced: np.ndarray, loudness_db: np.ndarray, end_sample: int, hop: int, sample_rate: int,
                  config: TimbreConfig = TimbreConfig(), seed: int = 0, workers: int = 2) -> TimbreChoice:
    """The timbre of one request (see the module docstring).

    Args:
        decoder: the conditioned leader decoder (None: only :data:`GUITAR` is available).
        requested: :data:`AUTO`, :data:`GUITAR` or a timbre name (checked by :func:`check_timbre`).
        audio: the input [n] at ``sample_rate``; f0_hz, voiced, loudness_db: its frames (``hop``
            samples each).
        end_sample: the passage compared ends here (where the continuation starts).
    """
    names = decoder.config.timbres if decoder is not None else ()
    requested = check_timbre(requested, names)
    if requested == GUITAR or decoder is None:
        note = "" if requested == GUITAR else "no timbre decoder is installed: BabyBand's guitar plays"
        return TimbreChoice(GUITAR, None, "user" if requested == GUITAR else "default", note=note)
    offset = level_offset_db(audio[:end_sample], config)
    if requested != AUTO:
        return TimbreChoice(requested, names.index(requested), "user", level_offset_db=offset)
    default = config.default if config.default in names else names[0]
    last = end_sample // hop
    first = max(0, last - int(round(config.select_seconds * sample_rate / hop)))
    sl = slice(first, last)
    voiced_s = float(np.sum(voiced[sl])) * hop / sample_rate
    if last - first < 10 or voiced_s < config.min_voiced_seconds:
        return TimbreChoice(default, names.index(default), "default", level_offset_db=offset,
                            note=f"your clip has {voiced_s:.1f} s of pitched playing before the join (at least "
                                 f"{config.min_voiced_seconds:g} s is needed to hear its timbre): "
                                 f"the {default} plays")
    f0 = np.where(voiced[sl], f0_hz[sl], 0.0)
    loud = np.maximum(loudness_db[sl] + offset, LOUDNESS_FLOOR_DB)
    dist = timbre_distances(decoder, audio[first * hop:last * hop], f0, loud, hop=hop, seed=seed,
                            workers=workers, fft_sizes=config.fft_sizes)
    best = min(dist, key=dist.get)
    if not math.isfinite(dist[best]):
        return TimbreChoice(default, names.index(default), "default", dist, note="the timbre could not be measured",
                            level_offset_db=offset)
    return TimbreChoice(best, names.index(best), "auto", dist, level_offset_db=offset)
