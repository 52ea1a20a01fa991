"""Charts of a listening study (:func:`ensemble.study.analysis.study_report`'s result).

* :func:`strengths_figure` -- each condition's Plackett-Luce log-strength with its interval.
* :func:`screening_figure` -- per rater, the share of rounds with the anchor above the reference,
  against the screening threshold.

No pyplot state (see :mod:`ensemble.figures`); ``fig.savefig`` renders with Agg.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["strengths_figure", "screening_figure"]


def strengths_figure(report: Mapping[str, Any], *, title: str | None = None,
                     xlabel: str = "Plackett-Luce log-strength (0 = average)") -> Figure:
    """Horizontal points with interval bars, one row per condition label."""
    s = report["strengths"]
    fig = Figure(figsize=(6.0, 0.5 + 0.45 * max(2, len(s["items"]))), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title or f"Condition strengths ({s['n_rankings']} rankings, "
                          f"{100 * report['confidence']:g}% intervals by rater)")
    ax.set_xlabel(xlabel)
    if s["n_rankings"] and s["theta"] is not None:
        y = np.arange(len(s["items"]))
        theta = np.array([np.nan if v is None else v for v in s["theta"]], dtype=float)
        ax.plot(theta, y, "o", color="tab:blue")
        if s["ci_low"] is not None:
            lo = np.array([np.nan if v is None else v for v in s["ci_low"]], dtype=float)
            hi = np.array([np.nan if v is None else v for v in s["ci_high"]], dtype=float)
            ax.hlines(y, lo, hi, color="tab:blue")
        ax.set_yticks(y, s["items"])
        ax.axvline(0.0, color="0.7", lw=0.8)
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "no ratings yet", ha="center", va="center", transform=ax.transAxes)
    return fig


def screening_figure(report: Mapping[str, Any], *, title: str | None = None) -> Figure:
    """Bars per rater: share of rounds with the anchor above the reference; the threshold as a line."""
    sc = report["screening"]
    fig = Figure(figsize=(6.0, 3.0), layout="constrained")
    ax = fig.add_subplot()
    pr = sc["pass_rate"]
    ax.set_title(title or f"Post-screening: pass rate {'-' if pr is None else f'{100 * pr:.0f}%'}")
    names = [r["rater_id"] for r in sc["raters"]]
    if names:
        ax.bar(range(len(names)), [100 * r["share"] for r in sc["raters"]],
               color=["tab:red" if r["flagged"] else "tab:green" for r in sc["raters"]])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    else:
        ax.text(0.5, 0.5, "no ratings yet", ha="center", va="center", transform=ax.transAxes)
    ax.axhline(100 * sc["threshold"], color="0.3", ls="--", lw=1)
    ax.set_ylabel("anchor above reference (% of rounds)")
    ax.set_ylim(0, 100)
    return fig
