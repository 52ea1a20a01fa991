"""Learn the ranking from listeners: a Plackett-Luce fit of the composite's weights to logged rankings.

The hand-set composite (``alpha * relevance + beta * coherence``, :mod:`ensemble.rag`) was tuned on a
self-retrieval benchmark. This module fits a **linear utility over the sub-scores** each logged
candidate carries to what listeners said, and measures on raters it never saw whether that ranks
better.

Model. For a ranking of K candidates with sub-scores ``x_i`` ([F], turned into features by
:data:`SUBSCORES` and standardised with the training data's mean and standard deviation: ``z_i``),
the utility is ``u_i = w . z_i`` and a rater ranks by Plackett-Luce: the first choice is candidate
``i`` with probability ``exp(u_i) / sum_j exp(u_j)``, the second likewise among the rest, and so on.
The fit minimises ``sum over rankings of -log P(ranking) + l2 * ||w||^2`` (the penalty convention of
``choix``: a Gaussian prior of variance ``1 / (2 l2)``) with scipy's L-BFGS and the exact gradient.
With one-hot features per item this is exactly ``choix.opt_rankings`` (tested against it); ``choix``
itself fits one strength per item, not weights over features, so it cannot fit this model.

Data. :func:`read_logs` reads one or more ratings logs with :func:`ensemble.ratings.log.read_ratings`
(older logs come back with the columns they lacked empty). :func:`rankings_from_frame` keeps every
submission with K >= 2 and says which sub-scores it had to leave out and why: a column the log does
not have, a column empty in rows logged before it existed (only seam jumps may be empty: an unvoiced
side makes them undefined; those cells take the training mean), or a constant one.

Evaluation (:func:`evaluate`). Folds leave raters out (GroupKFold by ``rater_id``: one rater's
rankings are never split between training and test). On the held-out raters: Kendall tau between the
fitted utility and the human ranks, beside the hand-set composite (the logged ``composite``) and each
single sub-score (oriented so that higher is better), with percentile intervals resampled by rater
(:func:`ensemble.ratings.stats.rater_bootstrap_ci`), the paired gain over the hand-set composite, and
a learning curve (held-out tau against the number of training rankings). The folds' training sets
overlap, which makes a fitted score's held-out mean vary more than its rankings' bootstrap shows; the
intervals of the fitted utility and of the gain are widened by Nadeau and Bengio's correction
(``sqrt(1 + J n_test / n_train)``, 1.5 with 5 folds), so that noise raters do not show a gain.

The weights file (:func:`fit_log`, :func:`write_weights`, :func:`load_weights`) is JSON written
atomically; it records the data's sha256, the rows used, the sub-scores used and left out, the folds,
the regularisation, the held-out results and a version hash of the weights, which every round ranked
with them records (``"hand-set"`` otherwise). :func:`weights_summary_text` is the Results tab's text.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ensemble.errors import EnsembleError
from ensemble.files import sha256_file, write_json_atomic
from ensemble.ratings.log import read_ratings
from ensemble.ratings.stats import SummaryConfig, kendall_tau_rows, rater_bootstrap_ci

if TYPE_CHECKING:  # pandas is imported when a log is read
    import pandas as pd

__all__ = [
    "SubScore", "SUBSCORES", "RANKABLE", "HAND_SET", "WEIGHTS_FORMAT", "MIN_RANKINGS", "MIN_RATERS",
    "FitConfig", "Rankings", "Weights",
    "read_logs", "rankings_from_frame", "standardize", "pl_objective", "fit_plackett_luce",
    "rater_folds", "fit_weights", "evaluate", "fit_log", "weights_version", "write_weights",
    "load_weights", "format_fit", "ranking_line", "weights_summary_text",
]

HAND_SET = "hand-set"  # what a round ranked by the hand-set composite records as its weights
WEIGHTS_FORMAT = "ensemble.weights"
WEIGHTS_FORMAT_VERSION = 1
MIN_RANKINGS = 30  # the Results tab fits and shows weights from this many rankings ...
MIN_RATERS = 2     # ... by at least this many raters (held-out needs a rater to leave out)


@dataclass(frozen=True)
class SubScore:
    """One sub-score a logged candidate may carry, and how it becomes a feature.

    Attributes:
        column: the ratings-log column it is read from.
        description: what it is, in words (unit included).
        absolute: use ``|value|`` (the signed seam jumps: a jump either way is a jump).
        scale: the feature is ``value / scale`` (cents -> semitones).
        higher_is_better: orientation of the sub-score on its own (for its single-score tau).
        may_be_undefined: empty cells mean "undefined for this candidate" (a seam with an unvoiced
            side), not "logged before the column existed"; they take the training mean.
    """

    column: str
    description: str
    absolute: bool = False
    scale: float = 1.0
    higher_is_better: bool = True
    may_be_undefined: bool = False

    def feature(self, values: np.ndarray) -> np.ndarray:
        """[n] feature values of [n] column values (NaN stays NaN)."""
        x = np.asarray(values, dtype=np.float64) / self.scale
        return np.abs(x) if self.absolute else x


# Every sub-score the fit knows, in feature order. The first four are in every log this project has
# written; the others are read when a log carries a column of that name (finer parts of relevance and
# coherence, and the continuity scores of the continuation and timbre work), else left out with a word.
SUBSCORES: dict[str, SubScore] = {
    "relevance": SubScore("relevance", "style relevance (context + segment), [-1, 1]"),
    "coherence": SubScore("coherence", "seam coherence (mean of pitch, loudness, tempo, key, register terms), [0, 1]"),
    "seam_pitch_jump": SubScore("seam_pitch_jump_cents", "|pitch jump| at the seam on the rendered audio, semitones",
                                absolute=True, scale=100.0, higher_is_better=False, may_be_undefined=True),
    "seam_loudness_jump": SubScore("seam_loudness_jump_db", "|loudness jump| at the seam on the rendered audio, dB",
                                   absolute=True, higher_is_better=False, may_be_undefined=True),
    "context_relevance": SubScore("context_relevance", "relevance of the context half, [-1, 1]"),
    "segment_relevance": SubScore("segment_relevance", "relevance of the segment half, [-1, 1]"),
    "pitch_coherence": SubScore("pitch_coherence", "pitch closeness at the seam, [0, 1]"),
    "loudness_coherence": SubScore("loudness_coherence", "loudness closeness at the seam, [0, 1]"),
    "key_continuity": SubScore("key_continuity", "chroma correlation input vs continuation"),
    "tempo_continuity": SubScore("tempo_continuity", "tempo continuity"),
    "level_continuity": SubScore("level_continuity", "level continuity"),
    "timbre_continuity": SubScore("timbre_continuity", "timbre continuity"),
}
# What retrieval computes for every candidate, so what the engine can rank with (the seam jumps there
# are retrieval's prediction from stored features; the log has those measured on the rendered audio).
RANKABLE: tuple[str, ...] = ("relevance", "coherence", "seam_pitch_jump", "seam_loudness_jump")


@dataclass(frozen=True)
class FitConfig:
    """Settings of the fit and its evaluation.

    Attributes:
        l2: penalty ``l2 * ||w||^2`` on the standardised weights (>= 0; choix's ``alpha``).
        n_folds: folds that leave raters out (fewer when there are fewer raters; >= 2).
        n_bootstrap: resamples of raters per interval.
        confidence: coverage of the intervals.
        seed: folds' tie-breaks, learning-curve subsamples and bootstrap; same log, same numbers.
        learning_curve: training sizes (rankings) of the learning curve; those above the smallest
            training fold are replaced by it. Empty: no curve.
        max_iter: L-BFGS iterations.
        subscores: restrict the fit to these sub-scores (None: every one the log carries).
    """

    l2: float = 1.0
    n_folds: int = 5
    n_bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    learning_curve: tuple[int, ...] = (10, 25, 50, 100, 200, 400, 800, 1600)
    max_iter: int = 500
    subscores: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.l2, (int, float)) or not math.isfinite(self.l2) or self.l2 < 0:
            raise EnsembleError(f"l2 = {self.l2!r}; allowed: a finite number >= 0")
        if not isinstance(self.n_folds, int) or self.n_folds < 2:
            raise EnsembleError(f"n_folds = {self.n_folds!r}; allowed: an integer >= 2")
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise EnsembleError(f"max_iter = {self.max_iter!r}; allowed: an integer >= 1")
        if any(not isinstance(n, int) or n < 2 for n in self.learning_curve):
            raise EnsembleError(f"learning_curve = {self.learning_curve!r}; allowed: integers >= 2")
        if self.subscores is not None:
            unknown = [s for s in self.subscores if s not in SUBSCORES]
            if unknown or not self.subscores:
                raise EnsembleError(f"subscores {list(self.subscores)}: unknown {unknown}; allowed: a "
                                    f"non-empty subset of {list(SUBSCORES)}")
        SummaryConfig(n_bootstrap=self.n_bootstrap, confidence=self.confidence, seed=self.seed)  # checks

    @property
    def summary(self) -> SummaryConfig:
        return SummaryConfig(n_bootstrap=self.n_bootstrap, confidence=self.confidence, seed=self.seed)


# --------------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class Rankings:
    """Logged rankings as padded arrays, items of each ranking sorted best first (human rank 1 first).

    Attributes:
        features: [R, Kmax, F] sub-score features (NaN where a seam jump is undefined; padding 0).
        valid: [R, Kmax] bool, which slots hold a candidate (padding at the end of a row).
        composite: [R, Kmax] the logged hand-set composite of each candidate.
        rater: [R] rater id of each ranking.
        submission: [R] submission id of each ranking.
        names: the F sub-scores, in :data:`SUBSCORES` order.
        left_out: sub-score -> why it was left out.
        rows_used: log rows of the rankings kept.
        rows_skipped: log rows not used (K = 1 submissions, and what the reader dropped).
        undefined: sub-score -> cells that were undefined (seam jumps with an unvoiced side).
    """

    features: np.ndarray
    valid: np.ndarray
    composite: np.ndarray
    rater: np.ndarray
    submission: np.ndarray
    names: tuple[str, ...]
    left_out: dict[str, str] = field(default_factory=dict)
    rows_used: int = 0
    rows_skipped: int = 0
    undefined: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.valid.shape[0])

    def subset(self, idx: np.ndarray) -> Rankings:
        """The rankings ``idx`` ([m] int) only."""
        return Rankings(self.features[idx], self.valid[idx], self.composite[idx], self.rater[idx],
                        self.submission[idx], self.names, self.left_out, int(self.valid[idx].sum()), 0,
                        self.undefined)


def read_logs(paths: Sequence[str | os.PathLike]) -> tuple[pd.DataFrame, list[dict]]:
    """Read ratings logs into one frame (log order), and what each file was.

    Args:
        paths: one or more ratings logs (older headers are read as they are, never upgraded).

    Returns:
        (frame, sources): the rows of every log, and per log ``{"path", "sha256", "rows"}``.

    Raises:
        EnsembleError: no path; a log missing, unreadable or corrupt (from :func:`read_ratings`).
    """
    import pandas as pd

    if not paths:
        raise EnsembleError("no ratings log given; pass one or more ratings.csv files")
    frames, sources = [], []
    for path in paths:
        frame = read_ratings(path)
        frames.append(frame)
        sources.append({"path": str(path), "sha256": sha256_file(path), "rows": int(len(frame)),
                        "rows_skipped_by_reader": int(frame.attrs.get("dropped_rows", 0))})
    out = pd.concat(frames, ignore_index=True)
    out.attrs["dropped_rows"] = sum(s["rows_skipped_by_reader"] for s in sources)
    return out, sources


def rankings_from_frame(frame: pd.DataFrame, *, subscores: Sequence[str] | None = None) -> Rankings:
    """The usable rankings of a ratings table, and which sub-scores had to be left out.

    A sub-score is left out when the log has no column for it, when its column is empty in some row
    (a row logged before the column existed; seam jumps excepted, whose empty cells mean undefined),
    when it is empty everywhere, or when it is constant over the rows used. Submissions with K = 1
    carry no ranking and are skipped.

    Args:
        frame: e.g. :func:`read_logs`' frame; needs ``submission_id``, ``rater_id``, ``k``,
            ``human_rank`` and ``composite``.
        subscores: consider only these (default: all of :data:`SUBSCORES`).

    Raises:
        EnsembleError: a needed column is missing, an unknown sub-score is asked for, or no submission
            with K >= 2 remains.
    """
    import pandas as pd

    needed = ("submission_id", "rater_id", "k", "human_rank", "composite")
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise EnsembleError(f"the ratings table lacks the columns {missing}; a ratings log has {list(needed)}")
    wanted = list(SUBSCORES) if subscores is None else list(subscores)
    unknown = [s for s in wanted if s not in SUBSCORES]
    if unknown:
        raise EnsembleError(f"unknown sub-scores {unknown}; allowed: {list(SUBSCORES)}")
    skipped = int(frame.attrs.get("dropped_rows", 0))
    keep = frame["k"].to_numpy() >= 2
    skipped += int((~keep).sum())
    frame = frame.loc[keep]
    if len(frame) == 0:
        raise EnsembleError("the ratings log holds no submission with K >= 2: nothing to fit")

    left_out: dict[str, str] = {}
    for name in SUBSCORES:
        if name not in wanted:
            left_out[name] = "not asked for (--subscores)"
    columns: dict[str, np.ndarray] = {}
    undefined: dict[str, int] = {}
    n_rows = len(frame)
    for name in wanted:
        sub = SUBSCORES[name]
        if sub.column not in frame.columns:
            left_out[name] = f"the log has no {sub.column!r} column"
            continue
        values = sub.feature(pd.to_numeric(frame[sub.column], errors="coerce").to_numpy(dtype=np.float64))
        empty = int((~np.isfinite(values)).sum())
        if empty == n_rows:
            left_out[name] = f"{sub.column!r} is empty in all {n_rows} rows"
            continue
        if empty and not sub.may_be_undefined:
            left_out[name] = (f"{sub.column!r} is empty in {empty} of {n_rows} rows (logged before the "
                              "column existed)")
            continue
        finite = values[np.isfinite(values)]
        if np.ptp(finite) == 0:
            left_out[name] = f"{sub.column!r} is constant ({finite[0]:g}) in every row: it cannot rank"
            continue
        columns[name] = values
        if empty:
            undefined[name] = empty
    names = tuple(n for n in SUBSCORES if n in columns)
    if not names:
        raise EnsembleError("no sub-score is usable in this log: " +
                            "; ".join(f"{k}: {v}" for k, v in left_out.items()))

    X = np.stack([columns[n] for n in names], axis=1) if names else np.zeros((n_rows, 0))  # [rows, F]
    sub_ids = frame["submission_id"].astype(str).to_numpy()
    order = np.lexsort((frame["human_rank"].to_numpy(), sub_ids))  # by submission, then best first
    _, starts = np.unique(sub_ids[order], return_index=True)  # contiguous runs, in id order
    counts = np.diff(np.append(starts, len(order)))
    R, K = len(starts), int(counts.max())
    slot = np.arange(len(order)) - np.repeat(starts, counts)  # position within its ranking
    row = np.repeat(np.arange(R), counts)
    features = np.zeros((R, K, len(names)))
    valid = np.zeros((R, K), bool)
    composite = np.zeros((R, K))
    features[row, slot] = X[order]
    valid[row, slot] = True
    composite[row, slot] = frame["composite"].to_numpy(dtype=np.float64)[order]
    rater = frame["rater_id"].astype(str).to_numpy()[order][starts]
    submission = sub_ids[order][starts]
    return Rankings(features, valid, composite, rater, submission, names, left_out, int(valid.sum()),
                    skipped, undefined)


def standardize(features: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation ([F] each) of each feature over the valid, defined cells.

    A feature with no spread gets std 1 (it then adds a constant, which no ranking sees).
    """
    F = features.shape[-1]
    mean, std = np.zeros(F), np.ones(F)
    for j in range(F):
        x = features[..., j][valid]
        x = x[np.isfinite(x)]
        if x.size:
            mean[j] = x.mean()
            s = x.std()
            std[j] = s if s > 0 else 1.0
    return mean, std


def _z(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardised features; undefined cells (NaN) at the mean (z = 0)."""
    z = (features - mean) / std
    return np.where(np.isfinite(z), z, 0.0)


# --------------------------------------------------------------------------------------------------
# the Plackett-Luce fit


def pl_objective(w: np.ndarray, X: np.ndarray, valid: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """Penalised Plackett-Luce negative log-likelihood of a linear utility, and its gradient.

    Args:
        w: [F] weights.
        X: [R, K, F] features of each ranking's items, best first.
        valid: [R, K] bool, padding (False) at the end of a row.
        l2: penalty ``l2 * ||w||^2``.

    Returns:
        (value, gradient [F]): ``-sum_r sum_j (u_rj - log sum_{l >= j} exp u_rl) + l2 ||w||^2``.
    """
    u = np.where(valid, X @ w, -np.inf)  # [R, K]
    with np.errstate(invalid="ignore"):
        lse = np.logaddexp.accumulate(u[:, ::-1], axis=1)[:, ::-1]  # [R, K] log sum over the rest
        value = -float(np.where(valid, u - lse, 0.0).sum()) + l2 * float(w @ w)
        K = u.shape[1]
        rest = np.triu(np.ones((K, K), bool))[None] & valid[:, :, None] & valid[:, None, :]  # [R, j, l]
        p = np.where(rest, np.exp(u[:, None, :] - lse[:, :, None]), 0.0)  # P(l chosen at step j)
    expected = p @ X  # [R, K, F]
    grad = -np.where(valid[..., None], X - expected, 0.0).sum(axis=(0, 1)) + 2.0 * l2 * w
    return value, grad


def fit_plackett_luce(X: np.ndarray, valid: np.ndarray, *, l2: float = 1.0, max_iter: int = 500,
                      w0: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Weights ``w`` [F] of the utility ``X @ w`` maximising the penalised PL likelihood (L-BFGS).

    Args:
        X: [R, K, F] features, each row's items best first.
        valid: [R, K] bool.
        l2: the penalty ``l2 * ||w||^2`` (>= 0). With ``l2 = 0`` and separable data the optimum is
            at infinity; L-BFGS then stops at ``max_iter``.
        max_iter: L-BFGS iterations.
        w0: start (default zeros).

    Returns:
        (w, info): info has ``converged``, ``iterations``, ``objective``, ``message``.

    Raises:
        EnsembleError: shapes that do not fit, non-finite features or a negative ``l2``.
    """
    from scipy.optimize import minimize

    X = np.asarray(X, dtype=np.float64)
    valid = np.asarray(valid, bool)
    if X.ndim != 3 or valid.shape != X.shape[:2]:
        raise EnsembleError(f"features must be [R, K, F] and valid [R, K]; got {X.shape} and {valid.shape}")
    if not np.isfinite(X[valid]).all():
        raise EnsembleError("features hold NaN or infinity; standardise them first (undefined cells -> 0)")
    if not math.isfinite(l2) or l2 < 0:
        raise EnsembleError(f"l2 = {l2}; allowed: finite and >= 0")
    start = np.zeros(X.shape[2]) if w0 is None else np.asarray(w0, dtype=np.float64)
    res = minimize(pl_objective, start, args=(X, valid, float(l2)), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": 1e-8, "ftol": 1e-12})
    return res.x, {"converged": bool(res.success), "iterations": int(res.nit), "objective": float(res.fun),
                   "message": str(res.message)}


def fit_weights(data: Rankings, config: FitConfig = FitConfig()) -> dict:
    """Standardise on ``data`` and fit; the weights in standardised and raw units.

    Returns:
        ``{"weights", "mean", "std"}`` (dicts by sub-score) and ``"optimiser"`` (:func:`fit_plackett_luce`'s info).
    """
    mean, std = standardize(data.features, data.valid)
    w, info = fit_plackett_luce(_z(data.features, mean, std), data.valid, l2=config.l2,
                                max_iter=config.max_iter)
    return {"weights": dict(zip(data.names, map(float, w), strict=True)),
            "mean": dict(zip(data.names, map(float, mean), strict=True)),
            "std": dict(zip(data.names, map(float, std), strict=True)), "optimiser": info}


def _utility(features: np.ndarray, fitted: Mapping[str, Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
    """[..., K] utility of [..., K, F] features under fitted ``{"weights", "mean", "std"}``."""
    w = np.array([fitted["weights"][n] for n in names])
    mean = np.array([fitted["mean"][n] for n in names])
    std = np.array([fitted["std"][n] for n in names])
    return _z(features, mean, std) @ w


# --------------------------------------------------------------------------------------------------
# folds and held-out evaluation


def rater_folds(raters: Sequence[str], n_folds: int) -> np.ndarray:
    """Fold of each ranking ([R] int in 0..n_folds-1), whole raters per fold (GroupKFold-style).

    Raters are dealt largest first to the fold with the fewest rankings so far (ties: the lower fold),
    raters of equal size in name order: deterministic, balanced, and no rater in two folds.

    Raises:
        EnsembleError: fewer raters than folds would need (fewer than 2).
    """
    raters = np.asarray(raters).astype(str)
    names, codes, counts = np.unique(raters, return_inverse=True, return_counts=True)
    if len(names) < 2:
        raise EnsembleError(f"held-out folds leave raters out: {len(names)} rater(s) in the log, need >= 2")
    n_folds = min(int(n_folds), len(names))
    load = np.zeros(n_folds, np.int64)
    fold_of = np.empty(len(names), np.int64)
    for g in sorted(range(len(names)), key=lambda g: (-counts[g], names[g])):
        f = int(np.argmin(load))
        fold_of[g] = f
        load[f] += counts[g]
    return fold_of[codes]


def _interval(values: np.ndarray, raters: np.ndarray, config: FitConfig, stream: int) -> dict:
    ok = np.isfinite(values)
    if not ok.any():
        return {"n": 0, "mean": None, "ci_low": None, "ci_high": None}
    low, high = rater_bootstrap_ci(values[ok], raters[ok], config.summary, stream)
    return {"n": int(ok.sum()), "mean": float(values[ok].mean()), "ci_low": low, "ci_high": high}


def _widened(interval: dict, factor: float) -> dict:
    """``interval`` with its two sides stretched by ``factor`` about its mean."""
    if interval["mean"] is None:
        return interval
    m = interval["mean"]
    return dict(interval, ci_low=m - factor * (m - interval["ci_low"]), ci_high=m + factor * (interval["ci_high"] - m))


def evaluate(data: Rankings, config: FitConfig = FitConfig(), *, learning_curve: bool = True) -> dict:
    """Held-out Kendall tau of the fitted utility, the hand-set composite and each sub-score.

    Every fold leaves its raters out of training; tau is per held-out ranking, between the score and
    the human order (1 = perfect agreement), and its interval resamples raters.

    Returns:
        ``{"folds": {...}, "tau": {"fitted", "hand-set composite", "<sub-score>", ...},
        "gain_over_hand_set": {...}, "learning_curve": [...], "confidence", "n_bootstrap"}``.

    Raises:
        EnsembleError: fewer than 2 raters.
    """
    folds = rater_folds(data.rater, config.n_folds)
    n_folds = int(folds.max()) + 1
    human = -np.tile(np.arange(data.valid.shape[1], dtype=np.float64), (data.n, 1))  # best first: higher
    tau_fit = np.full(data.n, np.nan)
    tau_sub = {n: np.full(data.n, np.nan) for n in data.names}
    for f in range(n_folds):
        train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        fitted = fit_weights(data.subset(train), config)
        u = _utility(data.features[test], fitted, data.names)
        tau_fit[test] = kendall_tau_rows(u, human[test], data.valid[test])
        z = _z(data.features[test], np.array([fitted["mean"][n] for n in data.names]),
               np.array([fitted["std"][n] for n in data.names]))
        for j, name in enumerate(data.names):
            sign = 1.0 if SUBSCORES[name].higher_is_better else -1.0
            tau_sub[name][test] = kendall_tau_rows(sign * z[..., j], human[test], data.valid[test])
    tau_hand = kendall_tau_rows(data.composite, human, data.valid)
    # Folds share training data, so the held-out scores of a fitted utility vary more than a bootstrap
    # of its held-out rankings says (measured here with noise raters: ~2x the variance). The intervals of
    # what was fitted are widened by the corrected resampled t-test's factor sqrt(1 + J n_test / n_train)
    # (Nadeau & Bengio 2003; 1.5 for 5 folds); the gain's as a whole (conservative).
    ratio = float(np.mean([(folds == f).sum() / max(1, (folds != f).sum()) for f in range(n_folds)]))
    widen = math.sqrt(1.0 + n_folds * ratio)
    tau = {"fitted": _widened(_interval(tau_fit, data.rater, config, 0), widen),
           "hand-set composite": _interval(tau_hand, data.rater, config, 1)}
    for j, name in enumerate(data.names):
        tau[name] = _interval(tau_sub[name], data.rater, config, 2 + j)
    result = {
        "interval": f"percentile bootstrap resampling raters; fitted and gain widened x{widen:.3f} about "
                    "the mean (Nadeau-Bengio correction for scores fitted on overlapping folds)",
        "folds": {"by": "rater_id", "n_folds": n_folds,
                  "raters": [sorted(set(data.rater[folds == f].tolist())) for f in range(n_folds)],
                  "rankings": [int((folds == f).sum()) for f in range(n_folds)]},
        "tau": tau,
        "gain_over_hand_set": _widened(_interval(tau_fit - tau_hand, data.rater, config, 100), widen),
        "confidence": config.confidence, "n_bootstrap": config.n_bootstrap,
        "learning_curve": _learning_curve(data, folds, human, config) if learning_curve else [],
    }
    return result


def _learning_curve(data: Rankings, folds: np.ndarray, human: np.ndarray, config: FitConfig) -> list[dict]:
    """Held-out tau (pooled over folds) after training on n rankings drawn from each training fold."""
    n_folds = int(folds.max()) + 1
    smallest = min(int((folds != f).sum()) for f in range(n_folds))
    sizes = sorted({min(n, smallest) for n in config.learning_curve})
    rng = np.random.default_rng([config.seed, 7])
    curve = []
    for n in sizes:
        taus = np.full(data.n, np.nan)
        for f in range(n_folds):
            train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
            pick = rng.choice(train, size=n, replace=False)
            fitted = fit_weights(data.subset(pick), config)
            taus[test] = kendall_tau_rows(_utility(data.features[test], fitted, data.names), human[test],
                                          data.valid[test])
        ok = np.isfinite(taus)
        curve.append({"n_rankings": int(n), "tau": float(taus[ok].mean()) if ok.any() else None})
    return curve


# --------------------------------------------------------------------------------------------------
# the weights file


def weights_version(subscores: Sequence[str], weights: Mapping[str, float], mean: Mapping[str, float],
                    std: Mapping[str, float]) -> str:
    """``"pl-" + 12 hex``: sha256 of the utility (sub-scores, weights, mean, std) as canonical JSON."""
    core = {"subscores": list(subscores), "weights": {k: float(weights[k]) for k in subscores},
            "mean": {k: float(mean[k]) for k in subscores}, "std": {k: float(std[k]) for k in subscores}}
    text = json.dumps(core, sort_keys=True, separators=(",", ":"))
    return "pl-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _data_sha256(sources: Sequence[Mapping[str, Any]]) -> str:
    """One sha256 for the data: of the logs' sha256s, in the order given."""
    return hashlib.sha256("\n".join(s["sha256"] for s in sources).encode("ascii")).hexdigest()


def fit_log(frame: pd.DataFrame, config: FitConfig = FitConfig(), *, sources: Sequence[Mapping] = (),
            learning_curve: bool = True) -> dict:
    """Fit the weights on every usable ranking and evaluate them held out: the weights document.

    Args:
        frame: the ratings (:func:`read_logs`).
        config: the fit's settings.
        sources: what :func:`read_logs` says of each log (path, sha256, rows).
        learning_curve: also compute the learning curve (one fit per size and fold).

    Returns:
        The JSON-ready document :func:`write_weights` writes (see the module docstring); its
        ``held_out`` is None, with ``held_out_note`` saying why, when there are fewer than 2 raters.

    Raises:
        EnsembleError: nothing usable in the log (see :func:`rankings_from_frame`).
    """
    t0 = time.perf_counter()
    data = rankings_from_frame(frame, subscores=config.subscores)
    fitted = fit_weights(data, config)
    version = weights_version(data.names, fitted["weights"], fitted["mean"], fitted["std"])
    n_raters = len(set(data.rater.tolist()))
    held_out, note = None, ""
    if n_raters >= 2:
        held_out = evaluate(data, config, learning_curve=learning_curve)
    else:
        note = f"not evaluated: {n_raters} rater in the log, held-out folds need >= 2"
    return {
        "format": WEIGHTS_FORMAT, "format_version": WEIGHTS_FORMAT_VERSION, "version": version,
        "model": "Plackett-Luce; utility = sum over sub-scores of weight * (value - mean) / std "
                 "(seam jumps as |semitones| and |dB|; undefined values at the mean)",
        "subscores": list(data.names),
        "weights": fitted["weights"], "mean": fitted["mean"], "std": fitted["std"],
        "subscores_left_out": data.left_out,
        "regularisation": {"kind": "L2", "l2": float(config.l2),
                           "objective": "sum over rankings of -log P_PL(ranking) + l2 * ||weights||^2 "
                                        "(standardised weights; choix's alpha)"},
        "optimiser": fitted["optimiser"],
        "data": {"logs": [dict(s) for s in sources], "sha256": _data_sha256(sources) if sources else None,
                 "rows_used": data.rows_used, "rankings_used": data.n, "raters": n_raters,
                 "rows_skipped": data.rows_skipped, "undefined_cells": data.undefined},
        "held_out": held_out, "held_out_note": note,
        "seed": config.seed, "fit_seconds": round(time.perf_counter() - t0, 3),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def write_weights(path: str | os.PathLike, document: Mapping[str, Any]) -> Path:
    """Write the weights document as JSON, atomically (whole or not at all)."""
    return write_json_atomic(path, dict(document))


@dataclass(frozen=True)
class Weights:
    """A loaded weights file: the fitted utility the engine ranks with.

    Attributes:
        version: ``"pl-..."`` hash of the utility (what rounds ranked with it record).
        subscores: the sub-scores it weighs.
        weights, mean, std: [F] each, in ``subscores`` order (standardised weights).
        path: where it was loaded from.
        held_out_tau: its held-out Kendall tau (mean), when the file has one.
    """

    version: str
    subscores: tuple[str, ...]
    weights: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    path: str = ""
    held_out_tau: float | None = None

    def utility(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """The utility of candidates given their sub-scores as the ratings log records them.

        Args:
            columns: log column name (``SUBSCORES[s].column``: ``relevance``, ``coherence``,
                ``seam_pitch_jump_cents`` signed cents, ``seam_loudness_jump_db`` signed dB, ...) -> an
                array; arrays broadcast together. NaN (undefined) counts as the training mean.

        Raises:
            EnsembleError: a sub-score these weights need is not given.
        """
        total = None
        for name, w, m, s in zip(self.subscores, self.weights, self.mean, self.std, strict=True):
            column = SUBSCORES[name].column
            if column not in columns:
                raise EnsembleError(f"weights {self.version} need {column!r}; given: {sorted(columns)}")
            z = (SUBSCORES[name].feature(columns[column]) - m) / s
            term = w * np.where(np.isfinite(z), z, 0.0)
            total = term if total is None else total + term
        return total


def load_weights(path: str | os.PathLike, *, available: Sequence[str] = RANKABLE) -> Weights:
    """Load and check a weights file written by ``python -m ensemble ratings fit``.

    Args:
        path: the JSON file.
        available: the sub-scores the caller can compute (the engine: :data:`RANKABLE`).

    Raises:
        EnsembleError: naming the file -- missing or unreadable; not JSON; not a weights file (format);
            a field missing or of the wrong type; weights fitted on sub-scores the caller cannot
            compute; a version hash that does not match the weights (edited or damaged).
    """
    path = Path(path)
    where = f"weights file {str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EnsembleError(f"{where} does not exist; fit one with `python -m ensemble ratings fit LOG "
                            "--out WEIGHTS.json`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EnsembleError(f"cannot read {where}: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EnsembleError(f"{where} is not valid JSON ({exc}); it is corrupt: refit it") from None
    if not isinstance(doc, dict) or doc.get("format") != WEIGHTS_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise EnsembleError(f"{where} has format {got!r}; allowed: {WEIGHTS_FORMAT!r} "
                            "(written by `python -m ensemble ratings fit`)")
    if doc.get("format_version") != WEIGHTS_FORMAT_VERSION:
        raise EnsembleError(f"{where} has format_version {doc.get('format_version')!r}; this version "
                            f"reads {WEIGHTS_FORMAT_VERSION}")
    subs = doc.get("subscores")
    if not isinstance(subs, list) or not subs or not all(isinstance(s, str) for s in subs):
        raise EnsembleError(f"{where}: 'subscores' must be a non-empty list of names, got {subs!r}")
    unknown = [s for s in subs if s not in SUBSCORES]
    if unknown:
        raise EnsembleError(f"{where}: unknown sub-scores {unknown}; allowed: {list(SUBSCORES)}")
    other = [s for s in subs if s not in available]
    if other:
        raise EnsembleError(f"{where} was fitted on sub-scores {subs}, of which {other} cannot be computed "
                            f"when ranking; allowed: a subset of {list(available)} (refit with "
                            f"--subscores {','.join(s for s in subs if s in available) or 'relevance,coherence'})")
    arrays = {}
    for key in ("weights", "mean", "std"):
        table = doc.get(key)
        if not isinstance(table, dict) or set(table) != set(subs):
            raise EnsembleError(f"{where}: {key!r} must map exactly the sub-scores {subs}, got {table!r}")
        values = []
        for s in subs:
            v = table[s]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise EnsembleError(f"{where}: {key}[{s!r}] = {v!r}; allowed: a finite number")
            if key == "std" and v <= 0:
                raise EnsembleError(f"{where}: std[{s!r}] = {v!r}; allowed: > 0")
            values.append(float(v))
        arrays[key] = tuple(values)
    version = weights_version(subs, doc["weights"], doc["mean"], doc["std"])
    if doc.get("version") != version:
        raise EnsembleError(f"{where}: its version {doc.get('version')!r} does not match its weights "
                            f"({version}): the file was edited or damaged; refit it")
    tau = None
    held = doc.get("held_out")
    if isinstance(held, dict):
        tau = (held.get("tau") or {}).get("fitted", {}).get("mean")
    return Weights(version, tuple(subs), arrays["weights"], arrays["mean"], arrays["std"], str(path),
                   tau if isinstance(tau, (int, float)) else None)


# --------------------------------------------------------------------------------------------------
# text


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def format_fit(document: Mapping[str, Any]) -> str:
    """Plain-text tables of a weights document: the weights, what was left out, held-out tau."""
    d = document
    data = d["data"]
    lines = [f"weights {d['version']}: Plackett-Luce over {len(d['subscores'])} sub-scores, "
             f"{data['rankings_used']} rankings ({data['rows_used']} rows) from {data['raters']} raters, "
             f"L2 {d['regularisation']['l2']:g}"]
    if data.get("rows_skipped"):
        lines.append(f"{data['rows_skipped']} rows skipped (K = 1 submissions, interrupted appends)")
    lines.append("")
    lines += _table(("sub-score", "weight (per std)", "mean", "std"),
                    [(s, f"{d['weights'][s]:+.3f}", f"{d['mean'][s]:.4g}", f"{d['std'][s]:.4g}")
                     for s in d["subscores"]])
    if d["subscores_left_out"]:
        lines.append("")
        lines.append("left out:")
        lines += [f"  {s}: {why}" for s, why in d["subscores_left_out"].items()]
    for s, n in (data.get("undefined_cells") or {}).items():
        lines.append(f"{s}: {n} undefined cells (unvoiced seam side) taken at the mean")
    held = d.get("held_out")
    lines.append("")
    if not held:
        lines.append(f"held out: {d.get('held_out_note') or 'not evaluated'}")
        return "\n".join(lines)
    pct = f"{100 * held['confidence']:g}%"
    lines.append(f"held out ({held['folds']['n_folds']} folds leaving raters out; {pct} intervals "
                 f"resampling raters, {held['n_bootstrap']} resamples): Kendall tau vs human rank")
    rows = [(name, t["n"], _fmt(t["mean"]), f"[{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}]")
            for name, t in held["tau"].items()]
    g = held["gain_over_hand_set"]
    rows.append(("gain: fitted - hand-set", g["n"], _fmt(g["mean"]), f"[{_fmt(g['ci_low'])}, {_fmt(g['ci_high'])}]"))
    lines += _table(("ranked by", "rankings", "tau", f"{pct} CI"), rows)
    if held.get("interval"):
        lines.append(f"(intervals: {held['interval']})")
    if held.get("learning_curve"):
        lines.append("")
        lines += _table(("training rankings", "held-out tau"),
                        [(p["n_rankings"], _fmt(p["tau"])) for p in held["learning_curve"]])
    return "\n".join(lines)


def ranking_line(weights: str, note: str = "") -> str:
    """One line on what ranks the app's rounds now: ``weights`` is ``Engine.weights`` (``"hand-set"`` or
    a version), ``note`` ``Engine.weights_note`` (why a configured weights file is not used)."""
    if weights == HAND_SET:
        line = "Rounds are ranked by the hand-set composite (alpha x relevance + beta x coherence)"
        return f"{line}: the configured weights are not used: {note}" if note else line + "."
    return f"Rounds are ranked by the fitted weights {weights} (ENSEMBLE_WEIGHTS)."


def weights_summary_text(frame: pd.DataFrame, *, ranking: str = "", min_rankings: int = MIN_RANKINGS,
                         min_raters: int = MIN_RATERS,
                         config: FitConfig = FitConfig(n_bootstrap=500, learning_curve=())) -> str:
    """The Results tab's words on learned weights: fitted weights and held-out tau, or why not yet.

    Fits on the log as it is (no learning curve; well under a second for thousands of rankings)
    once it holds ``min_rankings`` rankings (K >= 2) from ``min_raters`` raters; below that it says how
    many there are and how many are needed. ``ranking`` (:func:`ranking_line`) comes first.
    """
    head = (ranking + "\n" if ranking else "") + \
        "Learned weights (Plackett-Luce fit of the sub-scores to the logged rankings)"
    usable = frame.loc[frame["k"] >= 2] if len(frame) else frame
    n_rankings = int(usable["submission_id"].nunique()) if len(usable) else 0
    n_raters = int(usable["rater_id"].nunique()) if len(usable) else 0
    if n_rankings < min_rankings or n_raters < min_raters:
        return (f"{head}: too few rankings yet -- {n_rankings} ranking(s) from {n_raters} rater(s); "
                f"the weights are fitted and shown from {min_rankings} rankings by at least {min_raters} raters.")
    try:
        doc = fit_log(frame, config, learning_curve=False)
    except EnsembleError as exc:
        return f"{head}: cannot fit this log: {exc}"
    return f"{head}\n" + format_fit(doc)
