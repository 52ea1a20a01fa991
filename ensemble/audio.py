"""Audio in and out: every clip enters the project through :func:`load_audio`.

``load_audio`` accepts a file path or the ``(sample_rate, array)`` pair that Gradio hands over and
returns mono float32 at the project rate (16 kHz), or raises :class:`EnsembleError` naming what is
wrong; with ``keep_original=True`` it also keeps the recording as decoded (every channel, its own
rate), so what the user hears back is never downgraded. ``save_wav`` writes WAV at any rate and
channel count as PCM-16 (default), PCM-24 or float, atomically (a temp file renamed into place), so
a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ensemble.errors import EnsembleError
from ensemble.files import atomic_write

__all__ = [
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_MAX_SECONDS",
    "SILENCE_DBFS",
    "LoadedAudio",
    "load_audio",
    "load_audio_info",
    "wav_truncation",
    "is_silent",
    "peak_dbfs",
    "to_float32",
    "save_wav",
    "WAV_SUBTYPES",
]

DEFAULT_SAMPLE_RATE = 16000
DEFAULT_MAX_SECONDS = 600.0
# A clip whose peak stays below this level is treated as silence: -70 dBFS is below the noise floor
# of 16-bit audio played at any sensible level.
SILENCE_DBFS = -70.0
_MIN_RATE, _MAX_RATE = 1000, 768000
_MAX_CHANNELS = 32
# What save_wav writes: 16-bit and 24-bit integer PCM, 32-bit float.
WAV_SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")
# Sources finer than 16-bit PCM: outputs made from them are written as PCM-24 (LoadedAudio.output_subtype).
_FINE_SUBTYPES = frozenset({"PCM_24", "PCM_32", "FLOAT", "DOUBLE"})


@dataclass(frozen=True)
class LoadedAudio:
    """A decoded clip and facts about where it came from.

    Attributes:
        audio: [n_samples] float32 mono in [-1, 1] at ``sample_rate``.
        sample_rate: Hz, the rate ``audio`` is at.
        source_sample_rate: Hz, the rate the input had before resampling.
        source_channels: channel count before the mono downmix.
        silent: True when the peak is below :data:`SILENCE_DBFS`.
        original: [n_src, source_channels] float32 in [-1, 1] at ``source_sample_rate``: the
            recording as decoded, every channel kept (only with ``load_audio(keep_original=True)``,
            else None).
        source_subtype: the source's sample format as libsndfile names it (``"PCM_16"``,
            ``"PCM_24"``, ``"FLOAT"``, ``"VORBIS"``, ...; for an array, from its dtype), or None.
    """

    audio: np.ndarray
    sample_rate: int
    source_sample_rate: int
    source_channels: int
    silent: bool
    original: np.ndarray | None = None
    source_subtype: str | None = None

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate

    @property
    def output_subtype(self) -> str:
        """The WAV subtype for outputs made from this clip: ``"PCM_24"`` when the source is finer
        than 16-bit (24/32-bit PCM or float), else ``"PCM_16"`` (16-bit or coarser PCM, and lossy
        formats, whose decoded detail 16 bits already hold)."""
        return "PCM_24" if self.source_subtype in _FINE_SUBTYPES else "PCM_16"


def peak_dbfs(audio: np.ndarray) -> float:
    """Peak level in dB relative to full scale (-inf for an all-zero signal)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return 20.0 * np.log10(peak) if peak > 0 else -np.inf


def is_silent(audio: np.ndarray, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    """True when the clip's peak is below ``threshold_dbfs``."""
    return peak_dbfs(audio) < threshold_dbfs


def to_float32(array: np.ndarray) -> np.ndarray:
    """Scale integer PCM of any width to float32 in [-1, 1); floats pass through as float32.

    Signed integers are divided by 2**(bits-1); unsigned ones (e.g. 8-bit WAV) are centred first.

    Raises:
        EnsembleError: for bool, complex or non-numeric arrays.
    """
    array = np.asarray(array)
    kind = array.dtype.kind
    if kind == "f":
        return array.astype(np.float32, copy=False)
    if kind == "i":
        scale = float(2 ** (8 * array.dtype.itemsize - 1))
        return (array.astype(np.float64) / scale).astype(np.float32)
    if kind == "u":
        half = float(2 ** (8 * array.dtype.itemsize - 1))
        return ((array.astype(np.float64) - half) / half).astype(np.float32)
    raise EnsembleError(
        f"audio samples have dtype {array.dtype}; allowed: signed/unsigned integers or floats"
    )


def _as_frames(array: np.ndarray, what: str) -> np.ndarray:
    """[n] or [n, channels] (Gradio/soundfile layout) or [channels, n] -> [n, channels] (a view)."""
    if array.ndim == 1:
        return array[:, None]
    if array.ndim == 2:
        if array.shape[1] <= _MAX_CHANNELS and array.shape[0] >= array.shape[1]:
            return array
        if array.shape[0] <= _MAX_CHANNELS:
            return array.T
    raise EnsembleError(
        f"{what} has shape {array.shape}; allowed: [samples] or [samples, channels] "
        f"with at most {_MAX_CHANNELS} channels"
    )


def _check_rate(sample_rate: object, what: str) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise EnsembleError(f"{what} sample rate {sample_rate!r} is not an integer number of Hz")
    if not _MIN_RATE <= int(sample_rate) <= _MAX_RATE:
        raise EnsembleError(
            f"{what} sample rate {sample_rate} Hz is outside the allowed {_MIN_RATE}-{_MAX_RATE} Hz"
        )
    return int(sample_rate)


def load_audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """Header facts of an audio file, or :class:`EnsembleError` if it is missing/empty/not audio."""
    path = Path(path)
    if not path.exists():
        raise EnsembleError(f"audio file {str(path)!r} does not exist")
    if not path.is_file():
        raise EnsembleError(f"{str(path)!r} is not a file")
    if path.stat().st_size == 0:
        raise EnsembleError(f"audio file {str(path)!r} is empty (0 bytes)")
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        # libsndfile's own reason is misleading for junk (random bytes named .mp3 read as "File does
        # not exist or is not a regular file (possibly a pipe?)"): say it in plain words
        raise EnsembleError(
            f"{str(path)!r} is not a readable audio file: its contents are not a WAV, FLAC, OGG or MP3 "
            "recording (damaged, or another kind of file); allowed: WAV, FLAC, OGG, MP3"
        ) from None


def wav_truncation(path: str | os.PathLike) -> tuple[float, float] | None:
    """For a WAV file whose data chunk stops short of what its header declares: ``(declared_s,
    present_s)``, seconds of audio the header promises and the file holds; else None (not a WAV, a
    complete one, or a streamed header whose size is unknown: 0 or 0xFFFFFFFF).

    A truncated upload (an interrupted copy or recording) decodes silently as a shorter clip, since
    libsndfile shortens its frame count to the bytes present; this reads the RIFF chunks itself.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align, rate, offset = 0, 0, 12
            while offset + 8 <= size:
                f.seek(offset)
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, csize = chunk[:4], int.from_bytes(chunk[4:8], "little")
                if cid == b"fmt ":
                    fmt = f.read(16)
                    if len(fmt) < 16:
                        return None
                    rate = int.from_bytes(fmt[4:8], "little")
                    block_align = int.from_bytes(fmt[12:14], "little")
                elif cid == b"data":
                    present = size - offset - 8
                    if csize in (0, 0xFFFFFFFF) or present >= csize or not block_align or not rate:
                        return None
                    return csize / block_align / rate, present / block_align / rate
                offset += 8 + csize + (csize & 1)  # chunks are padded to an even length
    except OSError:
        return None
    return None


def _subtype_of(dtype: np.dtype) -> str | None:
    """The libsndfile subtype an array of ``dtype`` corresponds to (None for a non-numeric dtype)."""
    kind, bits = dtype.kind, 8 * dtype.itemsize
    if kind == "f":
        return "DOUBLE" if bits > 32 else "FLOAT"
    if kind == "u" and bits == 8:
        return "PCM_U8"
    if kind in "iu":
        return "PCM_S8" if bits == 8 else f"PCM_{min(bits, 32)}"
    return None


def _take_pair(source: tuple, max_seconds: float) -> tuple[np.ndarray, int, str]:
    """A Gradio ``(sample_rate, array)`` pair, checked -> (array as given, rate in Hz, its name)."""
    if len(source) != 2:
        raise EnsembleError(
            f"audio tuple has {len(source)} items; allowed: (sample_rate, array)"
        )
    src_rate, array = source
    what = "audio array"
    src_rate = _check_rate(src_rate, what)
    if array is None:
        raise EnsembleError("no audio was given (the array is None)")
    array = np.asarray(array)
    n_frames = array.shape[0] if array.ndim >= 1 else 0
    if array.ndim == 2 and array.shape[0] <= _MAX_CHANNELS < array.shape[1]:
        n_frames = array.shape[1]
    if n_frames / src_rate > max_seconds:
        raise EnsembleError(
            f"{what} is {n_frames / src_rate:.1f} s long; allowed: at most {max_seconds:g} s"
        )
    return array, src_rate, what


def _read_file(path: str | os.PathLike, max_seconds: float) -> tuple[np.ndarray, int, str, str]:
    """Decode an audio file, its length checked from the header first -> ([n, channels] float32,
    rate in Hz, its name, its libsndfile subtype)."""
    what = f"audio file {os.fspath(path)!r}"
    info = load_audio_info(path)
    cut = wav_truncation(path)
    if cut is not None:
        raise EnsembleError(f"{what} is truncated: its header declares {cut[0]:.2f} s of audio but the "
                            f"file holds only {cut[1]:.2f} s; allowed: a complete file (copy, export or "
                            "record it again)")
    src_rate = _check_rate(info.samplerate, what)
    if info.frames / src_rate > max_seconds:
        raise EnsembleError(
            f"{what} is {info.frames / src_rate:.1f} s long; allowed: at most {max_seconds:g} s"
        )
    try:
        array, _ = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise EnsembleError(f"{what} could not be decoded ({exc})") from None
    return array, src_rate, what, str(info.subtype)


def load_audio(
    source: str | os.PathLike | tuple[int, np.ndarray],
    *,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    min_seconds: float = 0.0,
    allow_silent: bool = True,
    keep_original: bool = False,
) -> LoadedAudio:
    """Decode a clip to mono float32 at ``sample_rate`` (and, on request, keep it as recorded).

    Args:
        source: a path to a WAV/FLAC/OGG/MP3 file (whatever libsndfile reads), or a
            ``(sample_rate, array)`` pair as Gradio's Audio component gives it, the array being
            [samples] or [samples, channels], integer PCM of any width or float.
        sample_rate: Hz of the returned audio; the input is resampled with soxr (HQ) if needed.
        max_seconds: longest clip accepted, in seconds (default 10 minutes).
        min_seconds: shortest clip accepted, in seconds.
        allow_silent: when False a clip whose peak is below :data:`SILENCE_DBFS` raises; when True
            it is returned with ``silent=True`` so the caller decides.
        keep_original: also return the recording as decoded, [n_src, channels] float32 at its own
            rate, clipped to [-1, 1], in ``LoadedAudio.original`` (the same checks apply).

    Returns:
        A :class:`LoadedAudio`; ``audio`` is [n_samples] float32, clipped to [-1, 1].

    Raises:
        EnsembleError: missing, empty or non-audio file; a truncated WAV; zero-length audio; NaN or Inf samples;
            shorter than ``min_seconds`` or longer than ``max_seconds``; silence when not allowed;
            an unusable sample rate, dtype or shape.
    """
    _check_rate(sample_rate, "target")
    if not max_seconds > 0:
        raise EnsembleError(f"max_seconds must be > 0, got {max_seconds}")
    if isinstance(source, tuple):
        array, src_rate, what = _take_pair(source, max_seconds)
        subtype = _subtype_of(array.dtype)
    elif isinstance(source, (str, os.PathLike)):
        array, src_rate, what, subtype = _read_file(source, max_seconds)
    else:
        raise EnsembleError(
            f"audio source of type {type(source).__name__} is not supported; "
            "allowed: a file path or a (sample_rate, array) pair"
        )

    if array.size == 0:
        raise EnsembleError(f"{what} contains no samples (zero length)")
    frames = _as_frames(to_float32(array), what)  # [n, channels]
    channels = frames.shape[1]
    audio = frames[:, 0] if channels == 1 else frames.mean(axis=1)
    if not np.all(np.isfinite(audio)):  # a NaN or Inf in any channel reaches the mean
        bad = int(np.count_nonzero(~np.isfinite(audio)))
        raise EnsembleError(f"{what} has {bad} NaN or Inf samples; allowed: finite values only")

    if src_rate != sample_rate:
        audio = soxr.resample(audio, src_rate, sample_rate, quality="HQ").astype(np.float32)
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)

    seconds = len(audio) / sample_rate
    if seconds < min_seconds:
        raise EnsembleError(f"{what} is {seconds:.2f} s long; allowed: at least {min_seconds:g} s")
    silent = is_silent(audio)
    if silent and not allow_silent:
        raise EnsembleError(
            f"{what} is silent (peak {peak_dbfs(audio):.1f} dBFS, below {SILENCE_DBFS:g} dBFS)"
        )
    original = None
    if keep_original:
        original = np.ascontiguousarray(np.clip(frames, -1.0, 1.0), dtype=np.float32)
    return LoadedAudio(
        audio=np.ascontiguousarray(audio),
        sample_rate=sample_rate,
        source_sample_rate=src_rate,
        source_channels=channels,
        silent=silent,
        original=original,
        source_subtype=subtype,
    )


def save_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = DEFAULT_SAMPLE_RATE, *,
             subtype: str = "PCM_16") -> Path:
    """Write [n_samples] or [n_samples, channels] float audio as a WAV file, atomically.

    Samples are clipped to [-1, 1] (integer PCM cannot hold more; float files get the same range so
    every subtype plays alike). The file is written to a temporary name in the same folder and
    renamed into place, so readers never see a partial file.

    Args:
        path: the WAV file; its folder is created, an existing file replaced.
        audio: [n_samples] mono or [n_samples, channels] (at most 32 channels), float or integer PCM.
        sample_rate: Hz, any rate from 1 kHz to 768 kHz.
        subtype: one of :data:`WAV_SUBTYPES`: ``"PCM_16"`` (default), ``"PCM_24"`` or ``"FLOAT"``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        EnsembleError: for NaN/Inf samples, an empty array, more than 32 channels or another shape,
            a bad sample rate or an unknown subtype; nothing is written.
    """
    _check_rate(sample_rate, "output")
    if subtype not in WAV_SUBTYPES:
        raise EnsembleError(f"WAV subtype {subtype!r} is not supported; allowed: {', '.join(WAV_SUBTYPES)}")
    audio = to_float32(np.asarray(audio))
    if audio.size == 0:
        raise EnsembleError(f"refusing to write {os.fspath(path)!r}: the audio has no samples")
    if audio.ndim not in (1, 2) or (audio.ndim == 2 and not 1 <= audio.shape[1] <= _MAX_CHANNELS):
        raise EnsembleError(f"refusing to write {os.fspath(path)!r}: audio of shape {audio.shape}; "
                            f"allowed: [samples] or [samples, channels] with at most {_MAX_CHANNELS} channels")
    if not np.all(np.isfinite(audio)):
        raise EnsembleError(f"refusing to write {os.fspath(path)!r}: the audio has NaN or Inf samples")
    clipped = np.clip(audio, -1.0, 1.0)
    return atomic_write(path, lambda tmp: sf.write(tmp, clipped, sample_rate, subtype=subtype, format="WAV"))
