"""Figures of the analyses in :mod:`ensemble.metrics`: a clip's report card and a comparison of candidates.

* :func:`report_card` -- waveform, melody (f0 on a note axis), RMS dynamics and a score box of one
  clip, with its seam marked when it is a candidate.
* :func:`compare_candidates` -- melody and loudness of 1 to :data:`MAX_CANDIDATES` candidates on one
  time axis, with a zoom around each seam and a legend of the jumps across it.
* :class:`CandidateSheet` -- the same comparison once per candidate (and for all), the input and
  the axes drawn once and shared by every card (what a listening round shows).
* :func:`figure_png` renders a figure to PNG bytes; :func:`write_figure` writes one to a PNG file
  atomically (:func:`ensemble.files.atomic_write`).

Their panel titles, axis labels, notes and legend wording default to the project's
(:data:`REPORT_CARD_TEXT`, :data:`COMPARE_TEXT`); a caller's ``text=`` replaces any of them by key.
Figures use the Agg canvas and no pyplot (see :mod:`ensemble.figures`).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import librosa
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator
from PIL import Image

from ensemble.errors import EnsembleError
from ensemble.files import atomic_write_bytes
from ensemble.metrics import (
    NO_PITCH_TEXT,
    RMS_FLOOR_DB,
    Analysis,
    CandidateAnalysis,
    MetricsConfig,
    Scores,
    SeamMetrics,
    clip_scores,
    dynamics_levels,
)

__all__ = ["CANDIDATE_COLORS", "COMPARE_TEXT", "MAX_CANDIDATES", "REPORT_CARD_TEXT", "report_card",
           "compare_candidates", "CandidateSheet", "figure_png", "write_figure"]

# One colour per candidate: matplotlib's default cycle "C0".."C9". Its length is the most candidates
# one comparison draws, so no two candidates ever share a colour.
CANDIDATE_COLORS: tuple[str, ...] = tuple(f"C{i}" for i in range(10))
MAX_CANDIDATES = len(CANDIDATE_COLORS)
_MAX_ENVELOPE_COLUMNS = 2000  # waveform drawn as at most this many min/max columns
_INPUT_COLOR = "0.15"


# The wording of the figures, which a caller's ``text=`` overrides by key. Keys listed in
# _REPORT_CARD_FIELDS / _COMPARE_FIELDS are str.format templates with those fields (e.g.
# "{f0_method}"); the others are plain text.
REPORT_CARD_TEXT: Mapping[str, str] = MappingProxyType({
    "waveform_title": "Waveform (texture)",
    "melody_title": "Melody: f0 by {f0_method} (Hz, note names)",
    "melody_title_no_pitch": "Melody: f0 by {f0_method}",
    "dynamics_title": "Dynamics: RMS over {window_ms:g} ms windows",
    "scores_title": "Scores",
    "amplitude_label": "amplitude (full scale = 1)",
    "f0_label": "f0 (note, Hz)",
    "rms_label": "RMS level (dBFS)",
    "time_label": "time (s)",
    "waveform_missing": "waveform not stored",
    "rms_missing": "RMS not stored",
    "silent": "silent (RMS below {silence_dbfs:g} dBFS)",
    "no_pitch": NO_PITCH_TEXT,
    "seam": " seam",
})
COMPARE_TEXT: Mapping[str, str] = MappingProxyType({
    "melody_title": "Melody (f0, note / Hz) of the input and {n} candidate{s}",
    "loudness_title": "Loudness (dB, A-weighted; 0 dB = full-scale 1 kHz sine)",
    "melody_zoom_title": "Melody, seam \u00b1{zoom_s:g} s",
    "loudness_zoom_title": "Loudness, seam \u00b1{zoom_s:g} s",
    "legend_title": "Jumps across the seam",
    "f0_label": "f0 (note, Hz)",
    "loudness_label": "loudness (dB)",
    "time_label": "time (s)",
    "time_from_seam_label": "time from seam (s)",
    "input_legend": "input ({duration_s:.1f} s, {f0_method})",
    "candidate_name": "candidate {i}",
    "candidate_legend": "#{i} {name}",
    "cents": "{cents:+.0f} cents",
    "jump_legend": "   pitch jump: {pitch_jump}\n   loudness jump: {loudness_jump_db:+.1f} dB",
    "no_pitch": NO_PITCH_TEXT,
    "seam": " seam",
})
# the fields of each template key, with a sample value to try a caller's template on before drawing
_REPORT_CARD_FIELDS: Mapping[str, Mapping[str, object]] = MappingProxyType({
    "melody_title": {"f0_method": "yin"},
    "melody_title_no_pitch": {"f0_method": "yin"},
    "dynamics_title": {"window_ms": 64.0},
    "silent": {"silence_dbfs": -60.0},
})
_COMPARE_FIELDS: Mapping[str, Mapping[str, object]] = MappingProxyType({
    "melody_title": {"n": 2, "s": "s"},
    "melody_zoom_title": {"zoom_s": 1.0},
    "loudness_zoom_title": {"zoom_s": 1.0},
    "input_legend": {"duration_s": 12.0, "f0_method": "yin"},
    "candidate_name": {"i": 1},
    "candidate_legend": {"i": 1, "name": "candidate 1"},
    "cents": {"cents": 100.0},
    "jump_legend": {"pitch_jump": "+100 cents", "loudness_jump_db": -1.5},
})


def _text(defaults: Mapping[str, str], fields: Mapping[str, Mapping[str, object]],
          text: Mapping[str, str] | None, where: str) -> Mapping[str, str]:
    """``defaults`` with a caller's overrides, each checked before anything is drawn."""
    if text is None:
        return defaults
    unknown = sorted(set(text) - set(defaults))
    if unknown:
        raise EnsembleError(f"{where} text has unknown keys {unknown}; allowed: {sorted(defaults)}")
    for key, value in text.items():
        if not isinstance(value, str):
            raise EnsembleError(f"{where} text[{key!r}] must be a string, got {type(value).__name__}")
        if key in fields:
            try:
                value.format(**fields[key])
            except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
                raise EnsembleError(f"{where} text[{key!r}] = {value!r} is not a usable template "
                                    f"({exc!r}); its fields: {sorted(fields[key])}") from None
    return {**defaults, **text}


def _downsample_envelope(times: np.ndarray, env: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    """Merge frames so at most ``_MAX_ENVELOPE_COLUMNS`` min/max columns remain (no Python loop)."""
    group = max(1, math.ceil(len(times) / _MAX_ENVELOPE_COLUMNS))
    if group == 1:
        return times, env[:, 0], env[:, 1]
    n = len(times) // group * group
    t = times[:n].reshape(-1, group).mean(axis=1)
    # fmin/fmax skip NaN (unknown waveform) without nanmin's all-NaN warning; all-NaN stays a gap
    lo = np.fmin.reduce(env[:n, 0].reshape(-1, group), axis=1)
    hi = np.fmax.reduce(env[:n, 1].reshape(-1, group), axis=1)
    return t, lo, hi


def _voiced_curve(analysis: Analysis) -> np.ndarray:
    """[T] f0 in Hz with NaN where unvoiced, so lines break at rests."""
    return np.where(analysis.voiced & (analysis.f0_hz > 0), analysis.f0_hz, np.nan)


def _note_axis(ax, f0_values: Sequence[np.ndarray]) -> None:
    """Log-frequency y axis in Hz, ticks at notes (every octave's C, or finer on a narrow range)."""
    voiced = np.concatenate([v[np.isfinite(v)] for v in f0_values]) if f0_values else np.zeros(0)
    if voiced.size == 0:
        lo_m, hi_m = 48.0, 72.0  # C3..C5 as a neutral empty axis
    else:
        # the full range, not percentiles: a trimmed axis would hide real notes of some curve
        lo_m = float(librosa.hz_to_midi(voiced.min())) - 1.5
        hi_m = float(librosa.hz_to_midi(voiced.max())) + 1.5
        if hi_m - lo_m < 7:
            mid = (hi_m + lo_m) / 2
            lo_m, hi_m = mid - 3.5, mid + 3.5
    span = hi_m - lo_m
    step = next(s for s in (1, 2, 3, 4, 6, 12, 24) if span / s <= 8)
    ticks = np.arange(math.ceil(lo_m / step) * step, hi_m + 1e-9, step)
    ax.set_yscale("log")
    ax.set_ylim(librosa.midi_to_hz(lo_m), librosa.midi_to_hz(hi_m))
    ax.yaxis.set_major_locator(FixedLocator(librosa.midi_to_hz(ticks)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_yticklabels([f"{librosa.midi_to_note(int(m), unicode=False)} {librosa.midi_to_hz(m):.0f}"
                        for m in ticks])


def _no_pitch(ax, text: str = NO_PITCH_TEXT) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12,
            color="0.35", bbox={"boxstyle": "round", "fc": "0.95", "ec": "0.7"})


def _fmt(x: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{unit}"


def _score_lines(scores: Scores, seam: SeamMetrics | None, f0_method: str,
                 config: MetricsConfig) -> list[str]:
    p_lo, p_hi = config.dynamics_percentiles
    pad = " " * 14
    lines = [
        f"duration      {scores.duration_s:.2f} s",
        f"energy        {scores.energy_rms:.4f} RMS",
        f"{pad}{_fmt(scores.energy_dbfs, '.1f', ' dBFS')}",
        f"dynamics      {_fmt(scores.dynamics_db, '.1f', ' dB')}",
        f"{pad}RMS p{p_hi:g} - p{p_lo:g}",
        f"melodic compl {_fmt(scores.melodic_complexity, '.3f')}",
        f"{pad}pitch sd {_fmt(scores.pitch_std_semitones, '.2f', ' st')}",
        f"voiced ratio  {scores.voiced_ratio:.0%}",
        f"median f0     {_fmt(scores.median_f0_hz, '.1f', ' Hz')}",
        *([f"{pad}{librosa.hz_to_note(scores.median_f0_hz, unicode=False)}"]
          if scores.median_f0_hz is not None else []),
        f"f0 tracker    {f0_method}",
        *([f"RMS known     {scores.rms_coverage:.0%} of frames"] if scores.rms_coverage < 1 else []),
    ]
    if seam is not None:
        lines += [
            "",
            f"seam at       {seam.seam_s:.2f} s",
            f"pitch jump    {_fmt(seam.pitch_jump_cents, '+.0f', ' cents')}",
        ]
        if seam.pitch_note:
            lines.append(f"  ({seam.pitch_note})")
        lines.append(f"loudness jump {seam.loudness_jump_db:+.1f} dB")
    return lines


def report_card(
    clip: Analysis | CandidateAnalysis,
    *,
    seam: SeamMetrics | None = None,
    config: MetricsConfig = MetricsConfig(),
    title: str | None = None,
    dpi: int = 100,
    text: Mapping[str, str] | None = None,
) -> Figure:
    """The report card of one clip: waveform, melody, dynamics and a score box.

    Args:
        clip: an :class:`Analysis`, or a :class:`CandidateAnalysis` (its seam is marked and scored).
        seam: seam metrics to mark when ``clip`` is a bare analysis (e.g. from
            :func:`ensemble.metrics.seam_metrics`).
        config: scoring settings (when ``clip`` is an analysis).
        title: figure title; default names the duration and f0 tracker.
        dpi: resolution of the returned figure (100 -> 1200 x 800 px).
        text: panel titles, axis labels and notes to use instead of :data:`REPORT_CARD_TEXT`'s, by
            key (e.g. ``{"waveform_title": "Waveform"}``); keys left out keep the default. These are
            str.format templates: ``melody_title`` and ``melody_title_no_pitch`` (``{f0_method}``),
            ``dynamics_title`` (``{window_ms}``), ``silent`` (``{silence_dbfs}``).

    Returns:
        A matplotlib :class:`~matplotlib.figure.Figure` on an Agg canvas (no pyplot state), e.g.
        for ``fig.savefig(path)`` or :func:`figure_png`. Without voiced frames the melody panel
        reads ``text["no_pitch"]`` ("no pitch detected").

    Raises:
        EnsembleError: ``text`` has an unknown key, a value that is not a string, or a template
            its fields cannot fill (e.g. one naming a field its key does not have).
    """
    words = _text(REPORT_CARD_TEXT, _REPORT_CARD_FIELDS, text, "report_card")
    if isinstance(clip, CandidateAnalysis):
        analysis, scores, seam = clip.analysis, clip.scores, clip.seam if seam is None else seam
    else:
        analysis, scores = clip, clip_scores(clip, config=config)
    # fixed margins rather than constrained layout, which would cost ~40 % of the render time
    fig = Figure(figsize=(12, 8), dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 2, width_ratios=[3.1, 1], left=0.095, right=0.99, bottom=0.065,
                            top=0.91, wspace=0.07, hspace=0.45)
    ax_wave = fig.add_subplot(grid[0, 0])
    ax_mel = fig.add_subplot(grid[1, 0], sharex=ax_wave)
    ax_dyn = fig.add_subplot(grid[2, 0], sharex=ax_wave)
    ax_box = fig.add_subplot(grid[:, 1])
    end = max(analysis.duration_s, 1.0 / analysis.config.frame_rate)

    _draw_waveform(ax_wave, analysis, words)
    _draw_melody(ax_mel, analysis, words)
    _draw_dynamics(ax_dyn, analysis, config, end, words)
    for ax in (ax_wave, ax_mel):
        ax.tick_params(labelbottom=True)
        ax.set_xlabel(words["time_label"])
    ax_wave.set_xlim(0, end)
    if seam is not None:
        _mark_seam(ax_wave, (ax_wave, ax_mel, ax_dyn), seam, words)
    ax_box.axis("off")
    ax_box.set_title(words["scores_title"])
    ax_box.text(0.0, 1.0, "\n".join(_score_lines(scores, seam, analysis.f0_method, config)),
                transform=ax_box.transAxes, va="top", ha="left", family="monospace", fontsize=9.5)
    fig.suptitle(title or f"Report card: {analysis.duration_s:.2f} s clip", fontsize=14)
    return fig


def _draw_waveform(ax, analysis: Analysis, words: Mapping[str, str]) -> None:
    """Min/max envelope per frame; a note where the waveform was not stored (NaN)."""
    wt, lo, hi = _downsample_envelope(analysis.times, analysis.envelope)
    ax.fill_between(wt, np.ma.masked_invalid(lo), np.ma.masked_invalid(hi), color="tab:blue",
                    lw=0.3, step="mid")
    unknown = np.flatnonzero(~np.isfinite(analysis.envelope[:, 0]))
    if unknown.size:  # a candidate whose segment was stored without its waveform
        ax.text(analysis.times[unknown].mean(), 0.0, words["waveform_missing"], ha="center",
                va="center", color="0.35")
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel(words["amplitude_label"])
    ax.set_title(words["waveform_title"])


def _draw_melody(ax, analysis: Analysis, words: Mapping[str, str]) -> None:
    """f0 on a note axis, broken at unvoiced frames; a note when nothing is voiced."""
    f0 = _voiced_curve(analysis)
    if analysis.has_pitch:
        ax.plot(analysis.times, f0, color="tab:orange", lw=1.5)
        ax.set_title(words["melody_title"].format(f0_method=analysis.f0_method))
    else:
        ax.set_title(words["melody_title_no_pitch"].format(f0_method=analysis.f0_method))
        _no_pitch(ax, words["no_pitch"])
    _note_axis(ax, [f0])
    ax.set_ylabel(words["f0_label"])


def _draw_dynamics(ax, analysis: Analysis, config: MetricsConfig, end: float,
                   words: Mapping[str, str]) -> None:
    """RMS in dBFS with the two percentiles that define the dynamics score (labelled at ``end`` s)."""
    t = analysis.times
    ax.plot(t, analysis.rms_db, color="tab:green", lw=1.2, label="RMS")
    levels = dynamics_levels(analysis, config)
    if levels is not None:
        for p, q in zip(levels, config.dynamics_percentiles, strict=True):
            ax.axhline(p, color="0.4", ls=":", lw=1)
            ax.text(end, p, f" p{q:g}", va="center", fontsize=8, color="0.3", clip_on=False)
    else:
        ax.text(0.5, 0.5, words["silent"].format(silence_dbfs=config.silence_dbfs),
                transform=ax.transAxes, ha="center", va="center", color="0.35")
    known_db = analysis.rms_db[np.isfinite(analysis.rms_db)]
    top = float(known_db.max()) if known_db.size else RMS_FLOOR_DB
    unknown = np.flatnonzero(~np.isfinite(analysis.rms_db))
    if unknown.size:
        ax.text(t[unknown].mean(), top - 30.0, words["rms_missing"], ha="center", va="center",
                color="0.35")
    ax.set_ylim(max(top - 70.0, RMS_FLOOR_DB) - 3, max(top + 5, -60.0))
    ax.set_ylabel(words["rms_label"])
    ax.set_xlabel(words["time_label"])
    window_ms = 1000.0 * analysis.config.frame_length / analysis.config.sample_rate
    ax.set_title(words["dynamics_title"].format(window_ms=window_ms))


def _mark_seam(ax_top, axes: Sequence, seam: SeamMetrics, words: Mapping[str, str]) -> None:
    """A dashed line at the seam on each of ``axes``, the crossfade shaded, named on ``ax_top``."""
    for ax in axes:
        ax.axvline(seam.seam_s, color="crimson", ls="--", lw=1.2)
        if seam.crossfade_s > 0:
            ax.axvspan(seam.seam_s - seam.crossfade_s / 2, seam.seam_s + seam.crossfade_s / 2,
                       color="crimson", alpha=0.1, lw=0)
    ax_top.text(seam.seam_s, 1.0, words["seam"], color="crimson", va="top", fontsize=9)


def compare_candidates(
    input_analysis: Analysis,
    candidates: Sequence[CandidateAnalysis],
    *,
    zoom_s: float = 1.0,
    title: str | None = None,
    dpi: int = 90,
    labels: Sequence[str] | None = None,
    text: Mapping[str, str] | None = None,
) -> Figure:
    """Melody and loudness of K <= :data:`MAX_CANDIDATES` candidates on one time axis, zoomed at the seam.

    The input's curves are drawn in black up to its seam, each candidate's in its own colour from
    the seam on; left panels share absolute time, right panels show time relative to each
    candidate's seam (``+-zoom_s``), so candidates with different seams still line up there. The
    legend gives each candidate's pitch jump (cents) and loudness jump (dB), or why the pitch jump
    is undefined.

    Args:
        input_analysis: the input's :class:`Analysis`.
        candidates: 1 to :data:`MAX_CANDIDATES` (10, one per colour of :data:`CANDIDATE_COLORS`)
            :class:`CandidateAnalysis` from :func:`ensemble.metrics.candidate_analysis`.
        zoom_s: half-width of the zoom window, s.
        title: figure title; default names the input's duration.
        dpi: figure resolution (90 -> 1260 x 720 px); kept modest so 10 candidates render fast.
        labels: the first legend line of each candidate, one per candidate (the jump lines follow
            it). Default ``"#<i> <label>"`` (``text["candidate_legend"]``): its 1-based index in
            ``candidates`` and its ``label``, or ``"candidate <i>"`` (``text["candidate_name"]``)
            when that is empty.
        text: panel titles, axis labels and legend wording to use instead of
            :data:`COMPARE_TEXT`'s, by key; keys left out keep the default. These are str.format
            templates: ``melody_title`` (``{n}``, ``{s}``: "s" or ""), ``melody_zoom_title`` and
            ``loudness_zoom_title`` (``{zoom_s}``), ``input_legend`` (``{duration_s}``,
            ``{f0_method}``), ``candidate_name`` (``{i}``), ``candidate_legend`` (``{i}``,
            ``{name}``), ``cents`` (``{cents}``), ``jump_legend`` (``{pitch_jump}``,
            ``{loudness_jump_db}``).

    Returns:
        A :class:`~matplotlib.figure.Figure` on an Agg canvas.

    Raises:
        EnsembleError: no candidates or more than :data:`MAX_CANDIDATES`; ``labels`` not one per
            candidate; ``zoom_s`` not > 0; a bad ``text`` (see :func:`report_card`).
    """
    _check_comparison(candidates, labels, zoom_s)
    words = _text(COMPARE_TEXT, _COMPARE_FIELDS, text, "compare_candidates")
    fig, (ax_mel, ax_loud, ax_mel_z, ax_loud_z, ax_leg) = _comparison_axes(dpi)
    inp = input_analysis
    in_end = int(np.searchsorted(inp.times, max(c.seam.seam_s for c in candidates)))
    f0_in = _voiced_curve(inp)
    f0s = [_voiced_curve(c.analysis) for c in candidates]

    curves = _draw_timelines(ax_mel, ax_loud, inp, f0_in, in_end, candidates, f0s)
    _draw_zooms(ax_mel_z, ax_loud_z, inp, f0_in, candidates, f0s, zoom_s)
    loud_range = _loudness_range(inp, in_end, candidates)
    _value_axes((ax_mel, ax_mel_z), curves, (ax_loud, ax_loud_z), loud_range, words)
    _mark_seams(ax_mel, ax_loud, ax_mel_z, ax_loud_z, candidates, zoom_s, words)
    n = len(candidates)
    ax_mel.set_title(words["melody_title"].format(n=n, s="s" if n > 1 else ""))
    ax_loud.set_title(words["loudness_title"])
    ax_mel_z.set_title(words["melody_zoom_title"].format(zoom_s=zoom_s))
    ax_loud_z.set_title(words["loudness_zoom_title"].format(zoom_s=zoom_s))
    _draw_jump_legend(ax_leg, inp, candidates, labels, words)
    fig.suptitle(title or _default_compare_title(inp), fontsize=14)
    return fig


def _default_compare_title(inp: Analysis) -> str:
    return f"Continuation candidates of a {inp.duration_s:.1f} s input"


def _comparison_axes(dpi: int) -> tuple[Figure, tuple]:
    """The comparison's figure and its five axes: melody, loudness, their zooms, the legend panel."""
    fig = Figure(figsize=(14, 8), dpi=dpi)  # fixed margins: see report_card
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 3, width_ratios=[3, 1.5, 1.4], left=0.075, right=0.995,
                            bottom=0.07, top=0.9, wspace=0.33, hspace=0.3)
    ax_mel = fig.add_subplot(grid[0, 0])
    ax_loud = fig.add_subplot(grid[1, 0], sharex=ax_mel)
    ax_mel_z = fig.add_subplot(grid[0, 1])
    ax_loud_z = fig.add_subplot(grid[1, 1], sharex=ax_mel_z)
    ax_leg = fig.add_subplot(grid[:, 2])
    return fig, (ax_mel, ax_loud, ax_mel_z, ax_loud_z, ax_leg)


def _check_comparison(candidates: Sequence[CandidateAnalysis], labels: Sequence[str] | None,
                      zoom_s: float) -> None:
    """:func:`compare_candidates`'s argument checks (see its Raises)."""
    if not 1 <= len(candidates) <= MAX_CANDIDATES:
        raise EnsembleError(f"compare_candidates takes 1 to {MAX_CANDIDATES} candidates, "
                            f"got {len(candidates)}")
    if labels is not None and len(labels) != len(candidates):
        raise EnsembleError(f"compare_candidates got {len(labels)} labels for {len(candidates)} "
                            "candidates; give one per candidate or None")
    if not zoom_s > 0:
        raise EnsembleError(f"zoom_s must be > 0 s, got {zoom_s}")


def _draw_timelines(ax_mel, ax_loud, inp: Analysis, f0_in: np.ndarray, in_end: int,
                    candidates: Sequence[CandidateAnalysis],
                    f0s: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Left panels: the input's melody and loudness up to frame ``in_end``, each candidate's from its
    seam. Returns the [T] f0 curves drawn (Hz, NaN unvoiced), for the note axis."""
    ax_mel.plot(inp.times[:in_end], f0_in[:in_end], color=_INPUT_COLOR, lw=2.0)
    ax_loud.plot(inp.times[:in_end], inp.loudness_db[:in_end], color=_INPUT_COLOR, lw=2.0)
    curves = [f0_in[:in_end]]
    for i, (cand, f0) in enumerate(zip(candidates, f0s, strict=True)):
        start = _first_drawn_frame(cand)
        _draw_candidate_timeline(ax_mel, ax_loud, cand, f0, start, CANDIDATE_COLORS[i])
        curves.append(f0[start:])
    return curves


def _first_drawn_frame(cand: CandidateAnalysis) -> int:
    """The frame a candidate's curves start at: one before its seam, so there is no gap there."""
    return max(int(np.searchsorted(cand.analysis.times, cand.seam.seam_s)) - 1, 0)


def _draw_candidate_timeline(ax_mel, ax_loud, cand: CandidateAnalysis, f0: np.ndarray, start: int,
                             color: str) -> list:
    """One candidate's melody and loudness from frame ``start`` on the left panels; its lines."""
    a = cand.analysis
    return [ax_mel.plot(a.times[start:], f0[start:], color=color, lw=1.0, alpha=0.9)[0],
            ax_loud.plot(a.times[start:], a.loudness_db[start:], color=color, lw=1.0, alpha=0.9)[0]]


def _draw_zooms(ax_mel_z, ax_loud_z, inp: Analysis, f0_in: np.ndarray,
                candidates: Sequence[CandidateAnalysis], f0s: Sequence[np.ndarray],
                zoom_s: float) -> None:
    """Right panels: each candidate within ``zoom_s`` of its own seam (time relative to it), and the
    input's last ``zoom_s`` before the earliest seam."""
    for i, (cand, f0) in enumerate(zip(candidates, f0s, strict=True)):
        _draw_candidate_zoom(ax_mel_z, ax_loud_z, cand, f0, zoom_s, CANDIDATE_COLORS[i])
    _draw_input_zoom(ax_mel_z, ax_loud_z, inp, f0_in, min(c.seam.seam_s for c in candidates), zoom_s)


def _draw_candidate_zoom(ax_mel_z, ax_loud_z, cand: CandidateAnalysis, f0: np.ndarray, zoom_s: float,
                         color: str, start: int = 0) -> list:
    """One candidate within ``zoom_s`` of its seam (from frame ``start`` on), time relative to it;
    its lines."""
    a, s = cand.analysis, cand.seam
    near = (a.times >= s.seam_s - zoom_s) & (a.times <= s.seam_s + zoom_s)
    near[:start] = False
    rel = a.times[near] - s.seam_s
    return [ax_mel_z.plot(rel, f0[near], color=color, lw=1.2)[0],
            ax_loud_z.plot(rel, a.loudness_db[near], color=color, lw=1.2)[0]]


def _draw_input_zoom(ax_mel_z, ax_loud_z, inp: Analysis, f0_in: np.ndarray, first_seam: float,
                     zoom_s: float) -> None:
    """The input's last ``zoom_s`` before ``first_seam``, time relative to it."""
    near_in = (inp.times >= first_seam - zoom_s) & (inp.times <= first_seam)
    ax_mel_z.plot(inp.times[near_in] - first_seam, f0_in[near_in], color=_INPUT_COLOR, lw=2.0)
    ax_loud_z.plot(inp.times[near_in] - first_seam, inp.loudness_db[near_in], color=_INPUT_COLOR,
                   lw=2.0)


def _value_axes(mel_axes: Sequence, curves: Sequence[np.ndarray], loud_axes: Sequence,
                loud_range: tuple[float, float], words: Mapping[str, str]) -> None:
    """y axes of the curve panels: notes fitting every f0 curve, the loudness range in dB."""
    any_pitch = any(np.isfinite(v).any() for v in curves)
    for ax in mel_axes:
        _note_axis(ax, curves)
        ax.set_ylabel(words["f0_label"])
        if not any_pitch:
            _no_pitch(ax, words["no_pitch"])
    for ax in loud_axes:
        ax.set_ylim(*loud_range)
        ax.set_ylabel(words["loudness_label"])


def _loudness_range(inp: Analysis, in_end: int,
                    candidates: Sequence[CandidateAnalysis]) -> tuple[float, float]:
    """dB limits of the loudness panels: the loudest frame + 3 dB down to the quietest frame above
    the loudness floor (at most 60 dB below the loudest) - 3 dB."""
    loud_max = float(inp.loudness_db.max())
    for cand in candidates:
        loud_max = max(loud_max, float(cand.analysis.loudness_db.max()))
    heard = np.concatenate([inp.loudness_db[:in_end]] + [c.analysis.loudness_db for c in candidates])
    heard = heard[heard > inp.config.loudness_floor_db]
    loud_min = float(heard.min()) if heard.size else loud_max - 60.0
    return max(loud_min, loud_max - 60.0) - 3.0, loud_max + 3.0


def _mark_seams(ax_mel, ax_loud, ax_mel_z, ax_loud_z, candidates: Sequence[CandidateAnalysis],
                zoom_s: float, words: Mapping[str, str]) -> None:
    """Seam lines and time axes: every distinct seam on the left panels, 0 s on the zooms."""
    _draw_seam_lines(ax_mel, ax_loud, candidates, words)
    _time_axes(ax_mel, ax_loud, ax_mel_z, ax_loud_z, candidates, zoom_s, words)


def _draw_seam_lines(ax_mel, ax_loud, candidates: Sequence[CandidateAnalysis],
                     words: Mapping[str, str]) -> list:
    """A dashed line at every distinct seam on the left panels, the first one named; the artists."""
    seams = sorted({round(c.seam.seam_s, 3) for c in candidates})
    artists = [ax.axvline(s, color="crimson", ls="--", lw=1.2) for ax in (ax_mel, ax_loud) for s in seams]
    artists.append(ax_mel.text(seams[0], 1.0, words["seam"], transform=ax_mel.get_xaxis_transform(),
                               color="crimson", va="top", fontsize=9))
    return artists


def _time_axes(ax_mel, ax_loud, ax_mel_z, ax_loud_z, candidates: Sequence[CandidateAnalysis],
               zoom_s: float, words: Mapping[str, str]) -> None:
    """Time axes: absolute on the left panels (to the longest candidate), seam-relative on the
    zooms with the seam at 0 s."""
    for ax in (ax_mel, ax_loud):
        ax.set_xlabel(words["time_label"])
        ax.tick_params(labelbottom=True)
    for ax in (ax_mel_z, ax_loud_z):
        ax.axvline(0.0, color="crimson", ls="--", lw=1.2)
        ax.set_xlim(-zoom_s, zoom_s)
        ax.set_xlabel(words["time_from_seam_label"])
        ax.tick_params(labelbottom=True)
    ax_mel.set_xlim(0, max(c.analysis.duration_s for c in candidates))


def _jump_legend_handles(inp: Analysis, items: Sequence[tuple[int, CandidateAnalysis, str | None]],
                         words: Mapping[str, str]) -> list[Line2D]:
    """Legend entries: the input, then per ``(index, candidate, first line or None)`` its name (by
    default ``#<index + 1> <label>``) and its jumps across the seam, in ``CANDIDATE_COLORS[index]``."""
    handles = [Line2D([], [], color=_INPUT_COLOR, lw=2.0,
                      label=words["input_legend"].format(duration_s=inp.duration_s,
                                                         f0_method=inp.f0_method))]
    for i, cand, first in items:
        s = cand.seam
        jump = (words["cents"].format(cents=s.pitch_jump_cents) if s.pitch_jump_cents is not None
                else s.pitch_note)
        if first is None:
            name = cand.label or words["candidate_name"].format(i=i + 1)
            first = words["candidate_legend"].format(i=i + 1, name=name)
        jumps = words["jump_legend"].format(pitch_jump=jump, loudness_jump_db=s.loudness_jump_db)
        handles.append(Line2D([], [], color=CANDIDATE_COLORS[i], lw=2.0, label=f"{first}\n{jumps}"))
    return handles


def _legend(ax, handles: Sequence[Line2D]):
    """The legend panel (``ax``, axis off) holding ``handles``; the legend artist."""
    return ax.legend(handles=handles, loc="upper left", frameon=False, fontsize=8.5,
                     borderaxespad=0.0, labelspacing=0.6)


def _draw_jump_legend(ax, inp: Analysis, candidates: Sequence[CandidateAnalysis],
                      labels: Sequence[str] | None, words: Mapping[str, str]) -> None:
    """The legend panel: the input, then each candidate's name and its jumps across the seam."""
    items = [(i, c, None if labels is None else str(labels[i])) for i, c in enumerate(candidates)]
    ax.axis("off")
    ax.set_title(words["legend_title"], loc="left")
    _legend(ax, _jump_legend_handles(inp, items, words))


class CandidateSheet:
    """Each candidate's comparison figure, and the overview of all, with the input drawn once.

    A card is what ``compare_candidates(input, [candidate])`` draws -- melody and loudness, zooms at
    the seam, the jumps across it -- and the overview what ``compare_candidates(input, candidates)``
    draws, except that every card and the overview share one set of axes fitted to the input and
    *all* candidates (so cards compare at a glance) and one colour per candidate
    (``CANDIDATE_COLORS[i]``, as in the overview). The input's curves, the axes, ticks and labels are
    drawn once, at construction; each card restores that background and draws only its candidate's
    curves, seam, legend and titles on it (Agg blitting): about 40 ms a card instead of about 250 ms
    for a figure of its own.

    One figure is drawn in turn: use a sheet from one thread at a time.

    Args:
        input_analysis: the input's :class:`Analysis`.
        candidates: 1 to :data:`MAX_CANDIDATES` :class:`CandidateAnalysis`, in the order their colours
            and default numbers follow.
        zoom_s: half-width of the zoom window, s.
        dpi: resolution (72 -> 1008 x 576 px).
        text: wording overrides by key, as in :func:`compare_candidates`.

    Raises:
        EnsembleError: as :func:`compare_candidates`.
    """

    def __init__(self, input_analysis: Analysis, candidates: Sequence[CandidateAnalysis], *,
                 zoom_s: float = 1.0, dpi: int = 72, text: Mapping[str, str] | None = None) -> None:
        _check_comparison(candidates, None, zoom_s)
        self._words = words = _text(COMPARE_TEXT, _COMPARE_FIELDS, text, "CandidateSheet")
        self._inp, self._cands, self._zoom_s = input_analysis, list(candidates), zoom_s
        self._fig, self._axes = fig, (ax_mel, ax_loud, ax_mel_z, ax_loud_z, ax_leg) = _comparison_axes(dpi)
        inp = input_analysis
        in_end = int(np.searchsorted(inp.times, max(c.seam.seam_s for c in candidates)))
        f0_in = _voiced_curve(inp)
        self._f0s = [_voiced_curve(c.analysis) for c in candidates]
        self._starts = [_first_drawn_frame(c) for c in candidates]
        ax_mel.plot(inp.times[:in_end], f0_in[:in_end], color=_INPUT_COLOR, lw=2.0)
        ax_loud.plot(inp.times[:in_end], inp.loudness_db[:in_end], color=_INPUT_COLOR, lw=2.0)
        _draw_input_zoom(ax_mel_z, ax_loud_z, inp, f0_in, min(c.seam.seam_s for c in candidates), zoom_s)
        curves = [f0_in[:in_end]] + [f0[s:] for f0, s in zip(self._f0s, self._starts, strict=True)]
        _value_axes((ax_mel, ax_mel_z), curves, (ax_loud, ax_loud_z),
                    _loudness_range(inp, in_end, candidates), words)
        _time_axes(ax_mel, ax_loud, ax_mel_z, ax_loud_z, candidates, zoom_s, words)
        ax_mel.set_title("")  # drawn per card: it counts the candidates shown
        ax_loud.set_title(words["loudness_title"])
        ax_mel_z.set_title(words["melody_zoom_title"].format(zoom_s=zoom_s))
        ax_loud_z.set_title(words["loudness_zoom_title"].format(zoom_s=zoom_s))
        ax_leg.axis("off")
        ax_leg.set_title(words["legend_title"], loc="left")
        self._suptitle = fig.suptitle("", fontsize=14)
        fig.canvas.draw()
        self._background = fig.canvas.copy_from_bbox(fig.bbox)

    def __len__(self) -> int:
        return len(self._cands)

    def card(self, i: int, *, label: str | None = None, title: str | None = None) -> bytes:
        """PNG of candidate ``i`` (0-based) against the input.

        Args:
            i: the candidate's index in the sheet.
            label: the first legend line (default ``"#<i + 1> <its label>"``).
            title: the figure's title (default as :func:`compare_candidates`).

        Raises:
            EnsembleError: ``i`` out of range.
        """
        if not 0 <= i < len(self._cands):
            raise EnsembleError(f"candidate index {i}; allowed: 0..{len(self._cands) - 1}")
        return self._render([i], [label], title)

    def overview(self, *, labels: Sequence[str] | None = None, title: str | None = None) -> bytes:
        """PNG of every candidate against the input (``labels``: first legend lines, one each)."""
        if labels is not None and len(labels) != len(self._cands):
            raise EnsembleError(f"CandidateSheet.overview got {len(labels)} labels for "
                                f"{len(self._cands)} candidates; give one per candidate or None")
        return self._render(list(range(len(self._cands))),
                            [None] * len(self._cands) if labels is None else list(labels), title)

    def _render(self, which: list[int], labels: list[str | None], title: str | None) -> bytes:
        fig, words = self._fig, self._words
        ax_mel, ax_loud, ax_mel_z, ax_loud_z, ax_leg = self._axes
        fig.canvas.restore_region(self._background)
        cands = [self._cands[i] for i in which]
        artists = []
        for i in which:
            cand, f0 = self._cands[i], self._f0s[i]
            artists += _draw_candidate_timeline(ax_mel, ax_loud, cand, f0, self._starts[i], CANDIDATE_COLORS[i])
            artists += _draw_candidate_zoom(ax_mel_z, ax_loud_z, cand, f0, self._zoom_s, CANDIDATE_COLORS[i],
                                            self._starts[i])
        artists += _draw_seam_lines(ax_mel, ax_loud, cands, words)
        legend = _legend(ax_leg, _jump_legend_handles(
            self._inp, [(i, self._cands[i], lab) for i, lab in zip(which, labels, strict=True)], words))
        n = len(which)
        ax_mel.title.set_text(words["melody_title"].format(n=n, s="s" if n > 1 else ""))
        self._suptitle.set_text(title or _default_compare_title(self._inp))
        try:
            for a in [*artists, legend, ax_mel.title, self._suptitle]:
                fig.draw_artist(a)
            return _canvas_png(fig)
        finally:
            for a in [*artists, legend]:
                a.remove()
            ax_mel.title.set_text("")
            self._suptitle.set_text("")


def _canvas_png(fig: Figure) -> bytes:
    """PNG bytes of what the figure's Agg canvas holds now (no redraw): RGB, or RGBA when the figure
    has transparent pixels."""
    rgba = np.asarray(fig.canvas.buffer_rgba())
    pixels = rgba if rgba[..., 3].min() < 255 else rgba[..., :3]
    buf = io.BytesIO()
    # zlib level 1: ~40 % faster than the default level 6, files ~5 % larger
    Image.fromarray(pixels).save(buf, format="png", compress_level=1)
    return buf.getvalue()


def figure_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes (what the app displays and the CLI writes).

    The pixels ``fig.savefig(..., format="png")`` gives (the figure's own dpi and facecolor), drawn on
    its Agg canvas and encoded at zlib level 1 (:func:`_canvas_png`): about 50 ms less for a report
    card than ``savefig``'s level 6, for files ~5 % larger.
    """
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return _canvas_png(fig)


def write_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` as a PNG file at ``path``, atomically (:func:`ensemble.files.atomic_write`).

    Args:
        fig: the figure, e.g. from :func:`report_card` or :func:`compare_candidates`.
        path: the PNG file; its folder is created, an existing file replaced.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return atomic_write_bytes(path, figure_png(fig))
