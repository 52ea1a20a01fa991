"""Figures of the analyses in :mod:`ensemble.metrics`: a clip's report card and a comparison of candidates.

* :func:`report_card` -- waveform, melody (f0 on a note axis), RMS dynamics and a score box of one
  clip, with its seam marked when it is a candidate.
* :func:`compare_candidates` -- melody and loudness of 1 to :data:`MAX_CANDIDATES` candidates on one
  time axis, with a zoom around each seam and a legend of the jumps across it.
* :func:`figure_png` renders a figure to PNG bytes; :func:`write_figure` writes one to a PNG file
  atomically (:func:`ensemble.files.atomic_write`).

Figures use the Agg canvas and no pyplot (see :mod:`ensemble.figures`).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import librosa
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from ensemble.errors import EnsembleError
from ensemble.files import atomic_write
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

__all__ = ["CANDIDATE_COLORS", "MAX_CANDIDATES", "report_card", "compare_candidates", "figure_png",
           "write_figure"]

# One colour per candidate: matplotlib's default cycle "C0".."C9". Its length is the most candidates
# one comparison draws, so no two candidates ever share a colour.
CANDIDATE_COLORS: tuple[str, ...] = tuple(f"C{i}" for i in range(10))
MAX_CANDIDATES = len(CANDIDATE_COLORS)
_MAX_ENVELOPE_COLUMNS = 2000  # waveform drawn as at most this many min/max columns
_INPUT_COLOR = "0.15"


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
) -> Figure:
    """The report card of one clip: waveform, melody, dynamics and a score box.

    Args:
        clip: an :class:`Analysis`, or a :class:`CandidateAnalysis` (its seam is marked and scored).
        seam: seam metrics to mark when ``clip`` is a bare analysis (e.g. from
            :func:`ensemble.metrics.seam_metrics`).
        config: scoring settings (when ``clip`` is an analysis).
        title: figure title; default names the duration and f0 tracker.
        dpi: resolution of the returned figure (100 -> 1200 x 800 px).

    Returns:
        A matplotlib :class:`~matplotlib.figure.Figure` on an Agg canvas (no pyplot state), e.g.
        for ``fig.savefig(path)`` or :func:`figure_png`. Without voiced frames the melody panel
        reads "no pitch detected".
    """
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
    t = analysis.times
    end = max(analysis.duration_s, 1.0 / analysis.config.frame_rate)

    wt, lo, hi = _downsample_envelope(t, analysis.envelope)
    ax_wave.fill_between(wt, np.ma.masked_invalid(lo), np.ma.masked_invalid(hi), color="tab:blue",
                         lw=0.3, step="mid")
    unknown = np.flatnonzero(~np.isfinite(analysis.envelope[:, 0]))
    if unknown.size:  # a candidate whose segment was stored without its waveform
        ax_wave.text(t[unknown].mean(), 0.0, "waveform not stored", ha="center", va="center",
                     color="0.35")
    ax_wave.set_ylim(-1.05, 1.05)
    ax_wave.set_ylabel("amplitude (full scale = 1)")
    ax_wave.set_title("Waveform (texture)")

    f0 = _voiced_curve(analysis)
    if analysis.has_pitch:
        ax_mel.plot(t, f0, color="tab:orange", lw=1.5)
        ax_mel.set_title(f"Melody: f0 by {analysis.f0_method} (Hz, note names)")
    else:
        ax_mel.set_title(f"Melody: f0 by {analysis.f0_method}")
        _no_pitch(ax_mel)
    _note_axis(ax_mel, [f0])
    ax_mel.set_ylabel("f0 (note, Hz)")

    ax_dyn.plot(t, analysis.rms_db, color="tab:green", lw=1.2, label="RMS")
    levels = dynamics_levels(analysis, config)
    if levels is not None:
        for p, q in zip(levels, config.dynamics_percentiles, strict=True):
            ax_dyn.axhline(p, color="0.4", ls=":", lw=1)
            ax_dyn.text(end, p, f" p{q:g}", va="center", fontsize=8, color="0.3", clip_on=False)
    else:
        ax_dyn.text(0.5, 0.5, f"silent (RMS below {config.silence_dbfs:g} dBFS)",
                    transform=ax_dyn.transAxes, ha="center", va="center", color="0.35")
    known_db = analysis.rms_db[np.isfinite(analysis.rms_db)]
    top = float(known_db.max()) if known_db.size else RMS_FLOOR_DB
    unknown = np.flatnonzero(~np.isfinite(analysis.rms_db))
    if unknown.size:
        ax_dyn.text(t[unknown].mean(), top - 30.0, "RMS not stored", ha="center", va="center",
                    color="0.35")
    ax_dyn.set_ylim(max(top - 70.0, RMS_FLOOR_DB) - 3, max(top + 5, -60.0))
    ax_dyn.set_ylabel("RMS level (dBFS)")
    ax_dyn.set_xlabel("time (s)")
    window_ms = 1000.0 * analysis.config.frame_length / analysis.config.sample_rate
    ax_dyn.set_title(f"Dynamics: RMS over {window_ms:g} ms windows")
    for ax in (ax_wave, ax_mel):
        ax.tick_params(labelbottom=True)
        ax.set_xlabel("time (s)")
    ax_wave.set_xlim(0, end)

    if seam is not None:
        for ax in (ax_wave, ax_mel, ax_dyn):
            ax.axvline(seam.seam_s, color="crimson", ls="--", lw=1.2)
            if seam.crossfade_s > 0:
                ax.axvspan(seam.seam_s - seam.crossfade_s / 2, seam.seam_s + seam.crossfade_s / 2,
                           color="crimson", alpha=0.1, lw=0)
        ax_wave.text(seam.seam_s, 1.0, " seam", color="crimson", va="top", fontsize=9)

    ax_box.axis("off")
    ax_box.set_title("Scores")
    ax_box.text(0.0, 1.0, "\n".join(_score_lines(scores, seam, analysis.f0_method, config)),
                transform=ax_box.transAxes, va="top", ha="left", family="monospace", fontsize=9.5)
    fig.suptitle(title or f"Report card: {analysis.duration_s:.2f} s clip", fontsize=14)
    return fig


def compare_candidates(
    input_analysis: Analysis,
    candidates: Sequence[CandidateAnalysis],
    *,
    zoom_s: float = 1.0,
    title: str | None = None,
    dpi: int = 90,
    labels: Sequence[str] | None = None,
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
            it). Default ``"#<i> <label>"``: its 1-based index in ``candidates`` and its ``label``,
            or ``"candidate <i>"`` when that is empty.

    Returns:
        A :class:`~matplotlib.figure.Figure` on an Agg canvas.

    Raises:
        EnsembleError: no candidates or more than :data:`MAX_CANDIDATES`; ``labels`` not one per
            candidate.
    """
    if not 1 <= len(candidates) <= MAX_CANDIDATES:
        raise EnsembleError(f"compare_candidates takes 1 to {MAX_CANDIDATES} candidates, "
                            f"got {len(candidates)}")
    if labels is not None and len(labels) != len(candidates):
        raise EnsembleError(f"compare_candidates got {len(labels)} labels for {len(candidates)} "
                            "candidates; give one per candidate or None")
    if not zoom_s > 0:
        raise EnsembleError(f"zoom_s must be > 0 s, got {zoom_s}")
    fig = Figure(figsize=(14, 8), dpi=dpi)  # fixed margins: see report_card
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 3, width_ratios=[3, 1.5, 1.4], left=0.075, right=0.995,
                            bottom=0.07, top=0.9, wspace=0.33, hspace=0.3)
    ax_mel = fig.add_subplot(grid[0, 0])
    ax_loud = fig.add_subplot(grid[1, 0], sharex=ax_mel)
    ax_mel_z = fig.add_subplot(grid[0, 1])
    ax_loud_z = fig.add_subplot(grid[1, 1], sharex=ax_mel_z)
    ax_leg = fig.add_subplot(grid[:, 2])
    inp = input_analysis
    first_seam = min(c.seam.seam_s for c in candidates)
    in_end = int(np.searchsorted(inp.times, max(c.seam.seam_s for c in candidates)))
    f0_in = _voiced_curve(inp)
    curves = [f0_in[:in_end]]
    handles = []

    ax_mel.plot(inp.times[:in_end], f0_in[:in_end], color=_INPUT_COLOR, lw=2.0)
    ax_loud.plot(inp.times[:in_end], inp.loudness_db[:in_end], color=_INPUT_COLOR, lw=2.0)
    handles.append(ax_leg.plot([], [], color=_INPUT_COLOR, lw=2.0,
                               label=f"input ({inp.duration_s:.1f} s, {inp.f0_method})")[0])
    loud_max = float(inp.loudness_db.max())
    for i, cand in enumerate(candidates):
        a, s, c = cand.analysis, cand.seam, CANDIDATE_COLORS[i]
        f0 = _voiced_curve(a)
        start = int(np.searchsorted(a.times, s.seam_s)) - 1  # one frame before: no gap at the seam
        start = max(start, 0)
        ax_mel.plot(a.times[start:], f0[start:], color=c, lw=1.0, alpha=0.9)
        ax_loud.plot(a.times[start:], a.loudness_db[start:], color=c, lw=1.0, alpha=0.9)
        near = (a.times >= s.seam_s - zoom_s) & (a.times <= s.seam_s + zoom_s)
        rel = a.times[near] - s.seam_s
        ax_mel_z.plot(rel, f0[near], color=c, lw=1.2)
        ax_loud_z.plot(rel, a.loudness_db[near], color=c, lw=1.2)
        curves.append(f0[start:])
        loud_max = max(loud_max, float(a.loudness_db.max()))
        jump = (f"{s.pitch_jump_cents:+.0f} cents" if s.pitch_jump_cents is not None
                else s.pitch_note)
        name = cand.label or f"candidate {i + 1}"
        first = f"#{i + 1} {name}" if labels is None else str(labels[i])
        handles.append(ax_leg.plot([], [], color=c, lw=2.0,
                                   label=f"{first}\n   pitch jump: {jump}\n"
                                         f"   loudness jump: {s.loudness_jump_db:+.1f} dB")[0])
    near_in = (inp.times >= first_seam - zoom_s) & (inp.times <= first_seam)
    ax_mel_z.plot(inp.times[near_in] - first_seam, f0_in[near_in], color=_INPUT_COLOR, lw=2.0)
    ax_loud_z.plot(inp.times[near_in] - first_seam, inp.loudness_db[near_in], color=_INPUT_COLOR,
                   lw=2.0)

    any_pitch = any(np.isfinite(v).any() for v in curves)
    for ax in (ax_mel, ax_mel_z):
        _note_axis(ax, curves)
        ax.set_ylabel("f0 (note, Hz)")
        if not any_pitch:
            _no_pitch(ax)
    heard = np.concatenate([inp.loudness_db[:in_end]] + [c.analysis.loudness_db for c in candidates])
    heard = heard[heard > inp.config.loudness_floor_db]
    loud_min = float(heard.min()) if heard.size else loud_max - 60.0
    for ax in (ax_loud, ax_loud_z):
        ax.set_ylim(max(loud_min, loud_max - 60.0) - 3.0, loud_max + 3.0)
        ax.set_ylabel("loudness (dB)")
    seams = sorted({round(c.seam.seam_s, 3) for c in candidates})
    for ax in (ax_mel, ax_loud):
        for s in seams:
            ax.axvline(s, color="crimson", ls="--", lw=1.2)
        ax.set_xlabel("time (s)")
        ax.tick_params(labelbottom=True)
    for ax in (ax_mel_z, ax_loud_z):
        ax.axvline(0.0, color="crimson", ls="--", lw=1.2)
        ax.set_xlim(-zoom_s, zoom_s)
        ax.set_xlabel("time from seam (s)")
        ax.tick_params(labelbottom=True)
    ax_mel.set_xlim(0, max(c.analysis.duration_s for c in candidates))
    ax_mel.text(seams[0], 1.0, " seam", transform=ax_mel.get_xaxis_transform(), color="crimson",
                va="top", fontsize=9)
    ax_mel.set_title(f"Melody (f0, note / Hz) of the input and {len(candidates)} "
                     f"candidate{'s' if len(candidates) > 1 else ''}")
    ax_loud.set_title("Loudness (dB, A-weighted; 0 dB = full-scale 1 kHz sine)")
    ax_mel_z.set_title(f"Melody, seam \u00b1{zoom_s:g} s")
    ax_loud_z.set_title(f"Loudness, seam \u00b1{zoom_s:g} s")
    ax_leg.axis("off")
    ax_leg.set_title("Jumps across the seam", loc="left")
    ax_leg.legend(handles=handles, loc="upper left", frameon=False, fontsize=8.5,
                  borderaxespad=0.0, labelspacing=0.6)
    fig.suptitle(title or f"Continuation candidates of a {inp.duration_s:.1f} s input", fontsize=14)
    return fig


def figure_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes (what the app displays and the CLI writes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` as a PNG file at ``path``, atomically (:func:`ensemble.files.atomic_write`).

    Args:
        fig: the figure, e.g. from :func:`report_card` or :func:`compare_candidates`.
        path: the PNG file; its folder is created, an existing file replaced.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
