"""Studies without models or a server: the study file's checks, the anchor's planted faults (measured in
cents, ms and dB), assignment and resuming, listening checks, and the analysis on synthetic rankings
with known answers (Plackett-Luce, Kendall's W, screening, the split-half ceiling, tau by rater)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from ensemble.errors import EnsembleError
from ensemble.ratings.stats import SummaryConfig
from ensemble.study.analysis import (
    format_report,
    kendalls_w,
    plackett_luce,
    screen,
    split_half_ceiling,
    study_report,
    submissions,
)
from ensemble.study.controls import plant_seam_faults
from ensemble.study.spec import load_spec
from ensemble.study.store import (
    FORMAT_VERSION,
    LISTENING_COLUMNS,
    MANIFEST,
    RATING_COLUMNS,
    Study,
    heard_summary,
    open_study,
    read_log,
)

SR = 16000


# ------------------------------------------------------------------------------------------ spec


def _write_spec(tmp_path: Path, **changes) -> Path:
    clip = tmp_path / "rec.wav"
    if not clip.exists():
        sf.write(clip, np.zeros(SR * 12, np.float32), SR)
    d = {"name": "pilot", "rounds_per_rater": 1, "seed": 3,
         "defaults": {"target_seconds": 10, "k": 2},
         "conditions": [{"name": "composite", "ranking": "composite"}],
         "stimuli": [{"id": "s1", "clip": "rec.wav", "input_seconds": 8}]}
    for key, value in changes.items():
        target = d
        *path, last = key.split(".")
        for p in path:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if value is _DROP:
            del target[last]
        else:
            target[last] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


_DROP = object()


def test_spec_reads_and_fills_defaults(tmp_path):
    spec = load_spec(_write_spec(tmp_path))
    assert spec.name == "pilot" and spec.rounds_per_rater == 1
    s = spec.stimuli[0]
    assert (s.k, s.target_seconds, s.input_seconds, s.followers) == (2, 10.0, 8.0, ("Bass", "Drums", "Keys"))
    assert s.clip == (tmp_path / "rec.wav").resolve()
    assert spec.labels(s) == ["composite@1", "composite@2", "reference", "anchor"]
    assert (spec.anchor.pitch_semitones, spec.anchor.delay_ms, spec.anchor.gain_db) == (1.0, 200.0, 6.0)
    assert spec.anchor_base == "composite@1" and spec.screening_threshold == 0.15


@pytest.mark.parametrize("change, words", [
    ({"colour": "red"}, ["unknown field", "colour", "allowed"]),
    ({"stimuli.0.clip": "nope.wav"}, ["stimuli[0].clip", "nope.wav", "no such file"]),
    ({"defaults.k": 0}, ["defaults.k", "0", "1..10"]),
    ({"defaults.k": 11}, ["defaults.k", "11", "1..10"]),
    ({"defaults.k": "two"}, ["defaults.k", "'two'", "whole number"]),
    ({"stimuli.0.target_seconds": 7}, ["stimuli[0].target_seconds", "input_seconds"]),
    ({"conditions.0.ranking": "best"}, ["conditions[0].ranking", "'best'", "composite", "random"]),
    ({"conditions.0.name": "reference"}, ["conditions[0].name", "reserved"]),
    ({"name": "Bad Name"}, ["name", "'Bad Name'", "a-z"]),
    ({"rounds_per_rater": 3}, ["rounds_per_rater", "3", "1..1"]),
    ({"stimuli.0.wobble": 1}, ["stimuli[0]", "wobble", "allowed"]),
    ({"stimuli.0.input_seconds": _DROP}, ["stimuli[0]", "missing", "input_seconds"]),
    ({"controls": {"anchor": {"pitch_semitones": 0, "delay_ms": 0, "gain_db": 0}}}, ["controls.anchor", "fault"]),
    ({"controls": {"anchor_base": "composite@5"}}, ["controls.anchor_base", "composite@5", "composite@1"]),
    ({"stimuli.0.followers": ["Tuba"]}, ["followers", "Tuba", "Bass"]),
    ({"stimuli.0.start_seconds": 3}, ["stimulus 's1'", "12.00 s long", "13.00 s"]),
    ({"defaults.k": 6, "conditions": [{"name": "a"}, {"name": "b", "ranking": "random"}]},
     ["stimuli[0].k = 6", "14 candidates", "at most 12"]),
])
def test_spec_refuses_bad_fields_naming_them(tmp_path, change, words):
    with pytest.raises(EnsembleError) as err:
        load_spec(_write_spec(tmp_path, **change))
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_spec_refuses_bad_yaml(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(EnsembleError, match="not valid YAML"):
        load_spec(path)
    with pytest.raises(EnsembleError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


# ------------------------------------------------------------------------------ anchor faults


def _log_spectrum(x: np.ndarray, grid_cents: np.ndarray) -> np.ndarray:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return np.log(np.interp(110.0 * 2 ** (grid_cents / 1200.0), freqs, spec) + 1e-9)


def pitch_shift_cents(before: np.ndarray, after: np.ndarray) -> float:
    """The shift (cents) that best maps ``before``'s log-frequency spectrum onto ``after``'s."""
    grid = np.arange(0, 4800, 2.0)
    a, b = _log_spectrum(before, grid), _log_spectrum(after, grid)
    lags = np.arange(-300, 301, 2)
    scores = [np.corrcoef(a[150:-150], np.roll(b, -lag // 2)[150:-150])[0, 1] for lag in lags]
    return float(lags[int(np.argmax(scores))])


def gap_ms(x: np.ndarray, cut: int, floor: float = 1e-4) -> float:
    """How long ``x`` stays silent (|x| < floor, about -80 dBFS) from ``cut`` on, ms: how late the
    continuation starts. (An envelope cross-correlation cannot tell: the phase vocoder smears onsets.)"""
    loud = np.flatnonzero(np.abs(x[cut:]) >= floor)
    return float((loud[0] if loud.size else len(x) - cut) / SR * 1000.0)


def rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2)))


def faults_measured(base: np.ndarray, anchor: np.ndarray, cut: int) -> tuple[float, float, float]:
    """(cents, ms, dB) of the anchor's continuation against the base candidate's, measured."""
    delay = gap_ms(anchor, cut) - gap_ms(base, cut)
    d = int(round(delay * SR / 1000))
    n = len(base) - cut - d
    cents = pitch_shift_cents(base[cut:cut + n], anchor[cut + d:cut + d + n])
    gain = ((rms_db(anchor[cut + d:]) - rms_db(anchor[:cut - 800]))
            - (rms_db(base[cut:len(base) - d]) - rms_db(base[:cut - 800])))
    return cents, delay, gain


def test_planted_faults_on_a_known_tone():
    """+1 semitone, 200 ms late, +6 dB planted into a tone with onsets: measured 100 cents, 200 ms, 6 dB."""
    notes = 220.0 * 2 ** (np.array([0, 4, 7, 12, 7, 4, 0, 5, 9, 12, 9, 5, 7, 4, 2, 0]) / 12.0)
    levels = np.array([1.0, 0.5, 0.8, 0.3, 0.9, 0.6, 0.4, 1.0, 0.7, 0.35, 0.85, 0.55, 0.45, 0.95, 0.65, 0.5])
    n = int(0.375 * SR)  # notes of 375 ms, each with its own level and a decay: an envelope without a period
    f = np.repeat(notes, n)
    decay = np.tile(np.exp(-np.arange(n) / (0.12 * SR)), len(notes))
    y = (0.2 * np.sin(2 * np.pi * np.cumsum(f) / SR) * np.repeat(levels, n) * decay).astype(np.float32)
    cut = 3 * SR
    anchor = plant_seam_faults(y, cut, sample_rate=SR, pitch_semitones=1.0, delay_ms=200.0, gain_db=6.0)
    assert anchor.shape == y.shape
    np.testing.assert_array_equal(anchor[:cut - 200], y[:cut - 200])  # the input part is untouched
    assert np.abs(anchor[cut:cut + int(0.2 * SR)]).max() == 0.0  # 200 ms of silence at the seam
    cents, delay, gain = faults_measured(y, anchor, cut)
    assert abs(cents - 100) <= 10 and abs(delay - 200) <= 3 and abs(gain - 6.0) <= 0.5, (cents, delay, gain)


def test_planted_faults_refuse_bad_cuts():
    y = np.zeros(SR, np.float32)
    with pytest.raises(EnsembleError, match="cut"):
        plant_seam_faults(y, 0, sample_rate=SR, pitch_semitones=1, delay_ms=10, gain_db=0)
    with pytest.raises(EnsembleError, match="delay"):
        plant_seam_faults(y, SR // 2, sample_rate=SR, pitch_semitones=1, delay_ms=600, gain_db=0)


# ------------------------------------------------------------------------------ store: raters


def fake_study(root: Path, name: str = "pilot", *, n_rounds: int = 3, rounds_per_rater: int = 2,
               n_cands: int = 4) -> Study:
    """A study folder with a manifest (no audio needed by the store)."""
    labels = ["composite@1", "composite@2", "reference", "anchor"][:n_cands]
    rounds = [{"round_id": f"s{i}", "seconds": 10.0, "seam_seconds": 7.9,
               "candidates": [{"label": lab, "condition": lab.split("@")[0], "file": f"audio/s{i}/{j}.wav",
                               "composite_rank": int(lab.split("@")[1]) if "@" in lab else None}
                              for j, lab in enumerate(labels)]} for i in range(1, n_rounds + 1)]
    manifest = {"format": FORMAT_VERSION, "name": name, "study_sha256": "0" * 64,
                "versions": {"model": "m", "database": "d"}, "rounds": rounds,
                "study": {"title": "T", "instructions": "I", "consent": "C", "rounds_per_rater": rounds_per_rater,
                          "seed": 5, "min_heard_seconds": 5.0, "preroll_seconds": 3.0, "screening_threshold": 0.15,
                          "conditions": [{"name": "composite", "ranking": "composite"}]}}
    (root / name).mkdir(parents=True)
    (root / name / MANIFEST).write_text(json.dumps(manifest))
    study = open_study(root, name)
    study._clock = FakeClock()  # the server's clock, moved on by the tests (see listen_all)
    return study


class FakeClock:
    """A server clock the test moves: ``clock.t += 2.0`` is two seconds passing."""

    def __init__(self, t: float = 1.0e9) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def listen_all(study: Study, rater: str, round_id: str, *, seconds: float = 6.0) -> None:
    """Each candidate played for ``seconds`` from 3.9 s, the server's clock moving with the media."""
    n = len(study.rounds[round_id]["candidates"])
    for pos in range(1, n + 1):
        study.log_listening(rater, round_id, [{"position": pos, "event": "play", "from": 3.9}])
        study._clock.t += seconds / 2
        study.log_listening(rater, round_id, [{"position": pos, "event": "progress", "from": 3.9,
                                               "to": 3.9 + seconds / 2}])
        study._clock.t += seconds / 2
        study.log_listening(rater, round_id, [{"position": pos, "event": "pause", "from": 3.9 + seconds / 2,
                                               "to": 3.9 + seconds}])


def test_assignment_balances_rounds_and_is_stable(tmp_path):
    study = fake_study(tmp_path, n_rounds=3, rounds_per_rater=2)
    states = [study.rater(f"r{i}") for i in range(6)]
    counts = {r: sum(r in s.rounds for s in states) for r in study.rounds}
    assert sorted(counts.values()) == [4, 4, 4]  # 6 raters x 2 rounds over 3 rounds: 4 each
    again = Study(study.folder).rater("r0")  # a restarted server reads the same assignment
    assert again == states[0]
    for s in states:
        assert sorted(len(o) for o in s.orders.values()) == [4, 4]
        assert all(sorted(o) == [0, 1, 2, 3] for o in s.orders.values())
    assert len({tuple(s.orders[s.rounds[0]]) for s in states}) > 1  # orders differ between raters


@pytest.mark.parametrize("bad", ["", "a b", "../x", None, "x" * 70])
def test_rater_ids_are_checked(tmp_path, bad):
    study = fake_study(tmp_path)
    with pytest.raises(EnsembleError, match="rater id"):
        study.rater(bad)


def _ev(event, a, b, credited=None):
    return {"event": event, "media_from_s": a, "media_to_s": b, "credited_s": b - a if credited is None else credited}


def test_heard_summary_counts_union_and_seam():
    ev = [_ev("play", 5, 5), _ev("progress", 5, 6), _ev("progress", 6, 7.2), _ev("pause", 7.2, 8.5),
          _ev("play", 5, 5), _ev("pause", 5, 6)]  # heard again: counted once
    h = heard_summary(ev, 7.9)
    assert h.seconds == pytest.approx(3.5) and h.seam and h.replays == 1
    assert not heard_summary(ev, 9.0).seam  # the seam beyond what was heard
    assert not h.enough(5.0) and heard_summary(ev + [_ev("ended", 8.5, 10.0)], 7.9).enough(5.0)
    # only what the server's clock credited counts: a stretch credited 0.5 s of its 1.3 s
    cut = [*ev[:3], _ev("pause", 7.2, 8.5, credited=0.5)]
    assert heard_summary(cut, 7.9).seconds == pytest.approx(2.7) and not heard_summary(cut, 7.9).seam


def test_the_servers_clock_caps_what_a_page_claims(tmp_path):
    """5 s claimed in 1 s of the server's clock: 1.1 s credited; four players claimed at once share
    one clock; a heard event without a play is credited nothing; the submission is refused, naming
    what the clock did not count."""
    study = fake_study(tmp_path, n_rounds=1, rounds_per_rater=1)
    rid = study.next_round("mal")[1]
    study.log_listening("mal", rid, [{"position": 1, "event": "play", "from": 4.9}])
    study._clock.t += 1.0
    heard = study.log_listening("mal", rid, [{"position": 1, "event": "pause", "from": 4.9, "to": 9.9}])
    assert heard[1].seconds == pytest.approx(1.1)
    rows = study.listening()
    assert [r["credited_s"] for r in rows] == ["0.0", "1.1"]
    assert int(rows[1]["server_ms"]) - int(rows[0]["server_ms"]) == 1000
    # all four "playing" at once for 6 s: each play ends the others' stretches
    study.log_listening("mal", rid, [{"position": p, "event": "play", "from": 4.9} for p in (2, 3, 4)])
    study._clock.t += 5.0
    heard = study.log_listening("mal", rid, [{"position": p, "event": "pause", "from": 4.9, "to": 9.9}
                                             for p in (2, 3, 4)])
    assert (heard[2].seconds, heard[3].seconds) == (0.0, 0.0) and heard[4].seconds == pytest.approx(5.0)
    heard = study.log_listening("mal", rid, [{"position": 2, "event": "ended", "from": 4.9, "to": 10.0}])
    assert heard[2].seconds == 0.0  # no play open: nothing credited
    with pytest.raises(EnsembleError) as err:
        study.submit("mal", rid, [1, 2, 3, 4])
    msg = str(err.value)
    assert "by the server's clock" in msg and "candidate 1: heard 1.1 s of 5 s, the seam not heard" in msg
    assert "candidate 1: the page reported 5.0 s heard, the server's clock allows 1.1 s" in msg
    assert study.ratings() == []


def test_submit_refuses_until_heard_then_writes_and_resumes(tmp_path):
    study = fake_study(tmp_path, n_rounds=2, rounds_per_rater=2)
    first = study.next_round("alice")
    assert first[0] == 1
    rid = first[1]
    with pytest.raises(EnsembleError) as err:
        study.submit("alice", rid, [1, 2, 3, 4])
    assert "candidate 1: heard 0.0 s of 5 s, the seam not heard" in str(err.value)
    listen_all(study, "alice", rid, seconds=2.0)  # too little, and short of the seam
    with pytest.raises(EnsembleError, match="candidate 4: heard 2.0 s of 5 s"):
        study.submit("alice", rid, [1, 2, 3, 4])
    listen_all(study, "alice", rid, seconds=6.0)
    with pytest.raises(EnsembleError, match="given twice"):
        study.submit("alice", rid, [1, 1, 3, 4])
    with pytest.raises(EnsembleError, match="candidate 2 has no rank"):
        study.submit("alice", rid, [1, None, 3, 4])
    assert study.ratings() == []
    sid = study.submit("alice", rid, [2, 1, 4, 3], session_id="sess", comment="=1+1")
    rows = study.ratings()
    assert len(rows) == 4 and {r["submission_id"] for r in rows} == {sid}
    assert all(r["loudness_matched"] == "True" and r["blind"] == "True" for r in rows)
    assert [int(r["human_rank"]) for r in rows] == [2, 1, 4, 3]
    assert rows[0]["comment"] == "'=1+1"  # a formula is never run by a spreadsheet
    shown = study.shown("alice", rid)
    assert [r["label"] for r in rows] == [c["label"] for c in shown]
    assert all(float(r["heard_seconds"]) >= 6.0 and r["seam_heard"] == "True" for r in rows)
    # a second submission of the same round is refused; a restarted server resumes at round 2
    with pytest.raises(EnsembleError, match="is on round"):
        study.submit("alice", rid, [2, 1, 4, 3])
    restarted = Study(study.folder)
    assert restarted.next_round("alice") == (2, restarted.rater("alice").rounds[1])
    listening = read_log(study.listening_file, LISTENING_COLUMNS)
    assert {r["event"] for r in listening} == {"play", "progress", "pause"}
    assert len(listening) == 2 * 3 * 4


def test_a_partial_last_line_is_ignored_and_cut(tmp_path):
    study = fake_study(tmp_path, n_rounds=2, rounds_per_rater=2)
    rid = study.next_round("bob")[1]
    listen_all(study, "bob", rid)
    study.submit("bob", rid, [1, 2, 3, 4])
    with open(study.ratings_file, "ab") as f:
        f.write(b"deadbeef,2026-")  # a process killed mid-append
    assert len(study.ratings()) == 4
    rid2 = study.next_round("bob")[1]
    listen_all(study, "bob", rid2)
    study.submit("bob", rid2, [1, 2, 3, 4])
    text = study.ratings_file.read_text()
    assert "deadbeef" not in text and len(read_log(study.ratings_file, RATING_COLUMNS)) == 8


def test_listening_events_are_checked(tmp_path):
    study = fake_study(tmp_path)
    rid = study.next_round("carol")[1]
    for bad, words in [({"position": 9, "event": "play", "from": 1}, "position 1..4"),
                       ({"position": 1, "event": "dance", "from": 1}, "event one of"),
                       ({"position": 1, "event": "progress", "from": 5, "to": 4}, "backwards"),
                       ({"position": 1, "event": "progress", "from": 5, "to": 40}, "within the clip")]:
        with pytest.raises(EnsembleError, match=words):
            study.log_listening("carol", rid, [bad])
    other = [r for r in study.rounds if r != rid][0]
    with pytest.raises(EnsembleError, match="reload the page"):
        study.log_listening("carol", other, [{"position": 1, "event": "play", "from": 1}])
    assert study.listening() == []


def test_open_study_names(tmp_path):
    fake_study(tmp_path, "pilot")
    with pytest.raises(EnsembleError, match="no study named 'other'"):
        open_study(tmp_path, "other")
    with pytest.raises(EnsembleError, match="allowed: a study name"):
        open_study(tmp_path, "../etc")


# ------------------------------------------------------------------------------------ analysis


def test_plackett_luce_recovers_known_strengths(rng):
    """Rankings drawn from a Plackett-Luce model with known strengths give those strengths back."""
    items = ["a", "b", "c", "d"]
    true = np.array([1.0, 0.3, -0.2, -1.1])
    rankings = []
    for _ in range(3000):
        left, order = list(range(4)), []
        while left:
            w = np.exp(true[left])
            pick = rng.choice(len(left), p=w / w.sum())
            order.append(items[left.pop(pick)])
        rankings.append(order)
    theta = plackett_luce(rankings, items)
    np.testing.assert_allclose(theta, true - true.mean(), atol=0.08)
    with pytest.raises(EnsembleError, match="'z'"):
        plackett_luce([["a", "z"]], items)


def test_kendalls_w_known_values():
    assert kendalls_w(np.array([[1, 2, 3, 4]] * 5)) == pytest.approx(1.0)
    assert kendalls_w(np.array([[1, 2, 3, 4], [4, 3, 2, 1]])) == pytest.approx(0.0)
    # textbook example: 3 raters, 3 items; S = 18, W = 12 * 18 / (9 * 24) = 1.0 ... and a mixed one
    r = np.array([[1, 2, 3], [1, 3, 2], [2, 1, 3]])
    totals = r.sum(0)
    s = ((totals - totals.mean()) ** 2).sum()
    assert kendalls_w(r) == pytest.approx(12 * s / (9 * (27 - 3)))
    assert kendalls_w(np.array([[1, 2]])) is None


def _rows(subs: list[tuple[str, str, dict[str, int]]]) -> list[dict]:
    """Rating rows of synthetic submissions: (rater, round, {label: human rank})."""
    out = []
    for i, (rater, rnd, ranks) in enumerate(subs):
        for pos, (label, rank) in enumerate(ranks.items(), start=1):
            out.append({"submission_id": f"sub{i}", "rater_id": rater, "round_id": rnd, "n_shown": str(len(ranks)),
                        "shown_position": str(pos), "label": label, "condition": label.split("@")[0],
                        "composite_rank": label.split("@")[1] if "@" in label else "",
                        "human_rank": str(rank)})
    return out


def test_screening_flags_raters_who_prefer_the_anchor():
    good = {"composite@1": 2, "composite@2": 3, "reference": 1, "anchor": 4}
    bad = {"composite@1": 2, "composite@2": 3, "reference": 4, "anchor": 1}
    subs = submissions(_rows([("ann", "s1", good), ("ann", "s2", good), ("ann", "s3", good),
                              ("ben", "s1", bad), ("ben", "s2", good), ("ben", "s3", good),
                              ("cy", "s1", good), ("cy", "s2", good), ("cy", "s3", good)]))
    sc = screen(subs, 0.15)
    by = {r["rater_id"]: r for r in sc["raters"]}
    assert by["ben"]["anchor_above_reference"] == 1 and by["ben"]["share"] == pytest.approx(1 / 3, abs=1e-4)
    assert by["ben"]["flagged"] and not by["ann"]["flagged"]
    assert sc["pass_rate"] == pytest.approx(2 / 3)
    assert not screen(subs, 0.5)["raters"][1]["flagged"]  # 33 % is within a 50 % threshold


def test_study_report_known_answers():
    """Raters who agree with the composite exactly: tau 1 with a degenerate interval, W 1, ceiling 1,
    the reference strongest, the anchor weakest, the flagged rater left out (and kept on request)."""
    agree = {"composite@1": 2, "composite@2": 3, "reference": 1, "anchor": 4}
    reverse = {"composite@1": 3, "composite@2": 2, "reference": 4, "anchor": 1}
    subs = [(r, s, agree) for r in ("ann", "ben", "cy", "dee") for s in ("s1", "s2")]
    subs += [("eve", "s1", reverse), ("eve", "s2", reverse)]
    config = SummaryConfig(n_bootstrap=200, seed=0)
    rep = study_report(_rows(subs), threshold=0.15, tau_condition="composite", config=config, study="t")
    assert rep["excluded_raters"] == ["eve"] and rep["screening"]["pass_rate"] == pytest.approx(0.8)
    t = rep["composite_tau"]
    assert (t["mean"], t["ci_low"], t["ci_high"], t["n"], t["n_raters"]) == (1.0, 1.0, 1.0, 8, 4)
    assert rep["kendalls_w"]["mean"] == pytest.approx(1.0)
    assert rep["human_ceiling"]["mean"] == pytest.approx(1.0)
    s = rep["strengths"]
    theta = dict(zip(s["items"], s["theta"], strict=True))
    assert s["items"] == ["composite@1", "composite@2", "reference", "anchor"]
    assert theta["reference"] > theta["composite@1"] > theta["composite@2"] > theta["anchor"]
    assert sum(s["share"]) == pytest.approx(1.0, abs=1e-5)
    assert all(lo <= th <= hi for lo, th, hi in zip(s["ci_low"], s["theta"], s["ci_high"], strict=True))
    kept = study_report(_rows(subs), threshold=0.15, tau_condition="composite", config=config,
                        include_flagged=True)
    assert kept["composite_tau"]["mean"] == pytest.approx((8 * 1 + 2 * -1) / 10)
    assert kept["composite_tau"]["ci_low"] < 1.0 and kept["kendalls_w"]["mean"] < 1.0
    text = format_report(rep)
    assert "4 of 5 raters pass (pass rate 80%)" in text and "left out: eve" in text
    assert "mean 1.000, 95% CI [1.000, 1.000] resampled by rater (n = 8 submissions, 4 raters)" in text
    one = study_report(_rows(subs[:2]), threshold=0.15, tau_condition="composite", config=config)
    assert "95% CI undefined (fewer than 2 raters)" in format_report(one)  # not a degenerate [1, 1]
    json.dumps(rep, allow_nan=False)


def test_tau_interval_is_resampled_by_rater(rng):
    """One rater with many submissions cannot narrow the interval: resampling by rater gives a wider
    interval than pretending every submission is independent."""
    a = {"composite@1": 1, "composite@2": 2, "reference": 3, "anchor": 4}
    b = {"composite@1": 2, "composite@2": 1, "reference": 3, "anchor": 4}
    subs = [("many", f"s{i}", a) for i in range(20)] + [("other", "s0", b), ("third", "s1", b)]
    rep = study_report(_rows(subs), threshold=1.0, tau_condition="composite",
                       config=SummaryConfig(n_bootstrap=500, seed=1))
    t = rep["composite_tau"]
    assert t["n"] == 22 and t["n_raters"] == 3
    assert t["ci_low"] < 0.0  # resamples of 3 raters often draw the two who disagree more than once
    assert t["mean"] == pytest.approx(18 / 22)


def test_split_half_ceiling_of_disagreeing_raters_is_low():
    a = {"composite@1": 1, "composite@2": 2, "reference": 3, "anchor": 4}
    b = {"composite@1": 2, "composite@2": 1, "reference": 3, "anchor": 4}
    subs = submissions(_rows([("x", "s1", a), ("y", "s1", b)]))
    assert split_half_ceiling(subs, "composite")["mean"] == pytest.approx(-1.0)
    assert split_half_ceiling(subs[:1], "composite")["mean"] is None


# ------------------------------------------------------------------------------ the released logs

OLD_RATING_COLUMNS = (  # log version 1 (before role, ranking, tau_condition, screening_threshold, log_version)
    "submission_id", "timestamp_utc", "study", "study_sha256", "rater_id", "session_id", "round_id",
    "round_index", "order_seed", "n_shown", "shown_position", "label", "condition", "composite_rank",
    "human_rank", "loudness_matched", "blind", "heard_seconds", "seam_heard", "replays", "model_version",
    "database_version", "comment")


def _rated_study(tmp_path: Path) -> Study:
    study = fake_study(tmp_path, n_rounds=2, rounds_per_rater=2)
    for rater, ranks in (("ann", [1, 2, 3, 4]), ("ben", [4, 3, 2, 1])):
        for _ in range(2):
            rid = study.next_round(rater)[1]
            listen_all(study, rater, rid)
            study.submit(rater, rid, ranks)
    return study


def test_the_report_needs_the_released_logs_alone(tmp_path):
    """The two logs copied away from the study (no manifest, no study file): the same report, the
    threshold, tau condition, roles and version read from the rows; the CLI writes the tables."""
    import shutil
    import subprocess
    import sys

    from ensemble.study.analysis import report_from_logs, report_tables
    from ensemble.study.store import released_logs, report_of

    study = _rated_study(tmp_path / "studies")
    released = tmp_path / "released"
    released.mkdir()
    for name in ("ratings.csv", "listening.csv"):
        shutil.copy(study.logs / name, released / name)
    config = SummaryConfig(n_bootstrap=100, seed=0)
    alone = report_from_logs(*released_logs(released), config=config)
    assert alone == report_of(study, config=config)
    assert alone["study"] == "pilot" and alone["study_sha256"] == "0" * 64
    assert alone["screening"]["threshold"] == 0.15 and alone["composite_tau"]["condition"] == "composite"
    assert alone["playback"] == {"rows": 16, "loudness_matched": 16}
    assert [x["rater_id"] for x in alone["listening"]] == ["ann", "ben"]
    assert all(x["credited_s"] == pytest.approx(x["reported_s"]) for x in alone["listening"])
    assert "playback loudness-matched in 16 of 16 rating rows" in format_report(alone)
    tables = report_tables(alone)
    assert tables["strengths"][1][-1][0] == "anchor" and tables["strengths"][1][-2][0] == "reference"

    done = subprocess.run([sys.executable, "-m", "ensemble", "study", "report", str(released), "--bootstrap",
                           "100", "--seed", "0"], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(format_report(alone) + "\n")
    for name, (header, rows) in tables.items():
        got = (released / "report" / f"{name}.csv").read_text().splitlines()
        assert got[0] == ",".join(header) and len(got) == 1 + len(rows), name


def test_an_old_log_is_refused_naming_the_missing_columns(tmp_path):
    import csv
    import subprocess
    import sys

    from ensemble.study.store import released_logs

    study = _rated_study(tmp_path / "studies")
    rows = read_log(study.ratings_file, RATING_COLUMNS)
    with open(study.ratings_file, "w", newline="") as f:  # what version 1 of the app wrote
        w = csv.writer(f, lineterminator="\n")
        w.writerow(OLD_RATING_COLUMNS)
        w.writerows([[r[c] for c in OLD_RATING_COLUMNS] for r in rows])
    with pytest.raises(EnsembleError, match=r"lacks the columns \['role', 'tau_condition', "
                                            r"'screening_threshold'\] that a study report needs"):
        released_logs(study.folder)
    done = subprocess.run([sys.executable, "-m", "ensemble", "study", "report", str(study.folder)],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2 and "lacks the columns ['role', 'tau_condition', 'screening_threshold']" in done.stderr
    assert "Traceback" not in done.stderr
    # the app does not append new rows under an old header either: it says what to do
    fresh = Study(study.folder)
    with pytest.raises(EnsembleError, match=r"lacks the columns \['role', 'ranking', 'tau_condition', "
                                            r"'screening_threshold', 'log_version'\].*move the old log aside"):
        fresh.next_round("cy")
