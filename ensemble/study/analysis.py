"""A study's analysis from its logs alone: screening, Plackett-Luce strengths, agreement, the composite's tau.

Every function is pure: rows in (``logs/ratings.csv`` as read by :func:`ensemble.study.store.read_log`),
numbers out. The independent unit is the **rater**: every interval resamples raters with their
submissions (:func:`ensemble.ratings.stats.bootstrap_by_group`), never single submissions.

* **Post-screening** (:func:`screen`): a rater who ranks the low anchor above the hidden reference in
  more than ``threshold`` of their rounds is flagged and, by default, left out of everything below.
* **Plackett-Luce** (:func:`plackett_luce`): one log-strength per condition label (``composite@1``,
  ..., ``reference``, ``anchor``) fitted to the full rankings (``choix.ilsr_rankings``), centred on
  0; ``share`` is exp(strength) normalised, the model's chance that the label is ranked first among
  all of them.
* **Kendall's W** (:func:`kendalls_w`) per round among the raters who ranked it (1 = they agree
  entirely), and its mean over rounds rated by at least two raters.
* **The composite's tau**: Kendall's tau between the system's composite rank and the listener's order of
  the same candidates (the first composite condition's, controls left out), per submission; its mean
  with an interval resampled by rater; beside it the **split-half human ceiling**: raters split at
  random into two halves, the tau between the halves' mean ranks of those candidates per round,
  averaged over rounds and splits -- how well one group of people predicts another, the most a
  ranking system can be expected to reach.

:func:`study_report` puts them together (what ``python -m ensemble study report`` and the app's
Results view show); :func:`format_report` writes it as text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ensemble.errors import EnsembleError
from ensemble.ratings.stats import (
    SummaryConfig,
    _table,  # the ratings summary's plain-text table layout
    bootstrap_by_group,
    kendall_tau_rows,
    rater_bootstrap_ci,
)
from ensemble.study.spec import ANCHOR, REFERENCE

__all__ = ["Ranked", "submissions", "screen", "plackett_luce", "kendalls_w", "split_half_ceiling",
           "study_report", "report_from_logs", "report_tables", "listening_summary", "format_report",
           "PL_ALPHA", "N_SPLITS"]

PL_ALPHA = 0.01  # I-LSR's regularisation: keeps a label that always wins (or loses) finite
N_SPLITS = 200  # random split-halves averaged for the human ceiling
DEFAULT_THRESHOLD = 0.15  # a log without rows names no threshold: the study file's default


@dataclass(frozen=True)
class Ranked:
    """One submission: each shown candidate's label, composite rank (None for a control or another
    ranking) and human rank (1 = best), in shown order."""

    submission_id: str
    rater_id: str
    round_id: str
    labels: tuple[str, ...]
    conditions: tuple[str, ...]
    roles: tuple[str, ...]
    composite: tuple[int | None, ...]
    human: tuple[int, ...]

    def order(self) -> list[str]:
        """Labels best first."""
        return [lab for _, lab in sorted(zip(self.human, self.labels, strict=True))]

    def rank_of(self, label: str) -> int | None:
        return self.human[self.labels.index(label)] if label in self.labels else None

    def rank_of_role(self, role: str) -> int | None:
        """The human rank of the (first) candidate of ``role`` (``reference``, ``anchor``), or None."""
        return self.human[self.roles.index(role)] if role in self.roles else None


def submissions(rows: Sequence[Mapping[str, str]]) -> list[Ranked]:
    """Complete submissions from rating rows (text cells), in log order."""
    by: dict[str, list[Mapping[str, str]]] = {}
    for r in rows:
        by.setdefault(r["submission_id"], []).append(r)
    out = []
    for sid, rs in by.items():
        if len(rs) != int(rs[0]["n_shown"]):
            continue  # an interrupted append
        rs = sorted(rs, key=lambda r: int(r["shown_position"]))
        out.append(Ranked(sid, rs[0]["rater_id"], rs[0]["round_id"], tuple(r["label"] for r in rs),
                          tuple(r["condition"] for r in rs),
                          tuple(r.get("role") or ("system" if r["condition"] not in (REFERENCE, ANCHOR)
                                                  else r["condition"]) for r in rs),
                          tuple(int(r["composite_rank"]) if str(r["composite_rank"]).strip() else None for r in rs),
                          tuple(int(r["human_rank"]) for r in rs)))
    return out


def screen(subs: Sequence[Ranked], threshold: float) -> dict[str, Any]:
    """Per rater: in how many rounds the anchor was ranked above the reference, and the flag.

    Returns:
        ``{threshold, raters: [{rater_id, rounds, anchor_above_reference, share, flagged}],
        n_raters, n_passed, pass_rate}`` (pass_rate None without raters).
    """
    per: dict[str, list[bool]] = {}
    for s in subs:
        a, r = s.rank_of_role(ANCHOR), s.rank_of_role(REFERENCE)
        if a is None or r is None:
            continue
        per.setdefault(s.rater_id, []).append(a < r)
    raters = []
    for rid, flips in per.items():
        share = sum(flips) / len(flips)
        raters.append({"rater_id": rid, "rounds": len(flips), "anchor_above_reference": int(sum(flips)),
                       "share": round(share, 4), "flagged": share > threshold})
    passed = sum(not r["flagged"] for r in raters)
    return {"threshold": threshold, "raters": raters, "n_raters": len(raters), "n_passed": passed,
            "pass_rate": passed / len(raters) if raters else None}


def plackett_luce(rankings: Sequence[Sequence[str]], items: Sequence[str], *, alpha: float = PL_ALPHA
                  ) -> np.ndarray:
    """Plackett-Luce log-strengths [len(items)] (centred on 0) of full rankings (best first).

    Raises:
        EnsembleError: a ranking names a label that is not in ``items``.
    """
    import choix

    index = {lab: i for i, lab in enumerate(items)}
    data = []
    for r in rankings:
        try:
            data.append(tuple(index[lab] for lab in r))
        except KeyError as exc:
            raise EnsembleError(f"ranking {list(r)} names {exc.args[0]!r}, not one of {list(items)}") from None
    if not data:
        return np.full(len(items), np.nan)
    theta = np.asarray(choix.ilsr_rankings(len(items), data, alpha=alpha), dtype=np.float64)
    return theta - theta.mean()


def kendalls_w(ranks: np.ndarray) -> float | None:
    """Kendall's W of ``ranks`` [m raters, n items] (each row a ranking 1..n without ties); None for
    fewer than two raters or items."""
    ranks = np.asarray(ranks, dtype=np.float64)
    m, n = ranks.shape
    if m < 2 or n < 2:
        return None
    totals = ranks.sum(axis=0)
    s = float(((totals - totals.mean()) ** 2).sum())
    return 12.0 * s / (m * m * (n ** 3 - n))


def _tau_labels(sub: Ranked, condition: str) -> tuple[list[str], list[int], list[int]]:
    keep = [i for i, c in enumerate(sub.conditions) if c == condition and sub.composite[i] is not None]
    return ([sub.labels[i] for i in keep], [sub.composite[i] for i in keep], [sub.human[i] for i in keep])


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b of two scorings of the same items (None where undefined), by
    :func:`ensemble.ratings.stats.kendall_tau_rows`."""
    if len(x) < 2:
        return None
    t = float(kendall_tau_rows(np.asarray([x], float), np.asarray([y], float))[0])
    return t if math.isfinite(t) else None


def split_half_ceiling(subs: Sequence[Ranked], condition: str, *, n_splits: int = N_SPLITS,
                       seed: int = 0) -> dict[str, Any]:
    """The split-half human ceiling (see the module docstring) over the candidates of ``condition``.

    Returns:
        ``{mean, n_splits, n_raters}``; mean None with fewer than two raters or no round rated in
        both halves.
    """
    raters = sorted({s.rater_id for s in subs})
    if len(raters) < 2:
        return {"mean": None, "n_splits": 0, "n_raters": len(raters)}
    by_round: dict[str, list[Ranked]] = {}
    for s in subs:
        by_round.setdefault(s.round_id, []).append(s)
    rng = np.random.default_rng([seed, 7])
    means = []
    for _ in range(n_splits):
        perm = rng.permutation(len(raters))
        half_a = {raters[i] for i in perm[:len(raters) // 2]}
        taus = []
        for rs in by_round.values():
            a = [s for s in rs if s.rater_id in half_a]
            b = [s for s in rs if s.rater_id not in half_a]
            if not a or not b:
                continue
            labels = _tau_labels(rs[0], condition)[0]
            if len(labels) < 2:
                continue
            ma = [np.mean([s.rank_of(lab) for s in a]) for lab in labels]
            mb = [np.mean([s.rank_of(lab) for s in b]) for lab in labels]
            t = kendall_tau(ma, mb)
            if t is not None:
                taus.append(t)
        if taus:
            means.append(float(np.mean(taus)))
    return {"mean": float(np.mean(means)) if means else None, "n_splits": len(means), "n_raters": len(raters)}


def _items(subs: Sequence[Ranked]) -> list[str]:
    """Labels, the systems' first (sorted), then the reference's, then the anchor's."""
    role = {lab: r for s in subs for lab, r in zip(s.labels, s.roles, strict=True)}
    order = {"system": 0, REFERENCE: 1, ANCHOR: 2}
    return sorted(role, key=lambda lab: (order.get(role[lab], 0), lab))


def study_report(rows: Sequence[Mapping[str, str]], *, threshold: float, tau_condition: str,
                 include_flagged: bool = False, config: SummaryConfig = SummaryConfig(),
                 study: str = "") -> dict[str, Any]:
    """Everything the study's Results show, from its rating rows (see the module docstring).

    Args:
        rows: ``logs/ratings.csv`` rows (text cells).
        threshold: the screening threshold (share of rounds with the anchor above the reference).
        tau_condition: the condition whose composite ranks the tau compares with the listeners'.
        include_flagged: keep flagged raters in the analysis (default: leave them out).
        config: bootstrap resamples, coverage and seed.

    Returns:
        A JSON-ready dict: ``study, n_submissions, n_raters, screening, included_raters,
        excluded_raters, strengths {items, theta, share, ci_low, ci_high, n_rankings},
        kendalls_w {mean, per_round}, composite_tau {condition, n, n_raters, mean, ci_low, ci_high},
        human_ceiling {mean, n_splits, n_raters}, confidence, n_bootstrap``.
    """
    all_subs = submissions(rows)
    screening = screen(all_subs, threshold)
    flagged = {r["rater_id"] for r in screening["raters"] if r["flagged"]}
    subs = [s for s in all_subs if include_flagged or s.rater_id not in flagged]
    included = sorted({s.rater_id for s in subs})
    by_rater: dict[str, list[Ranked]] = {}
    for s in subs:
        by_rater.setdefault(s.rater_id, []).append(s)
    groups = [by_rater[r] for r in included]

    items = _items(all_subs)
    theta = plackett_luce([s.order() for s in subs], items)
    low, high = bootstrap_by_group(groups, lambda gs: plackett_luce([s.order() for g in gs for s in g], items),
                                   config, stream=101) if subs else (None, None)
    share = np.exp(theta) / np.exp(theta).sum() if subs else theta

    per_round = []
    rounds: dict[str, list[Ranked]] = {}
    for s in subs:
        rounds.setdefault(s.round_id, []).append(s)
    for rid in sorted(rounds):
        rs = rounds[rid]
        labels = sorted(rs[0].labels)
        w = kendalls_w(np.array([[s.rank_of(lab) for lab in labels] for s in rs]))
        per_round.append({"round_id": rid, "n_raters": len({s.rater_id for s in rs}), "w": w})
    ws = [p["w"] for p in per_round if p["w"] is not None]

    def taus_of(s: Ranked) -> list[float]:
        _, comp, hum = _tau_labels(s, tau_condition)
        t = kendall_tau(comp, hum)
        return [] if t is None else [t]

    tau_groups = [[t for s in g for t in taus_of(s)] for g in groups]
    taus = [t for g in tau_groups for t in g]
    tau_raters = [r for r, g in zip(included, tau_groups, strict=True) for _ in g]
    tau_mean = float(np.mean(taus)) if taus else None
    t_low, t_high = rater_bootstrap_ci(taus, tau_raters, config, stream=102) if taus else (None, None)

    def clean(x):
        if x is None:
            return None
        if isinstance(x, np.ndarray):
            return [None if not math.isfinite(v) else round(float(v), 6) for v in x]
        return None if not math.isfinite(float(x)) else round(float(x), 6)

    return {
        "study": study, "n_submissions": len(all_subs), "n_raters": len({s.rater_id for s in all_subs}),
        "screening": screening, "include_flagged": include_flagged, "included_raters": included,
        "excluded_raters": sorted(flagged) if not include_flagged else [],
        "strengths": {"items": items, "theta": clean(theta), "share": clean(share), "ci_low": clean(low),
                      "ci_high": clean(high), "n_rankings": len(subs)},
        "kendalls_w": {"mean": clean(np.mean(ws)) if ws else None,
                       "per_round": [{**p, "w": clean(p["w"])} for p in per_round]},
        "composite_tau": {"condition": tau_condition, "n": sum(len(g) for g in tau_groups),
                          "n_raters": len(groups), "mean": clean(tau_mean), "ci_low": clean(t_low),
                          "ci_high": clean(t_high)},
        "human_ceiling": split_half_ceiling(subs, tau_condition, seed=config.seed),
        "confidence": config.confidence, "n_bootstrap": config.n_bootstrap,
    }


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _interval(low: float | None, high: float | None, n_raters: int) -> str:
    if n_raters < 2 or low is None:
        return "undefined (fewer than 2 raters)"
    return f"[{_f(low)}, {_f(high)}]"


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def listening_summary(rows: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Per rater, from the listening log: rounds with events, events, the media seconds their pages
    reported heard and the seconds the server's clock credited (``credited_s``), and the heard events
    the clock cut short by more than 0.05 s."""
    per: dict[str, dict[str, Any]] = {}
    for r in rows:
        d = per.setdefault(r["rater_id"], {"rater_id": r["rater_id"], "rounds": set(), "events": 0,
                                           "reported_s": 0.0, "credited_s": 0.0, "cut_events": 0})
        d["rounds"].add(r["round_id"])
        d["events"] += 1
        if r["event"] in ("progress", "pause", "ended"):
            reported = float(r["media_to_s"]) - float(r["media_from_s"])
            credited = float(r["credited_s"] or 0.0)
            d["reported_s"] += reported
            d["credited_s"] += credited
            d["cut_events"] += int(reported - credited > 0.05)
    return [{**d, "rounds": len(d["rounds"]), "reported_s": round(d["reported_s"], 3),
             "credited_s": round(d["credited_s"], 3)} for d in per.values()]


def _one(rows: Sequence[Mapping[str, str]], column: str, what: str) -> str | None:
    values = sorted({r[column] for r in rows})
    if len(values) > 1:
        raise EnsembleError(f"the ratings log mixes {what}: {column} takes the values {values}; report one "
                            "study version at a time")
    return values[0] if values else None


def report_from_logs(ratings: Sequence[Mapping[str, str]], listening: Sequence[Mapping[str, str]], *,
                     config: SummaryConfig | None = None, include_flagged: bool = False,
                     study: str = "") -> dict[str, Any]:
    """:func:`study_report` of a study's released logs alone (what ``python -m ensemble study report``
    and the app's Results tab show): the study, its version, the screening threshold and the tau
    condition are read from the rating rows; the listening log adds what the server's clock credited.

    Args:
        ratings: ``ratings.csv`` rows (text cells, :data:`ensemble.study.store.REPORT_RATING_COLUMNS`).
        listening: ``listening.csv`` rows (:data:`ensemble.study.store.REPORT_LISTENING_COLUMNS`).
        study: the study's name where the log has no rows yet.

    Raises:
        EnsembleError: rows of more than one study or study version, threshold or tau condition.
    """
    name = _one(ratings, "study", "studies") or study
    version = _one(ratings, "study_sha256", f"versions of study {name!r}")
    threshold = _one(ratings, "screening_threshold", "screening thresholds")
    tau = _one(ratings, "tau_condition", "tau conditions")
    report = study_report(ratings, threshold=float(threshold) if threshold is not None else DEFAULT_THRESHOLD,
                          tau_condition=tau or "", include_flagged=include_flagged,
                          config=config or SummaryConfig(), study=name)
    matched = [str(r["loudness_matched"]) in ("True", "1", "true") for r in ratings]
    report["study_sha256"] = version
    report["playback"] = {"rows": len(matched), "loudness_matched": int(sum(matched))}
    report["listening"] = listening_summary([r for r in listening if not name or r["study"] == name])
    return report


def report_tables(report: Mapping[str, Any]) -> dict[str, tuple[tuple[str, ...], list[tuple[str, ...]]]]:
    """The report's tables as text cells: name -> (header, rows). :func:`format_report` prints them,
    ``study report`` writes each as ``report/<name>.csv`` and the Results tab shows them."""
    r = report
    pct = f"{100 * r['confidence']:g}%"
    sc, s, w = r["screening"], r["strengths"], r["kendalls_w"]
    n_inc = len(r["included_raters"])
    t, c = r["composite_tau"], r["human_ceiling"]
    return {
        "screening": (("rater", "rounds", "anchor above reference", "share", "flagged"),
                      [(x["rater_id"], str(x["rounds"]), str(x["anchor_above_reference"]),
                        f"{100 * x['share']:.0f}%", "yes" if x["flagged"] else "no") for x in sc["raters"]]),
        "strengths": (("condition", "log-strength", f"{pct} interval", "P(first)"),
                      [(item, _f(s["theta"][i]),
                        _interval(None if s["ci_low"] is None else s["ci_low"][i],
                                  None if s["ci_high"] is None else s["ci_high"][i], n_inc),
                        _f(s["share"][i])) for i, item in enumerate(s["items"])]),
        "agreement": (("round", "raters", "Kendall's W"),
                      [(p["round_id"], str(p["n_raters"]), _f(p["w"])) for p in w["per_round"]]),
        "tau": (("condition", "tau mean", f"{pct} CI (by rater)", "submissions", "raters", "human ceiling"),
                [(t["condition"], _f(t["mean"]), _interval(t["ci_low"], t["ci_high"], t["n_raters"]), str(t["n"]),
                  str(t["n_raters"]), _f(c["mean"]))] if r["n_submissions"] else []),
        "listening": (("rater", "rounds", "events", "reported heard s", "credited s", "events cut by the clock"),
                      [(x["rater_id"], str(x["rounds"]), str(x["events"]), f"{x['reported_s']:.1f}",
                        f"{x['credited_s']:.1f}", str(x["cut_events"])) for x in r.get("listening", [])]),
    }


def format_report(report: Mapping[str, Any]) -> str:
    """Plain-text tables of :func:`study_report` (the CLI prints it, the app shows it)."""
    r = report
    pct = f"{100 * r['confidence']:g}%"
    sc = r["screening"]
    tables = report_tables(r)
    lines = [f"study {r['study']}: {_n(r['n_submissions'], 'submission')} from {_n(r['n_raters'], 'rater')}"]
    if r.get("study_sha256"):
        lines[0] += f" (study file sha256 {r['study_sha256'][:12]})"
    if not r["n_submissions"]:
        return "\n".join(lines + ["no complete submissions yet"])
    pb = r.get("playback")
    if pb:
        lines.append(f"playback loudness-matched in {pb['loudness_matched']} of {_n(pb['rows'], 'rating row')}")
    pr = sc["pass_rate"]
    lines.append(f"post-screening (anchor ranked above the reference in more than {100 * sc['threshold']:g}% of "
                 f"a rater's rounds): {sc['n_passed']} of {_n(sc['n_raters'], 'rater')} pass "
                 f"(pass rate {'-' if pr is None else f'{100 * pr:.0f}%'})"
                 + ("; flagged raters kept" if r["include_flagged"] else
                    f"; left out: {', '.join(r['excluded_raters']) or 'none'}"))
    lines.append("")
    lines += _table(*tables["screening"])
    s = r["strengths"]
    n_inc = len(r["included_raters"])
    lines += ["", f"Plackett-Luce strengths ({_n(s['n_rankings'], 'ranking')} of {_n(n_inc, 'rater')}; {pct} "
                  f"intervals resampled by rater, {r['n_bootstrap']} resamples)"]
    lines += _table(*tables["strengths"])
    w = r["kendalls_w"]
    rated = [p for p in w["per_round"] if p["w"] is not None]
    lines += ["", f"Kendall's W (agreement among the raters of a round, 1 = complete): mean {_f(w['mean'])} over "
                  f"{_n(len(rated), 'round')} with >= 2 raters"]
    lines += [f"  {p['round_id']}: W {_f(p['w'])} ({_n(p['n_raters'], 'rater')})" for p in rated]
    t, c = r["composite_tau"], r["human_ceiling"]
    lines += ["", f"composite vs listeners, Kendall tau ({t['condition']} candidates): mean {_f(t['mean'])}, "
                  f"{pct} CI {_interval(t['ci_low'], t['ci_high'], t['n_raters'])} resampled by rater "
                  f"(n = {_n(t['n'], 'submission')}, {_n(t['n_raters'], 'rater')})",
              f"split-half human ceiling: tau {_f(c['mean'])} ({_n(c['n_splits'], 'random split')} of "
              f"{_n(c['n_raters'], 'rater')})"]
    if tables["listening"][1]:
        lines += ["", "Listening (the server's clock credits at most the time it saw pass between play and pause)"]
        lines += _table(*tables["listening"])
    return "\n".join(lines)
