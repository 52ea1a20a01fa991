"""What a listener gets from an :class:`~ensemble.extend.Extension`: each candidate's mix at the user's
own sample rate and channel count (:func:`native_mix`), and the folder the CLI writes
(:func:`write_extension`).

**The native mix.** The band is rendered at 16 kHz mono, but the user's recording is never
downgraded: the input part of every output is the recording as uploaded (every channel, its own
rate), times the leader's mix gain, crossfaded -- equal power, over the same duration and at the same
time as the 16 kHz crossfade -- into the rendered continuation upsampled to that rate (the same on
every channel); the band (the sum of the non-leader stems) is upsampled and added to every channel,
and the sum goes through the performer's soft limiter. Upsampling is soxr's HQ filter. A clip that
already was 16 kHz mono gets the 16 kHz mix itself; one recorded below 16 kHz (a phone's 8 kHz) is
upsampled to 16 kHz instead, so the band keeps its highs. Without the original recording
(``ext.original is None``) the native mix is the 16 kHz mono mix.

**The folder** (``write_extension``), written into a temporary folder renamed into place (all or
nothing)::

    DIR/input.wav                  the recording as uploaded (native rate and channels)
    DIR/rankNN/mix.wav             the native mix (what a listener plays)
    DIR/rankNN/mix_16k.wav         the 16 kHz mono mix, for analysis (= the Performance's mix)
    DIR/rankNN/stems/<Stem>.wav    16 kHz mono stems (after the mix gains, before the limiter)
    DIR/rankNN/perform.json        the performance's description, its files and output format
    DIR/results.json, results.csv  the candidates' scores (``results.json`` also the output format)

Native files are PCM-24 by default when there is an original recording: a 24-bit or float
recording is never cut to 16 bits. Callers that know the source's format pass
``subtype=LoadedAudio.output_subtype`` (PCM-16 for a 16-bit or lossy source, whose detail 16 bits
already hold). Without an original, and for the 16 kHz analysis copies, files are PCM-16.

**Which timbre played** (:func:`timbre_text`): the same words in the CLI's output, the app's round
status and each candidate's card.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soxr

from ensemble.audio import WAV_SUBTYPES, save_wav
from ensemble.dsp import fade_curves, soft_limit
from ensemble.errors import EnsembleError
from ensemble.extend import Extension
from ensemble.perform import Performance, PerformConfig
from ensemble.timbre import TimbreChoice

__all__ = ["write_extension", "native_mix", "native_format", "leader_gain", "timbre_text", "RESULT_COLUMNS"]
RESULT_COLUMNS = ["rank", "db_chunk_idx", "track", "start_seconds", "composite", "relevance",
                  "coherence", "lookback", "transpose", "seam_pitch_jump_cents",
                  "seam_loudness_jump_db", "fallback", "weights"]
_LEADER = "Leader"


_CHOSEN_BY = {"auto": "inferred from your clip", "user": "your choice", "default": "the default"}


def timbre_text(choice: TimbreChoice | None, *, notes: Sequence[str] = ()) -> str:
    """Which timbre rendered the continuations and how it was chosen, in plain words.

    Args:
        choice: ``Extension.timbre`` (None: the spliced database audio, which no timbre renders).
        notes: the notes already shown beside this text (``Extension.notes``); the choice's note is
            not repeated when it is among them.

    Returns:
        e.g. ``"violin (inferred from your clip)"``, ``"guitar (your choice)"`` or
        ``"guitar (the default: no timbre decoder is installed: BabyBand's guitar plays)"``
        (``"guitar (the default, see the note)"`` when that note is in ``notes``).
    """
    if choice is None:
        return "none (the database's own audio, spliced)"
    how = _CHOSEN_BY.get(choice.chosen_by, choice.chosen_by)
    if not choice.note:
        return f"{choice.name} ({how})"
    if choice.note in notes:
        return f"{choice.name} ({how}, see the note)"
    return f"{choice.name} ({how}: {choice.note})"


def native_format(ext: Extension) -> tuple[int, int]:
    """(sample rate in Hz, channels) of :func:`native_mix`'s output for ``ext``: the original's rate
    (at least the analysis rate, 16 kHz) and channel count.

    Raises:
        EnsembleError: ``ext.original`` is not [n_samples, channels] or its rate is missing.
    """
    if ext.original is None:
        return ext.sample_rate, 1
    orig = ext.original
    if orig.ndim != 2 or orig.shape[0] == 0 or not 1 <= orig.shape[1] <= 32:
        raise EnsembleError(f"Extension.original has shape {orig.shape}; allowed: [n_samples, channels] "
                            "with 1 to 32 channels (load_audio(..., keep_original=True).original)")
    if not isinstance(ext.original_rate, (int, np.integer)) or ext.original_rate <= 0:
        raise EnsembleError(f"Extension.original_rate is {ext.original_rate!r}; allowed: the original's "
                            "sample rate in Hz (a positive whole number)")
    return max(int(ext.original_rate), ext.sample_rate), int(orig.shape[1])


def leader_gain(perf: Performance, input_audio: np.ndarray, n_before: int) -> float:
    """The linear gain the leader has in ``perf.stems["Leader"]`` (mix gain x bus gain).

    ``perf.info["leader_gain"]`` when the performance records it; otherwise recovered from the stem,
    which before the crossfade is exactly that gain times the 16 kHz input (least squares over the
    first ``n_before`` samples: exact up to float rounding, unlike the dB values ``perf.info``
    rounds to 0.01 dB).

    Raises:
        EnsembleError: the performance has no Leader stem.
    """
    if "leader_gain" in perf.info:
        return float(perf.info["leader_gain"])
    if _LEADER not in perf.stems:
        raise EnsembleError(f"the performance has no {_LEADER} stem (stems: {sorted(perf.stems)})")
    x = np.asarray(input_audio[:n_before], np.float64)
    y = np.asarray(perf.stems[_LEADER][:n_before], np.float64)
    power = float(np.dot(x, x))
    return float(np.dot(x, y) / power) if power > 0 else 1.0


def _limiter(info: dict) -> tuple[float, float]:
    """(threshold, ceiling) dBFS of the limiter the performance used (``info["config"]``)."""
    # a stitched performance (input + continuation) keeps each part's info, with the same config
    config = info.get("config") or info.get("input_part", {}).get("config") or {}
    default = PerformConfig()
    return (float(config.get("limiter_threshold_db", default.limiter_threshold_db)),
            float(config.get("limiter_ceiling_db", default.limiter_ceiling_db)))


def _is_16k_mono_input(ext: Extension) -> bool:
    """True when the original is the 16 kHz mono input itself (nothing to restore)."""
    orig = ext.original
    return (ext.original_rate == ext.sample_rate and orig.shape == (len(ext.input_audio), 1)
            and np.array_equal(orig[:, 0], ext.input_audio))


def native_mix(ext: Extension, i: int) -> np.ndarray:
    """The i-th candidate's mix at the user's own rate and channel count (see the module docstring).

    Args:
        ext: the extension; ``ext.original`` / ``ext.original_rate`` the recording as uploaded.
        i: the candidate's index in ``ext.candidates`` (0 = best).

    Returns:
        [N, channels] float32 at ``native_format(ext)[0]`` Hz, limited like the 16 kHz mix (peak below
        the limiter's ceiling); ``N = round(len(16 kHz mix) * rate / 16000)``.

    Raises:
        EnsembleError: ``i`` out of range, a malformed original, or no Leader stem.
    """
    if not 0 <= i < len(ext.performances):
        raise EnsembleError(f"candidate index {i}; allowed: 0..{len(ext.performances) - 1}")
    perf = ext.performances[i]
    rate, channels = native_format(ext)
    if ext.original is None or _is_16k_mono_input(ext):
        return perf.mix[:, None].astype(np.float32, copy=False)
    sr, xf, n_in = ext.sample_rate, ext.crossfade, len(ext.input_audio)
    start16 = n_in - xf  # the continuation's first sample (the crossfade's start) at 16 kHz
    gain = leader_gain(perf, ext.input_audio, start16)
    # what the band and the continuation add, at 16 kHz: every stem but the input's leader, which
    # comes back from the original recording instead
    added = np.zeros(len(perf.mix), np.float32)
    for name, stem in perf.stems.items():
        if name != _LEADER:
            added += stem
    lead = perf.stems[_LEADER]
    fade_out16, _ = fade_curves(xf, "equal_power")
    added[start16:] += lead[start16:]
    added[start16:n_in] -= np.float32(gain) * ext.input_audio[start16:n_in] * fade_out16
    up = soxr.resample(added, sr, rate, quality="HQ")  # [N]

    start = int(round(start16 * rate / sr))
    n_fade = max(1, int(round(xf * rate / sr)))
    fade_out, _ = fade_curves(n_fade, "equal_power")
    orig = ext.original
    if ext.original_rate < rate:  # recorded below 16 kHz: brought up to the band's rate
        orig = soxr.resample(orig, ext.original_rate, rate, quality="HQ")
    keep = orig[:start + n_fade] * np.float32(gain)  # [start + n_fade, channels]
    if len(keep) < start + n_fade:  # resampling rounding: the 16 kHz input may be a sample longer
        keep = np.pad(keep, ((0, start + n_fade - len(keep)), (0, 0)))
    keep[start:] *= fade_out[:, None]
    out = np.repeat(up[:, None], channels, axis=1)  # [N, channels]
    n = min(len(out), len(keep))
    out[:n] += keep[:n]
    threshold, ceiling = _limiter(perf.info)
    # the limiter is the identity below its threshold: run it on the samples above only (the same
    # result, a fraction of the work on a long multichannel mix)
    over = np.abs(out) > np.float32(10.0 ** (threshold / 20.0))
    if over.any():
        out[over] = soft_limit(out[over], threshold_db=threshold, ceiling_db=ceiling)
    return out


def _results_csv(ext: Extension) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RESULT_COLUMNS)
    for c in ext.candidates:
        d = c.to_dict()
        w.writerow([d["rank"], d["chunk"], d["track"], d["start_seconds"], d["composite"], d["relevance"],
                    d["coherence"], d["lookback"], d["transpose"], d["seam_pitch_jump_cents"],
                    d["seam_loudness_jump_db"], d["fallback"], d["weights"]])
    return buf.getvalue()


def _write_candidate(ext: Extension, i: int, folder: Path, subtype: str) -> None:
    """``folder/{mix.wav, mix_16k.wav, stems/*.wav, perform.json}`` of the i-th candidate."""
    perf = ext.performances[i]
    rate, channels = native_format(ext)
    save_wav(folder / "mix.wav", native_mix(ext, i), rate, subtype=subtype)
    save_wav(folder / "mix_16k.wav", perf.mix, perf.sample_rate)
    for name, audio in perf.stems.items():
        save_wav(folder / "stems" / f"{name}.wav", audio, perf.sample_rate)
    info = {**perf.info,
            "files": {"mix": "mix.wav", "mix_16k": "mix_16k.wav",
                      "stems": {s: f"stems/{s}.wav" for s in perf.stems}},
            "output": {"sample_rate": rate, "channels": channels, "subtype": subtype,
                       "analysis_sample_rate": perf.sample_rate}}
    (folder / "perform.json").write_text(json.dumps(info, indent=1) + "\n")


def write_extension(ext: Extension, out_dir: str | os.PathLike, *, subtype: str | None = None) -> Path:
    """Write every candidate and the result tables (layout in the module docstring); all or nothing.

    Args:
        ext: from :func:`ensemble.extend.extend`.
        out_dir: a new (or empty) folder.
        subtype: WAV subtype of the native files (``input.wav``, ``rankNN/mix.wav``): ``"PCM_16"``,
            ``"PCM_24"`` or ``"FLOAT"``, e.g. ``LoadedAudio.output_subtype``. Default: ``"PCM_24"``
            with an original recording, ``"PCM_16"`` without (the 16 kHz mix as rendered).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        EnsembleError: ``out_dir`` exists and is not empty; an unknown ``subtype``; a malformed
            ``ext.original``. Nothing is written.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise EnsembleError(f"output folder {str(out)!r} exists and is not empty; choose a new one")
    if subtype is None:
        subtype = "PCM_16" if ext.original is None else "PCM_24"
    if subtype not in WAV_SUBTYPES:
        raise EnsembleError(f"subtype {subtype!r} is not a WAV subtype written here; allowed: "
                            f"{', '.join(WAV_SUBTYPES)}")
    rate, channels = native_format(ext)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for i, c in enumerate(ext.candidates):
            _write_candidate(ext, i, tmp / f"rank{c.rank:02d}", subtype)
        original = ext.input_audio if ext.original is None else ext.original
        save_wav(tmp / "input.wav", original, rate, subtype=subtype)
        results = ext.results()
        results["output"] = {"sample_rate": rate, "channels": channels, "subtype": subtype,
                             "analysis_sample_rate": ext.sample_rate}
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (tmp / "results.csv").write_text(_results_csv(ext))
        tmp.chmod(0o755)  # mkdtemp makes it private; it becomes out_dir itself
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
