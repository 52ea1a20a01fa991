"""Statistics of a listening-test ratings log (:mod:`ensemble.ratings.log`).

:func:`summarize`: Kendall's tau between the composite rank and the human rank of each submission,
its mean with a bootstrap confidence interval, a histogram of the composite rank that listeners put
first, the favourites, and the mean human rank of each composite rank with a bootstrap interval.
:func:`format_summary` prints that as plain-text tables, :func:`summary_json` as one JSON line; the
charts of it are in :mod:`ensemble.figures.ratings`.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ensemble.errors import EnsembleError
from ensemble.ratings.log import RATINGS_COLUMNS, _is_int  # _is_int: the log's one integer test

if TYPE_CHECKING:  # annotations only; numpy and scipy are imported when a summary is computed
    import pandas as pd

__all__ = ["SummaryConfig", "summarize", "format_summary", "summary_json", "kendall_tau_rows",
           "rater_bootstrap_ci", "bootstrap_by_group"]


@dataclass(frozen=True)
class SummaryConfig:
    """Settings of :func:`summarize`.

    Attributes:
        n_bootstrap: bootstrap resamples for each confidence interval.
        confidence: coverage of the intervals (percentile method).
        seed: seed of the resampling; the same log and config give the same numbers.
    """

    n_bootstrap: int = 2000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if not _is_int(self.n_bootstrap) or self.n_bootstrap < 1:
            raise EnsembleError(f"n_bootstrap must be an integer >= 1, got {self.n_bootstrap!r}")
        if not isinstance(self.confidence, numbers.Real) or not 0.0 < self.confidence < 1.0:
            raise EnsembleError(f"confidence must be in (0, 1), got {self.confidence!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise EnsembleError(f"seed must be an integer >= 0, got {self.seed!r}")


def _bootstrap_mean_ci(values, config: SummaryConfig, stream: int) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean of ``values`` [n], resampling the values themselves.

    (None, None) with fewer than 2 values: every resample of one value is that value, and the
    "interval" [x, x] would read as certainty; it is undefined.
    """
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return None, None
    rng = np.random.default_rng([config.seed, stream])
    means = np.empty(config.n_bootstrap)
    block = max(1, 4_000_000 // values.size)  # bounds memory at ~32 MB of indices
    for start in range(0, config.n_bootstrap, block):
        stop = min(config.n_bootstrap, start + block)
        idx = rng.integers(0, values.size, size=(stop - start, values.size))  # [resamples, n]
        means[start:stop] = values[idx].mean(axis=1)
    tail = (1.0 - config.confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _per_submission(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per submission, in log order: who, K, Kendall's tau (None for K = 1), and the
    composite rank of the listener's first choice and of the favourite (None when there is none)."""
    from scipy.stats import kendalltau

    per_submission: list[dict[str, Any]] = []
    for submission_id, rows in frame.groupby("submission_id", sort=False):
        composite = rows["composite_rank"].to_numpy()
        human = rows["human_rank"].to_numpy()
        tau = float(kendalltau(composite, human).statistic) if len(rows) >= 2 else math.nan
        first = composite[human == 1]
        fav = composite[rows["favourite"].to_numpy() == 1]
        per_submission.append({
            "submission_id": str(submission_id),
            "timestamp_utc": str(rows["timestamp_utc"].iloc[0]) if "timestamp_utc" in rows else None,
            "rater_id": str(rows["rater_id"].iloc[0]),
            "k": int(rows["k"].iloc[0]),
            "tau": _none_if_nan(tau),
            "first_choice_composite_rank": int(first[0]) if first.size else None,
            "favourite_composite_rank": int(fav[0]) if fav.size else None,
        })
    return per_submission


def summarize(frame: pd.DataFrame, config: SummaryConfig = SummaryConfig()) -> dict[str, Any]:
    """Agreement between the system's composite ranking and the listeners' ranking.

    Each submission is one unit: bootstrap intervals resample submissions (or, for a composite rank,
    that rank's one human rank per submission) as if independent -- several submissions of the same
    rater are not, so with few raters the intervals are too narrow. An interval from fewer than two
    values is undefined (``None``, printed as "undefined"); with no value the mean is ``None`` too.
    Logs that mix several K are pooled: composite rank r and human rank r mean the same place
    whatever K was.

    Args:
        frame: the log, e.g. :func:`read_ratings`; needs the columns ``submission_id``, ``rater_id``,
            ``k``, ``composite_rank``, ``human_rank`` and ``favourite``.
        config: bootstrap settings.

    Returns:
        A JSON-ready dict (NaN written as ``None``)::

            n_submissions, n_rows, n_raters, k_values, dropped_rows,
            kendall_tau: {n, mean, ci_low, ci_high, confidence, n_bootstrap}
                (submissions with K >= 2; tau is undefined for K = 1),
            per_submission: [{submission_id, timestamp_utc, rater_id, k, tau,
                              first_choice_composite_rank, favourite_composite_rank}],
            first_choice: {composite_rank: [1..Kmax], count: [...]}
                (how often the candidate ranked first by the listener had each composite rank),
            mean_human_rank: [{composite_rank, n, mean, ci_low, ci_high}],
            favourite: {n_submissions, composite_rank: [1..Kmax], count: [...]}.

    Raises:
        EnsembleError: a needed column is missing.
    """
    import numpy as np

    needed = ("submission_id", "rater_id", "k", "composite_rank", "human_rank", "favourite")
    missing = [name for name in needed if name not in frame.columns]
    if missing:
        raise EnsembleError(f"the ratings table lacks the columns {missing}; "
                            f"expected {list(RATINGS_COLUMNS)}")

    per_submission = _per_submission(frame)

    k_max = int(frame["k"].max()) if len(frame) else 0
    ranks = list(range(1, k_max + 1))
    taus = [p["tau"] for p in per_submission if p["tau"] is not None]
    tau_low, tau_high = _bootstrap_mean_ci(taus, config, 0) if taus else (None, None)

    first_counts = [sum(p["first_choice_composite_rank"] == r for p in per_submission) for r in ranks]
    fav_counts = [sum(p["favourite_composite_rank"] == r for p in per_submission) for r in ranks]
    mean_rank = []
    for r in ranks:
        human = frame.loc[frame["composite_rank"] == r, "human_rank"].to_numpy(dtype=np.float64)
        low, high = _bootstrap_mean_ci(human, config, r) if human.size else (None, None)
        mean_rank.append({"composite_rank": r, "n": int(human.size),
                          "mean": float(human.mean()) if human.size else None,
                          "ci_low": low, "ci_high": high})

    return {
        "n_submissions": len(per_submission),
        "n_rows": int(len(frame)),
        "n_raters": int(frame["rater_id"].nunique()),
        "k_values": sorted(int(k) for k in frame["k"].unique()),
        "dropped_rows": int(frame.attrs.get("dropped_rows", 0)),
        "kendall_tau": {"n": len(taus), "mean": float(np.mean(taus)) if taus else None,
                        "ci_low": tau_low, "ci_high": tau_high,
                        "confidence": float(config.confidence), "n_bootstrap": int(config.n_bootstrap)},
        "per_submission": per_submission,
        "first_choice": {"composite_rank": ranks, "count": first_counts},
        "mean_human_rank": mean_rank,
        "favourite": {"n_submissions": sum(fav_counts), "composite_rank": ranks, "count": fav_counts},
    }


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def format_summary(summary: Mapping[str, Any], *, per_submission: bool = True) -> str:
    """Plain-text tables of :func:`summarize`'s result, for the CLI (and a ``gr.Textbox``)."""
    s = summary
    if s["n_submissions"] == 0:
        lines = ["no complete submissions in the ratings log yet"]
        if s.get("dropped_rows"):
            lines.append(f"({s['dropped_rows']} rows of interrupted appends skipped)")
        return "\n".join(lines)
    t = s["kendall_tau"]
    pct = f"{100 * t['confidence']:g}%"
    lines = [
        f"{_count(s['n_submissions'], 'submission')} ({_count(s['n_rows'], 'row')}) from "
        f"{_count(s['n_raters'], 'rater')}; "
        f"K = {', '.join(map(str, s['k_values']))}",
    ]
    if s.get("dropped_rows"):
        lines.append(f"{s['dropped_rows']} rows of interrupted appends skipped")
    if t["n"]:
        lines.append(f"Kendall tau, composite rank vs human rank, per submission: mean {_fmt(t['mean'])}, "
                     + (f"{pct} CI [{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}] (n = {t['n']}, "
                        f"{t['n_bootstrap']} bootstrap resamples)" if t["ci_low"] is not None else
                        f"{pct} CI undefined with {_count(t['n'], 'submission')} (a bootstrap interval "
                        "needs at least 2)"))
    else:
        lines.append("Kendall tau: undefined (no submission has K >= 2)")
    lines.append("")
    n = s["n_submissions"]
    rows = []
    for r, count, m, fav in zip(s["first_choice"]["composite_rank"], s["first_choice"]["count"],
                                s["mean_human_rank"], s["favourite"]["count"], strict=True):
        rows.append((r, count, f"{100 * count / n:.1f}%", _fmt(m["mean"], 2),
                     f"[{_fmt(m['ci_low'], 2)}, {_fmt(m['ci_high'], 2)}]" if m["ci_low"] is not None
                     else "undefined", m["n"], fav))
    lines += _table(("composite rank", "put first", "share", "mean human rank", f"{pct} CI", "n",
                     "favourite"), rows)
    if per_submission:
        lines.append("")
        lines += _table(("submission", "timestamp_utc", "rater", "k", "tau", "first choice (composite rank)"),
                        [(p["submission_id"][:8], p["timestamp_utc"] or "-", p["rater_id"], p["k"],
                          _fmt(p["tau"]), p["first_choice_composite_rank"] or "-")
                         for p in s["per_submission"]])
    return "\n".join(lines)


def summary_json(summary: Mapping[str, Any]) -> str:
    """One line of JSON (strict: no NaN) for :func:`summarize`'s result."""
    return json.dumps(summary, allow_nan=False, separators=(",", ":"))


def kendall_tau_rows(a, b, valid=None):
    """Kendall's tau-b between ``a[r]`` and ``b[r]`` for every row ``r`` at once.

    The same statistic as ``scipy.stats.kendalltau(a[r], b[r]).statistic`` (variant b: ties in
    either side shrink the denominator), vectorised over rows of padded rankings.

    Args:
        a, b: [R, K] scores of the K items of each row (finite where ``valid``).
        valid: [R, K] bool, which items each row holds (padding False); default all.

    Returns:
        [R] float64 tau in [-1, 1]; NaN where undefined (fewer than two items, or one side constant).
    """
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise EnsembleError(f"kendall_tau_rows needs two [R, K] arrays of one shape, got {a.shape} and {b.shape}")
    valid = np.ones(a.shape, bool) if valid is None else np.asarray(valid, bool)
    k = a.shape[1]
    pairs = valid[:, :, None] & valid[:, None, :] & np.triu(np.ones((k, k), bool), 1)[None]  # [R, K, K]
    with np.errstate(invalid="ignore"):
        sa = np.where(pairs, np.sign(a[:, :, None] - a[:, None, :]), 0.0)  # [R, K, K]
        sb = np.where(pairs, np.sign(b[:, :, None] - b[:, None, :]), 0.0)
    num = (sa * sb).sum(axis=(1, 2))
    den = np.sqrt(np.abs(sa).sum(axis=(1, 2)) * np.abs(sb).sum(axis=(1, 2)))
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def rater_bootstrap_ci(values, groups, config: SummaryConfig = SummaryConfig(),
                       stream: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``, resampling whole groups (raters).

    Each resample draws as many groups as there are, with replacement, and takes the mean over every
    value of the drawn groups: one rater's submissions stay together, so a rater who ranked often
    cannot make the interval narrower than the number of raters allows. (The vectorised special case
    of :func:`bootstrap_by_group` for a mean: thousands of submissions in milliseconds.)

    Args:
        values: [n] finite numbers, e.g. Kendall tau per submission.
        groups: [n] the group of each value, e.g. its rater id.
        config: resamples, coverage and seed (:class:`SummaryConfig`).
        stream: a second seed, so that several intervals of one report draw different resamples.

    Returns:
        (low, high); both the mean when there is one group.

    Raises:
        EnsembleError: no values, or ``values`` and ``groups`` of different lengths.
    """
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    if values.ndim != 1 or values.shape != groups.shape or values.size == 0:
        raise EnsembleError(f"rater_bootstrap_ci needs [n] values and [n] groups, n >= 1; got "
                            f"{values.shape} and {groups.shape}")
    _, codes = np.unique(groups, return_inverse=True)
    n_groups = int(codes.max()) + 1
    sums = np.bincount(codes, weights=values, minlength=n_groups)
    counts = np.bincount(codes, minlength=n_groups).astype(np.float64)
    if n_groups == 1:
        mean = float(sums[0] / counts[0])
        return mean, mean
    rng = np.random.default_rng([config.seed, stream])
    draws = rng.integers(0, n_groups, size=(config.n_bootstrap, n_groups))  # [resamples, groups]
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1.0 - config.confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_by_group(groups: Sequence[Any], statistic, config: SummaryConfig, stream: int):
    """Percentile bootstrap interval of ``statistic`` resampling whole groups (e.g. raters).

    Each resample draws ``len(groups)`` groups with replacement and calls ``statistic(resampled)``
    (a list of groups, repeats included), which returns a number or a 1-D array; resamples where it
    returns None or NaN are left out. Groups, not rows, are the independent units: several
    submissions of one rater move together.

    Returns:
        (low, high): floats, or arrays of the statistic's shape; None when there are no groups or no
        resample gave a value. With one group the interval is degenerate (the statistic of it).
    """
    import numpy as np

    groups = list(groups)
    if not groups:
        return None, None
    rng = np.random.default_rng([config.seed, stream])
    values = []
    for _ in range(config.n_bootstrap):
        idx = rng.integers(0, len(groups), size=len(groups))
        v = statistic([groups[i] for i in idx])
        if v is None:
            continue
        v = np.asarray(v, dtype=np.float64)
        if np.all(np.isfinite(v)):
            values.append(v)
    if not values:
        return None, None
    tail = (1.0 - config.confidence) / 2.0
    low, high = np.quantile(np.stack(values), [tail, 1.0 - tail], axis=0)
    if np.ndim(low) == 0:
        return float(low), float(high)
    return low, high
