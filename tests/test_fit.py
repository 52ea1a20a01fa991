"""Fitting the composite's weights to logged rankings (ensemble.ratings.fit), and ranking with them.

Rankings are simulated on synthetic candidates by Plackett-Luce raters of a known utility (Gumbel
noise) or by noise raters; the likelihood is checked against finite differences and against choix on
one-hot features; the engine tests use the shipped assets.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau

from ensemble.errors import EnsembleError
from ensemble.ratings.fit import (
    HAND_SET,
    RANKABLE,
    SUBSCORES,
    FitConfig,
    fit_log,
    fit_plackett_luce,
    format_fit,
    load_weights,
    pl_objective,
    ranking_line,
    rankings_from_frame,
    rater_folds,
    read_logs,
    weights_summary_text,
    weights_version,
    write_weights,
)
from ensemble.ratings.log import (
    EARLIER_COLUMNS,
    RATINGS_COLUMNS,
    CandidateRating,
    Submission,
    append_submission,
    read_ratings,
)
from ensemble.ratings.stats import kendall_tau_rows, rater_bootstrap_ci

ROOT = Path(__file__).resolve().parents[1]
SHA = "ab" * 32
TRUE = {"relevance": 0.5, "coherence": 1.0, "seam_pitch_jump": -0.8, "seam_loudness_jump": -0.4}
FAST = FitConfig(n_bootstrap=200, learning_curve=(20, 60))


# ----------------------------------------------------------------------------- simulated raters


def candidate_pool(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """[n] synthetic candidates with the log's sub-score columns (some pitch jumps undefined)."""
    rel = rng.uniform(0.6, 0.95, n)
    coh = rng.uniform(0.4, 0.9, n)
    pj = rng.normal(0, 300, n)
    pj[rng.random(n) < 0.05] = np.nan  # an unvoiced side
    return pd.DataFrame({"relevance": rel, "coherence": coh, "composite": 0.8 * rel + 0.6 * coh,
                         "seam_pitch_jump_cents": pj, "seam_loudness_jump_db": rng.normal(0, 4, n)})


def true_utility(pool: pd.DataFrame) -> np.ndarray:
    feats = np.stack([SUBSCORES[n].feature(pool[SUBSCORES[n].column].to_numpy()) for n in RANKABLE], 1)
    mean, std = np.nanmean(feats, 0), np.nanstd(feats, 0)
    return np.nan_to_num((feats - mean) / std) @ np.array([TRUE[n] for n in RANKABLE])


def simulated_frame(rng: np.random.Generator, n_rankings: int, *, k: int = 5, per_rater: int = 5,
                    noise: bool = False, pool: pd.DataFrame | None = None) -> pd.DataFrame:
    """A ratings table of ``n_rankings`` submissions of K candidates by PL (or noise) raters."""
    pool = candidate_pool(rng, 400) if pool is None else pool
    u_all = true_utility(pool)
    rows = []
    for r in range(n_rankings):
        pick = rng.choice(len(pool), size=k, replace=False)
        u = rng.gumbel(size=k) + (0.0 if noise else u_all[pick])
        human = np.empty(k, int)
        human[np.argsort(-u)] = np.arange(1, k + 1)
        for i, j in enumerate(pick):
            rows.append({"submission_id": f"s{r:04d}", "rater_id": f"r{r // per_rater:03d}", "k": k,
                         "human_rank": int(human[i]), **pool.iloc[j].to_dict()})
    return pd.DataFrame(rows)


def cosine(doc: dict, pool: pd.DataFrame) -> float:
    """Cosine of fitted and true weights, both per the fit's standard deviations."""
    names = doc["subscores"]
    pool_std = {n: float(np.nanstd(SUBSCORES[n].feature(pool[SUBSCORES[n].column].to_numpy()))) for n in names}
    fitted = np.array([doc["weights"][n] for n in names])
    true = np.array([TRUE[n] / pool_std[n] * doc["std"][n] for n in names])
    return float(fitted @ true / np.linalg.norm(fitted) / np.linalg.norm(true))


# ----------------------------------------------------------------------------- the likelihood


def test_kendall_tau_rows_is_scipys_tau_b(rng):
    a = rng.normal(size=(60, 6))
    b = rng.integers(0, 3, size=(60, 6)).astype(float)  # ties
    valid = np.ones((60, 6), bool)
    valid[:20, 4:] = False  # padded rows
    got = kendall_tau_rows(a, b, valid)
    for r in range(60):
        m = valid[r]
        ref = kendalltau(a[r, m], b[r, m]).statistic
        assert (np.isnan(ref) and np.isnan(got[r])) or abs(got[r] - ref) < 1e-12


def test_likelihood_gradient_matches_finite_differences(rng):
    X = rng.normal(size=(40, 5, 3))
    valid = np.ones((40, 5), bool)
    valid[:8, 3:] = False
    w = rng.normal(size=3)
    _, grad = pl_objective(w, X, valid, 0.7)
    eps = 1e-6
    numeric = [(pl_objective(w + eps * e, X, valid, 0.7)[0] - pl_objective(w - eps * e, X, valid, 0.7)[0])
               / (2 * eps) for e in np.eye(3)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6)


def one_hot_rankings(rng, n_items=8, n_rankings=300, k=4):
    strength = rng.normal(size=n_items)
    data = []
    for _ in range(n_rankings):
        items = rng.choice(n_items, size=k, replace=False)
        data.append([int(i) for i in items[np.argsort(-(strength[items] + rng.gumbel(size=k)))]])
    X = np.zeros((n_rankings, k, n_items))
    for r, ranking in enumerate(data):
        X[r, np.arange(k), ranking] = 1.0  # one-hot feature per item: the utility is the item's strength
    return data, X, np.ones((n_rankings, k), bool)


@pytest.mark.parametrize("l2", [0.1, 1.0, 5.0])
def test_one_hot_fit_is_choix_opt_rankings(rng, l2):
    choix = pytest.importorskip("choix")
    data, X, valid = one_hot_rankings(rng)
    w, info = fit_plackett_luce(X, valid, l2=l2)
    assert info["converged"]
    np.testing.assert_allclose(w, choix.opt_rankings(8, data, alpha=l2), atol=1e-5)


def test_one_hot_fit_without_penalty_is_choix_ilsr_up_to_a_constant(rng):
    choix = pytest.importorskip("choix")
    data, X, valid = one_hot_rankings(rng)
    w, _ = fit_plackett_luce(X, valid, l2=1e-9, max_iter=2000)
    ref = choix.ilsr_rankings(8, data, alpha=0.0)
    np.testing.assert_allclose(w - w.mean(), ref - ref.mean(), atol=1e-4)


# ----------------------------------------------------------------------------- fit and evaluation


def test_recovers_known_weights_and_beats_the_hand_set_composite(rng):
    pool = candidate_pool(rng, 400)
    frame = simulated_frame(rng, 300, pool=pool)
    doc = fit_log(frame, FAST)
    assert doc["subscores"] == list(RANKABLE)
    assert cosine(doc, pool) >= 0.95
    held = doc["held_out"]
    assert held["tau"]["fitted"]["mean"] > held["tau"]["hand-set composite"]["mean"]
    assert held["gain_over_hand_set"]["ci_low"] > 0
    for name in ("fitted", "hand-set composite", *RANKABLE):  # every single sub-score is reported too
        t = held["tau"][name]
        assert t["n"] == 300 and t["ci_low"] <= t["mean"] <= t["ci_high"]
    curve = held["learning_curve"]
    assert [p["n_rankings"] for p in curve] == [20, 60] and all(-1 <= p["tau"] <= 1 for p in curve)
    assert doc["data"]["undefined_cells"]["seam_pitch_jump"] > 0  # unvoiced seams: at the mean
    assert "held out" in format_fit(doc)


def test_noise_raters_give_a_gain_interval_that_includes_zero(rng):
    doc = fit_log(simulated_frame(rng, 300, noise=True), FAST)
    gain = doc["held_out"]["gain_over_hand_set"]
    assert gain["ci_low"] <= 0.0 <= gain["ci_high"]


def test_folds_leave_raters_out(rng):
    frame = simulated_frame(rng, 103, per_rater=7)
    data = rankings_from_frame(frame)
    folds = rater_folds(data.rater, 5)
    for f in range(5):
        train, test = set(data.rater[folds != f]), set(data.rater[folds == f])
        assert test and not train & test  # no rater in both
    counts = np.bincount(folds)
    assert counts.max() - counts.min() <= 7  # balanced to within one rater
    doc = fit_log(frame, FAST, learning_curve=False)
    raters = doc["held_out"]["folds"]["raters"]
    assert sum(len(r) for r in raters) == len(set().union(*map(set, raters))) == 15
    with pytest.raises(EnsembleError, match="1 rater"):
        rater_folds(["solo"] * 10, 5)


def test_one_rater_fits_without_held_out_results(rng):
    frame = simulated_frame(rng, 40, per_rater=100)
    doc = fit_log(frame, FAST)
    assert doc["held_out"] is None and "1 rater" in doc["held_out_note"]


def test_rater_bootstrap_resamples_raters(rng):
    values = np.r_[np.full(50, 1.0), np.full(50, 0.0)]
    one_each = np.r_[np.zeros(50, int), np.ones(50, int)]  # two raters: wide interval
    every = np.arange(100)  # a hundred raters: narrow
    wide = rater_bootstrap_ci(values, one_each)
    narrow = rater_bootstrap_ci(values, every)
    assert wide[1] - wide[0] > 0.9 and narrow[1] - narrow[0] < 0.3


# ----------------------------------------------------------------------------- logs, old and new


def submission(rng, rater: str, k: int = 4, **fields) -> Submission:
    pool = candidate_pool(rng, k)
    human = rng.permutation(k) + 1
    cands = tuple(CandidateRating(
        shown_position=i + 1, composite_rank=i + 1, human_rank=int(human[i]), db_chunk_idx=i,
        composite=float(pool.composite[i]), relevance=float(pool.relevance[i]),
        coherence=float(pool.coherence[i]), lookback_s=8.0, transpose=0.0,
        seam_pitch_jump_cents=None if np.isnan(pool.seam_pitch_jump_cents[i]) else float(pool.seam_pitch_jump_cents[i]),
        seam_loudness_jump_db=float(pool.seam_loudness_jump_db[i])) for i in range(k))
    return Submission(rater_id=rater, session_id="s", input_sha256=SHA, input_seconds=10.0, target_seconds=20.0,
                      k=k, alpha=0.8, beta=0.6, blind=True, candidates=cands, **fields)


def write_log(path: Path, rng, n: int, **fields) -> Path:
    for i in range(n):
        append_submission(path, submission(rng, f"rater{i % 4}", **fields))
    return path


def as_earlier_log(path: Path, columns: tuple[str, ...]) -> None:
    """Rewrite the log at ``path`` with only ``columns`` (an earlier header)."""
    with path.open(newline="") as f:
        records = list(csv.reader(f))
    keep = [records[0].index(c) for c in columns]
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([[r[i] for i in keep] for r in records])


def test_the_log_records_the_weights_and_old_logs_read_it_empty(tmp_path, rng):
    path = write_log(tmp_path / "ratings.csv", rng, 2, weights="pl-0123456789ab")
    assert read_ratings(path)["weights"].tolist() == ["pl-0123456789ab"] * 8
    as_earlier_log(path, EARLIER_COLUMNS[0])  # from before the weights column
    assert read_ratings(path)["weights"].tolist() == [""] * 8
    append_submission(path, submission(rng, "bob", weights=HAND_SET))  # upgraded once, every row kept
    frame = read_ratings(path)
    assert list(frame.columns) == list(RATINGS_COLUMNS)
    assert frame["weights"].tolist() == [""] * 8 + [HAND_SET] * 4
    with pytest.raises(EnsembleError, match="weights has 201 characters"):
        append_submission(path, submission(rng, "bob", weights="x" * 201))


def test_the_oldest_log_fits_and_says_what_it_left_out(tmp_path, rng):
    path = write_log(tmp_path / "ratings.csv", rng, 12)
    as_earlier_log(path, EARLIER_COLUMNS[-1])  # before the timbre, the playback and the weights
    frame, sources = read_logs([path])
    assert sources[0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and sources[0]["rows"] == 48
    doc = fit_log(frame, FAST, sources=sources)
    assert doc["subscores"] == list(RANKABLE)
    assert doc["subscores_left_out"]["key_continuity"] == "the log has no 'key_continuity' column"
    assert doc["data"]["rows_used"] == 48 and doc["data"]["rankings_used"] == 12
    assert doc["data"]["sha256"] == hashlib.sha256(sources[0]["sha256"].encode()).hexdigest()


def test_a_sub_score_missing_from_older_rows_is_left_out_not_the_rows(rng):
    frame = simulated_frame(rng, 40)
    frame["key_continuity"] = rng.uniform(0, 1, len(frame))
    frame.loc[:59, "key_continuity"] = np.nan  # the first 12 submissions predate the column
    frame.loc[frame["submission_id"] == "s0003", "seam_loudness_jump_db"] = np.nan  # undefined: kept
    data = rankings_from_frame(frame)
    assert data.left_out["key_continuity"] == ("'key_continuity' is empty in 60 of 200 rows (logged before "
                                               "the column existed)")
    assert "seam_loudness_jump" in data.names and data.undefined["seam_loudness_jump"] == 5
    assert data.n == 40 and data.rows_used == 200
    frame["coherence"] = 0.5
    assert "constant" in rankings_from_frame(frame).left_out["coherence"]
    one = frame.assign(k=1)
    with pytest.raises(EnsembleError, match="no submission with K >= 2"):
        rankings_from_frame(one)
    with pytest.raises(EnsembleError, match=r"lacks the columns \['human_rank'\]"):
        rankings_from_frame(frame.drop(columns="human_rank"))


# ----------------------------------------------------------------------------- the weights file


@pytest.fixture(scope="module")
def weights_doc() -> dict:
    """A fitted weights document (simulated PL raters)."""
    return fit_log(simulated_frame(np.random.default_rng(5), 120), FAST)


def test_weights_file_round_trips_with_its_version(tmp_path, weights_doc):
    path = write_weights(tmp_path / "w.json", weights_doc)
    w = load_weights(path)
    assert w.version == weights_doc["version"] == weights_version(
        weights_doc["subscores"], weights_doc["weights"], weights_doc["mean"], weights_doc["std"])
    assert w.version.startswith("pl-") and w.subscores == tuple(RANKABLE)
    doc = json.loads(path.read_text())
    for key in ("data", "subscores_left_out", "regularisation", "held_out", "version"):
        assert key in doc
    assert doc["regularisation"]["l2"] == FAST.l2 and doc["held_out"]["folds"]["by"] == "rater_id"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.json"]  # no temporary file left
    u = w.utility({"relevance": np.array([0.9, 0.7]), "coherence": np.array([0.8, 0.5]),
                   "seam_pitch_jump_cents": np.array([0.0, np.nan]), "seam_loudness_jump_db": np.array([0.0, 9.0])})
    assert u.shape == (2,) and u[0] > u[1]


def test_bad_weights_files_are_refused_with_clear_messages(tmp_path, weights_doc):
    with pytest.raises(EnsembleError, match=r"weights file '.*nope.json' does not exist"):
        load_weights(tmp_path / "nope.json")
    (tmp_path / "corrupt.json").write_text('{"format": "ensemble.weights", "weig')
    with pytest.raises(EnsembleError, match="is not valid JSON"):
        load_weights(tmp_path / "corrupt.json")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(EnsembleError, match="has format 'something-else'; allowed: 'ensemble.weights'"):
        load_weights(tmp_path / "other.json")
    edited = dict(weights_doc, weights=dict(weights_doc["weights"], coherence=9.0))
    write_weights(tmp_path / "edited.json", edited)
    with pytest.raises(EnsembleError, match="does not match its weights .* edited or damaged"):
        load_weights(tmp_path / "edited.json")
    subs = [*weights_doc["subscores"], "key_continuity"]
    table = {k: dict(weights_doc[k], key_continuity=v) for k, v in (("weights", 0.3), ("mean", 0.5), ("std", 0.1))}
    other = dict(weights_doc, subscores=subs, **table, version=weights_version(subs, table["weights"],
                                                                               table["mean"], table["std"]))
    write_weights(tmp_path / "other_subs.json", other)
    with pytest.raises(EnsembleError, match=r"fitted on sub-scores .* of which \['key_continuity'\] cannot be "
                                            r"computed when ranking; allowed: a subset of"):
        load_weights(tmp_path / "other_subs.json")
    assert load_weights(tmp_path / "other_subs.json", available=list(SUBSCORES)).subscores == tuple(subs)
    bad_std = dict(weights_doc, std=dict(weights_doc["std"], relevance=0.0))
    write_weights(tmp_path / "bad_std.json", bad_std)
    with pytest.raises(EnsembleError, match=r"std\['relevance'\] = 0.0; allowed: > 0"):
        load_weights(tmp_path / "bad_std.json")


# ----------------------------------------------------------------------------- the command line


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from ensemble.cli import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_fit_writes_the_weights_file(tmp_path, rng, capsys):
    logs = [write_log(tmp_path / "a.csv", rng, 20), write_log(tmp_path / "b.csv", rng, 20)]
    out = tmp_path / "w.json"
    code, stdout, err = run_cli(["ratings", "fit", *map(str, logs), "--out", str(out), "--bootstrap", "100"],
                                capsys)
    assert code == 0, err
    line = json.loads(stdout.strip().splitlines()[-1])
    assert line["version"] == load_weights(out).version and line["data"]["rankings_used"] == 40
    assert len(line["data"]["logs"]) == 2 and "held out" in stdout and "left out:" in stdout


def test_cli_fit_errors_exit_2_without_traceback_or_output(tmp_path, rng, capsys):
    log = write_log(tmp_path / "a.csv", rng, 8)
    out = tmp_path / "w.json"
    out.write_text("previous")  # a failed fit leaves an existing file as it was
    cases = [
        (["ratings", "fit", str(tmp_path / "missing.csv"), "--out", str(out)], "does not exist"),
        (["ratings", "fit", str(log), "--out", str(out), "--subscores", "relevance,loudness"],
         r"unknown \['loudness'\]"),
        (["ratings", "fit", str(log), "--out", str(out), "--folds", "1"], "n_folds = 1; allowed"),
        (["ratings", "fit", str(log), "--out", str(out), "--l2", "-1"], "l2 = -1.0; allowed"),
        (["ratings", "fit", str(log), "--out", str(tmp_path)], "is a folder"),
    ]
    for argv, message in cases:
        code, stdout, err = run_cli(argv, capsys)
        assert code == 2 and "Traceback" not in err and err.startswith("error: ")
        assert pytest.importorskip("re").search(message, err), err
        assert out.read_text() == "previous"
    (tmp_path / "garbage.csv").write_text("not,a,ratings,log\n1,2,3,4\n")
    code, _, err = run_cli(["ratings", "fit", str(tmp_path / "garbage.csv"), "--out", str(tmp_path / "n.json")],
                           capsys)
    assert code == 2 and "is not a ratings log" in err and not (tmp_path / "n.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.csv.lock", "garbage.csv", "w.json"]


# ----------------------------------------------------------------------------- the Results tab's text


def test_results_text_says_too_few_then_shows_weights(rng):
    few = simulated_frame(rng, 10)
    text = weights_summary_text(few, ranking=ranking_line(HAND_SET))
    assert "too few rankings yet -- 10 ranking(s) from 2 rater(s)" in text and "from 30 rankings" in text
    assert text.startswith("Rounds are ranked by the hand-set composite")
    text = weights_summary_text(simulated_frame(rng, 60))
    assert "weights pl-" in text and "held out" in text and "hand-set composite" in text
    assert "could not" in ranking_line(HAND_SET, "could not load x.json") and "pl-1" in ranking_line("pl-1")


# ----------------------------------------------------------------------------- the engine


@pytest.fixture(scope="module")
def engine_files():
    return dict(checkpoints_dir=str(ROOT / "checkpoints"), database_dir=str(ROOT / "assets" / "rag"),
                drums_dir=str(ROOT / "assets" / "drums"))


@pytest.fixture(scope="module")
def coherence_weights(tmp_path_factory) -> Path:
    """A weights file that ranks mostly by coherence and small seam jumps (not the composite's order)."""
    names = list(RANKABLE)
    w = {"relevance": 0.1, "coherence": 2.0, "seam_pitch_jump": -0.5, "seam_loudness_jump": -0.3}
    mean = {"relevance": 0.85, "coherence": 0.7, "seam_pitch_jump": 3.0, "seam_loudness_jump": 4.0}
    std = {"relevance": 0.05, "coherence": 0.1, "seam_pitch_jump": 3.0, "seam_loudness_jump": 4.0}
    doc = {"format": "ensemble.weights", "format_version": 1, "version": weights_version(names, w, mean, std),
           "subscores": names, "weights": w, "mean": mean, "std": std}
    return write_weights(tmp_path_factory.mktemp("weights") / "w.json", doc)


def test_engine_ranks_with_weights_and_records_their_version(tmp_path, engine_files, coherence_weights):
    from ensemble.audio import load_audio
    from ensemble.engine import Engine, EngineConfig
    from ensemble.extend import ExtendRequest, extend
    from ensemble.outputs import write_extension

    engine = Engine.load(EngineConfig(**engine_files, weights=str(coherence_weights)))
    weights = load_weights(coherence_weights)
    assert engine.weights == weights.version and engine.weights_note == ""
    clip = load_audio(sorted((ROOT / "assets" / "examples").glob("*.wav"))[0]).audio[: 4 * 16000]
    ext = extend(engine, clip, ExtendRequest(seconds=6.0, k=3, followers=("Bass",)))
    assert [c.weights for c in ext.candidates] == [weights.version] * 3
    out = write_extension(ext, tmp_path / "out")
    results = json.loads((out / "results.json").read_text())
    assert [c["weights"] for c in results["candidates"]] == [weights.version] * 3
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["weights"] for r in rows] == [weights.version] * 3

    # retrieval's order is the utility's (over retrieval's own scores), strict pass first
    from ensemble.rag import analyze_query, retrieve

    q = analyze_query(clip, engine.db, engine.leader)
    cands = retrieve(engine.db, q, 5)
    u = weights.utility({"relevance": np.array([c.relevance for c in cands]),
                         "coherence": np.array([c.coherence for c in cands]),
                         "seam_pitch_jump_cents": np.array([c.seam_pitch_jump_cents for c in cands]),
                         "seam_loudness_jump_db": np.array([c.seam_loudness_jump_db for c in cands])})
    strict = np.array([not c.fallback for c in cands])
    assert np.all(np.diff(u[strict]) <= 1e-4) and np.all(np.diff(u[~strict]) <= 1e-4)
    engine.db.utility = None  # the same database, hand-set: the composite's order
    default = retrieve(engine.db, q, 5)
    assert [c.weights for c in default] == [HAND_SET] * 5
    assert [c.chunk for c in default] != [c.chunk for c in cands]  # the weights did change the ranking


def test_default_engine_ranks_by_the_composite_as_before(engine_files):
    from ensemble.audio import load_audio
    from ensemble.engine import Engine, EngineConfig
    from ensemble.rag import analyze_query, retrieve

    engine = Engine.load(EngineConfig(**engine_files))
    assert engine.weights == HAND_SET and engine.db.utility is None and engine.config.weights is None
    clip = load_audio(sorted((ROOT / "assets" / "examples").glob("*.wav"))[0]).audio[: 6 * 16000]
    q = analyze_query(clip, engine.db, engine.leader)
    cands = retrieve(engine.db, q, 5)
    assert [c.weights for c in cands] == [HAND_SET] * 5
    strict = [c.composite for c in cands if not c.fallback]
    assert strict == sorted(strict, reverse=True)  # (tests/test_rag.py: equal to the reference loop)


def test_bad_weights_file_raises_at_load_or_falls_back_to_hand_set(tmp_path, engine_files, caplog):
    from ensemble.engine import Engine, EngineConfig

    (tmp_path / "corrupt.json").write_text("{")
    for name, message in (("missing.json", "does not exist"), ("corrupt.json", "is not valid JSON")):
        config = EngineConfig(**engine_files, weights=str(tmp_path / name))
        with pytest.raises(EnsembleError, match=message):
            Engine.load(config)
        with caplog.at_level(logging.WARNING, logger="ensemble.engine"):
            engine = Engine.load(config, bad_weights="hand-set")  # the app: keeps serving
        assert engine.weights == HAND_SET and message in engine.weights_note
        assert any(message in r.getMessage() for r in caplog.records)
        line = ranking_line(engine.weights, engine.weights_note)
        assert "hand-set composite" in line and "the configured weights are not used" in line and message in line
    with pytest.raises(EnsembleError, match="bad_weights 'ignore'; allowed: raise, hand-set"):
        Engine.load(EngineConfig(**engine_files), bad_weights="ignore")


def test_app_reads_the_weights_from_the_environment():
    pytest.importorskip("gradio")
    import app

    assert app.engine_config({"ENSEMBLE_WEIGHTS": "w.json"}).weights == "w.json"
    assert app.engine_config({}).weights is None


def test_cli_extend_refuses_a_bad_weights_file_before_any_work(tmp_path, capsys):
    clip = sorted((ROOT / "assets" / "examples").glob("*.wav"))[0]
    out = tmp_path / "out"
    code, _, err = run_cli(["extend", str(clip), "--seconds", "20", "--top-k", "2", "--out", str(out),
                            "--weights", str(tmp_path / "missing.json"),
                            "--checkpoints", str(ROOT / "checkpoints"), "--database", str(ROOT / "assets" / "rag"),
                            "--drums", str(ROOT / "assets" / "drums")], capsys)
    assert code == 2 and "missing.json' does not exist" in err and "Traceback" not in err
    assert not out.exists()


def test_a_rounds_ratings_rows_record_the_weights_that_ranked_it(tmp_path):
    from dataclasses import replace

    from ensemble.listening.round import Round, Shown
    from ensemble.rag import Candidate

    def rnd(weights: str) -> Round:
        shown = [Shown(position=p, candidate=Candidate(
            rank=p, chunk=p, track="Track00001", start_seconds=0.0, composite=1.0 - 0.1 * p, relevance=0.8,
            coherence=0.7, lookback=7.5, transpose=0, seam_pitch_jump_cents=10.0, seam_loudness_jump_db=-1.0,
            fallback=False), audio=tmp_path / f"{p}.wav", audio_matched=tmp_path / f"{p}m.wav",
            matched_gain_db=0.0, matched_limited=False, figure=tmp_path / f"{p}.png") for p in (1, 2)]
        shown = [replace(s, candidate=replace(s.candidate, weights=weights)) for s in shown]
        return Round(round_id="r" * 32, session_id="s", rater_id="alice", folder=tmp_path, input_sha256="a" * 64,
                     input_seconds=8.0, target_seconds=12.0, alpha=0.8, beta=0.6, blind=False, shuffle_seed=None,
                     shown=shown, report_card=tmp_path / "r.png", overview=tmp_path / "o.png", notes=[],
                     timings={}, model_version="m", database_version="d")

    path = tmp_path / "ratings.csv"
    append_submission(path, rnd("pl-0123456789ab").submission([2, 1]))
    append_submission(path, rnd(HAND_SET).submission([1, 2]))
    assert read_ratings(path)["weights"].tolist() == ["pl-0123456789ab"] * 2 + [HAND_SET] * 2
