"""Charts of the listening test: :func:`ensemble.ratings.stats.summarize`'s result as two figures.

* :func:`first_choice_figure` -- how often listeners put the candidate of each composite rank first.
* :func:`mean_rank_figure` -- the mean human rank of each composite rank, with its bootstrap
  interval, against the diagonal of perfect agreement. The legend sits below the axes, where it can
  never hide a point (inside, any corner can hold one: composite rank 1 ranked last is top left); an
  interval from a single rating is undefined and is not drawn (the legend says so).

Titles, axis labels and legend entries are keyword arguments whose defaults are the project's
wording. Figures have no pyplot state (see :mod:`ensemble.figures`); ``fig.savefig`` renders them
with Agg.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

__all__ = ["first_choice_figure", "mean_rank_figure"]

RANK_AXIS_LABEL = "composite rank (1 = the system's best)"
NO_RATINGS_TEXT = "no ratings yet"


def first_choice_figure(
    summary: Mapping[str, Any],
    *,
    title: str | None = None,
    xlabel: str = RANK_AXIS_LABEL,
    ylabel: str = "submissions ranking it first (count)",
    empty_text: str = NO_RATINGS_TEXT,
) -> Figure:
    """Bar chart: how often listeners put the candidate of each composite rank first.

    Args:
        summary: :func:`ensemble.ratings.stats.summarize`'s result (``first_choice``,
            ``n_submissions``).
        title: figure title; default ``"Composite rank of the listeners' first choice (n = N
            submissions)"``.
        xlabel, ylabel: axis labels.
        empty_text: written in the middle when there are no ratings.

    Returns:
        A :class:`matplotlib.figure.Figure` (no pyplot; ``fig.savefig`` renders with Agg).
    """
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    ranks, counts = summary["first_choice"]["composite_rank"], summary["first_choice"]["count"]
    if title is None:
        title = ("Composite rank of the listeners' first choice "
                 f"(n = {summary['n_submissions']} submissions)")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ranks:
        ax.bar(ranks, counts, color="tab:blue")
        ax.set_xticks(ranks)
    else:
        ax.text(0.5, 0.5, empty_text, ha="center", va="center", transform=ax.transAxes)
    ax.yaxis.get_major_locator().set_params(integer=True)
    return fig


def mean_rank_figure(
    summary: Mapping[str, Any],
    *,
    title: str | None = None,
    xlabel: str = RANK_AXIS_LABEL,
    ylabel: str = "mean human rank (1 = listener's best)",
    diagonal_label: str = "perfect agreement",
    points_label: str = "listeners",
    single_label: str = "one rating: no interval",
    empty_text: str = NO_RATINGS_TEXT,
) -> Figure:
    """Mean human rank (with its bootstrap interval) for each composite rank, against the diagonal.

    Args:
        summary: :func:`ensemble.ratings.stats.summarize`'s result (``mean_human_rank``,
            ``first_choice``, ``kendall_tau.confidence``).
        title: figure title; default ``"Mean human rank per composite rank (95% bootstrap CI)"``
            with the summary's confidence.
        xlabel, ylabel: axis labels.
        diagonal_label, points_label: legend entries of the diagonal and of the listeners' points.
        single_label: legend entry of points from a single rating (no interval: undefined).
        empty_text: written in the middle when there are no ratings.

    Returns:
        A :class:`matplotlib.figure.Figure`; points on the dashed diagonal mean perfect agreement.
    """
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    if title is None:
        pct = f"{100 * summary['kendall_tau']['confidence']:g}%"
        title = f"Mean human rank per composite rank ({pct} bootstrap CI)"
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    points = [m for m in summary["mean_human_rank"] if m["mean"] is not None]
    if points:
        # an interval needs two ratings at least; a single one's bootstrap is degenerate (or None)
        ranged = [m for m in points if m["n"] >= 2 and m["ci_low"] is not None and m["ci_high"] is not None]
        single = [m for m in points if m not in ranged]
        k_max = max(summary["first_choice"]["composite_rank"])
        ax.plot([1, k_max], [1, k_max], "--", color="0.6", label=diagonal_label)
        if ranged:
            ax.errorbar([m["composite_rank"] for m in ranged], [m["mean"] for m in ranged],
                        yerr=[[m["mean"] - m["ci_low"] for m in ranged], [m["ci_high"] - m["mean"] for m in ranged]],
                        fmt="o", capsize=4, color="tab:orange", label=points_label)
        if single:
            ax.plot([m["composite_rank"] for m in single], [m["mean"] for m in single], "o",
                    mfc="none", color="tab:orange", label=single_label)
        ax.set_xticks(summary["first_choice"]["composite_rank"])
        ax.margins(y=0.12)
        fig.legend(loc="outside lower center", ncols=3, frameon=False)
    else:
        ax.text(0.5, 0.5, empty_text, ha="center", va="center", transform=ax.transAxes)
    return fig
