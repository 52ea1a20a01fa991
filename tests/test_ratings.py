"""The ratings log: concurrent and crash-safe appends, validation, CSV injection, statistics, CLI.

Real files in ``tmp_path``, real threads and processes (one killed with SIGKILL), no mocks.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from ensemble.cli import main as cli_main
from ensemble.errors import EnsembleError
from ensemble.figures.ratings import first_choice_figure, mean_rank_figure
from ensemble.ratings.log import (
    MAX_COMMENT_CHARS,
    RATINGS_COLUMNS,
    CandidateRating,
    Submission,
    append_submission,
    read_ratings,
    sanitize_rater_id,
    validate_submission,
)
from ensemble.ratings.stats import SummaryConfig, format_summary, summarize
from ui.config import ratings_dir, ratings_path

ROOT = Path(__file__).resolve().parents[1]
HEADER = ",".join(RATINGS_COLUMNS)
SHA = "0123456789abcdef" * 4


def make_submission(human_ranks, *, composite_ranks=None, favourite=None, rater="alice", comment="",
                    **fields) -> Submission:
    """A submission whose candidate at shown position i has composite rank ``composite_ranks[i]``."""
    k = len(human_ranks)
    composite_ranks = list(range(1, k + 1)) if composite_ranks is None else composite_ranks
    candidates = tuple(
        CandidateRating(shown_position=i + 1, composite_rank=composite_ranks[i], human_rank=human_ranks[i],
                        db_chunk_idx=100 + i, composite=0.9 - 0.1 * composite_ranks[i], relevance=-3.5,
                        coherence=0.25, lookback_s=4.0, transpose=-2,
                        seam_pitch_jump_cents=None if i == 0 else 35.5, seam_loudness_jump_db=-1.5)
        for i in range(k))
    base = dict(rater_id=rater, session_id="sess-1", input_sha256=SHA, input_seconds=12.5,
                target_seconds=20.0, k=k, alpha=0.6, beta=0.4, blind=True, candidates=candidates,
                favourite=favourite, comment=comment, model_version="decoders-v1", database_version="db-v1")
    base.update(fields)
    return Submission(**base)


def subprocess_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


# Child processes build submissions with ensemble.ratings.log alone (no pandas, no pytest: fast to start).
CHILD_PRELUDE = """
import sys
from ensemble.ratings.log import CandidateRating, Submission, append_submission

def make(ranks, comment="", rater="child"):
    c = tuple(CandidateRating(shown_position=i + 1, composite_rank=i + 1, human_rank=r, db_chunk_idx=i,
                              composite=0.5, relevance=-3.5, coherence=0.25, lookback_s=4.0, transpose=-2)
              for i, r in enumerate(ranks))
    return Submission(rater_id=rater, session_id="s", input_sha256="ab" * 32, input_seconds=12.5,
                      target_seconds=20.0, k=len(ranks), alpha=0.6, beta=0.4, blind=False, candidates=c,
                      favourite=1, comment=comment)
"""


def header_count(path: Path) -> int:
    return sum(line == HEADER for line in path.read_text().splitlines())


def assert_complete(frame: pd.DataFrame) -> None:
    """Every submission has k rows and its ranks are each of 1..k once."""
    for _, rows in frame.groupby("submission_id"):
        k = int(rows["k"].iloc[0])
        assert len(rows) == k
        for column in ("shown_position", "composite_rank", "human_rank"):
            assert sorted(rows[column]) == list(range(1, k + 1))


# --------------------------------------------------------------------------------------------------
# concurrency and crashes


def test_20_threads_x_25_submissions(tmp_path):
    path = tmp_path / "ratings" / "ratings.csv"
    n_threads, per_thread = 20, 25
    barrier = threading.Barrier(n_threads)
    ids: list[list[str]] = [[] for _ in range(n_threads)]
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                k = 3 + (t + i) % 3  # K = 3, 4, 5
                ranks = [(j + t + i) % k + 1 for j in range(k)]  # a rotation: a permutation of 1..k
                ids[t].append(append_submission(path, make_submission(ranks, rater=f"rater{t}",
                                                                      favourite=1 + i % k)))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors

    returned = [i for chunk in ids for i in chunk]
    assert len(returned) == len(set(returned)) == 500
    expected_rows = sum(3 + (t + i) % 3 for t in range(n_threads) for i in range(per_thread))
    raw = pd.read_csv(path)  # plain pandas reads the file as it is
    assert raw.shape == (expected_rows, len(RATINGS_COLUMNS))
    assert list(raw.columns) == list(RATINGS_COLUMNS)
    assert header_count(path) == 1
    frame = read_ratings(path)
    assert len(frame) == expected_rows and frame.attrs["dropped_rows"] == 0
    assert set(frame["submission_id"]) == set(returned)
    assert frame["submission_id"].nunique() == 500
    assert_complete(frame)
    assert (frame.groupby("submission_id")["favourite"].sum() == 1).all()


def test_processes_append_under_the_same_lock(tmp_path):
    path = tmp_path / "ratings.csv"
    code = CHILD_PRELUDE + "for _ in range(20): append_submission(sys.argv[1], make([2, 1, 3, 4]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)],
                              env=subprocess_env(), cwd=tmp_path) for _ in range(3)]
    for _ in range(20):
        append_submission(path, make_submission([1, 2, 3], rater="main"))
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    frame = read_ratings(path)
    assert frame["submission_id"].nunique() == 80
    assert len(frame) == 3 * 20 * 4 + 20 * 3
    assert header_count(path) == 1
    assert_complete(frame)


CHILD_LOOP = CHILD_PRELUDE + """
# big comments make each append several pages long, so the kill can land inside a write
big = "x" * 1900
print("started", flush=True)
for i in range(1_000_000):
    append_submission(sys.argv[1], make([3, 1, 2, 5, 4], comment=f"{i} {big}"))
"""


def test_sigkill_mid_append_leaves_a_parseable_log(tmp_path):
    path = tmp_path / "ratings.csv"
    child = subprocess.Popen([sys.executable, "-c", CHILD_LOOP, str(path)],
                             stdout=subprocess.PIPE, text=True, env=subprocess_env(), cwd=tmp_path)
    try:
        assert child.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 20
        while (not path.exists() or path.stat().st_size < 50_000) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert child.poll() is None, "the writer stopped before it was killed"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    frame = read_ratings(path)
    n_before = frame["submission_id"].nunique()
    assert n_before > 0
    assert_complete(frame)
    assert frame.attrs["dropped_rows"] >= 0

    new_id = append_submission(path, make_submission([1, 2, 3], rater="after"))
    assert path.read_bytes().endswith(b"\n")
    after = read_ratings(path)
    assert after["submission_id"].nunique() == n_before + 1
    assert new_id in set(after["submission_id"])
    assert_complete(after)
    assert header_count(path) == 1
    pd.read_csv(path)  # a file repaired by the writer parses with plain pandas too


def test_partial_tail_is_skipped_by_the_reader_and_cut_by_the_writer(tmp_path):
    path = tmp_path / "ratings.csv"
    kept = [append_submission(path, make_submission([1, 2, 3])) for _ in range(2)]
    # what an interrupted append leaves: one complete row of a 4-row submission and half of the next
    other = tmp_path / "other.csv"
    append_submission(other, make_submission([4, 3, 2, 1]))
    lines = other.read_bytes().splitlines(keepends=True)[1:]
    fragment = lines[0] + lines[1][: len(lines[1]) // 2]
    with path.open("ab") as f:
        f.write(fragment)

    frame = read_ratings(path)
    assert list(frame["submission_id"].unique()) == kept
    assert frame.attrs["dropped_rows"] == 2  # the orphan row and the partial line

    new_id = append_submission(path, make_submission([2, 1]))
    # the partial line was cut off: header, 2 x 3 kept rows, the orphan row, the 2 new rows
    assert len(path.read_text().splitlines()) == 1 + 6 + 1 + 2
    assert pd.read_csv(path).shape == (9, len(RATINGS_COLUMNS))
    frame = read_ratings(path)
    assert list(frame["submission_id"].unique()) == [*kept, new_id]
    assert frame.attrs["dropped_rows"] == 1  # the orphan complete row stays in the file, skipped


def test_header_written_once_across_restarts(tmp_path):
    path = tmp_path / "ratings.csv"
    append_submission(path, make_submission([1, 2, 3]))
    code = CHILD_PRELUDE + "append_submission(sys.argv[1], make([3, 2, 1]))"
    subprocess.run([sys.executable, "-c", code, str(path)], check=True,
                   env=subprocess_env(), cwd=tmp_path)
    append_submission(path, make_submission([2, 3, 1]))
    assert header_count(path) == 1
    assert read_ratings(path)["submission_id"].nunique() == 3
    assert path.read_text().startswith(HEADER + "\n")


def test_a_crash_during_the_first_append_leaves_a_usable_file(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text(HEADER[:40])  # the start of the header, nothing more
    frame = read_ratings(path)
    assert len(frame) == 0 and list(frame.columns) == list(RATINGS_COLUMNS)
    new_id = append_submission(path, make_submission([1, 2, 3]))
    assert header_count(path) == 1 and list(read_ratings(path)["submission_id"].unique()) == [new_id]


def test_appending_to_a_foreign_file_is_refused(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("name,score\nbob,3")  # no final newline: it must not be "repaired" either
    before = path.read_bytes()
    with pytest.raises(EnsembleError, match="ratings header"):
        append_submission(path, make_submission([1, 2]))
    assert path.read_bytes() == before
    with pytest.raises(EnsembleError, match=str(path)):
        read_ratings(path)


# --------------------------------------------------------------------------------------------------
# the timbre column, and logs written before it existed

# the header of every log written before the timbre was recorded (literal: what such files hold)
OLD_HEADER = ("submission_id,timestamp_utc,rater_id,session_id,input_sha256,input_seconds,target_seconds,k,"
              "alpha,beta,blind,shown_position,composite_rank,human_rank,favourite,db_chunk_idx,composite,"
              "relevance,coherence,lookback_s,transpose,seam_pitch_jump_cents,seam_loudness_jump_db,"
              "model_version,database_version,comment")


def write_old_log(path: Path, submissions: list[Submission], *,
                  header: str = OLD_HEADER) -> list[list[str]]:
    """``path`` as a log with an earlier ``header`` (default: from before the timbre column), holding
    ``submissions``; its records."""
    new = path.with_name("as-now.csv")
    for submission in submissions:
        append_submission(new, submission)
    with new.open(newline="") as f:
        records = list(csv.reader(f))
    keep = [records[0].index(name) for name in header.split(",")]
    old = [[record[i] for i in keep] for record in records]
    assert ",".join(old[0]) == header
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerows(old)
    path.write_text(buffer.getvalue())
    new.unlink()
    Path(f"{new}.lock").unlink(missing_ok=True)
    return old


def test_every_row_records_the_timbre(tmp_path):
    path = tmp_path / "ratings.csv"
    append_submission(path, make_submission([1, 2, 3], timbre="violin"))
    append_submission(path, make_submission([2, 1]))  # none recorded: empty
    with path.open(newline="") as f:
        assert [r["timbre"] for r in csv.DictReader(f)] == ["violin"] * 3 + [""] * 2
    assert read_ratings(path)["timbre"].tolist() == ["violin"] * 3 + [""] * 2


def test_a_log_from_before_the_timbre_column_reads_and_is_upgraded_once(tmp_path):
    path = tmp_path / "ratings.csv"
    old = write_old_log(path, [make_submission([1, 2, 3], comment='quoted, "text"'),
                               make_submission([2, 1], rater="bob", favourite=1)])
    with path.open("ab") as f:
        f.write(old[1][0].encode() + b",2026-01")  # an interrupted append's partial last line
    before = path.read_bytes()

    frame = read_ratings(path)  # read as it is, the timbre empty, never written
    assert list(frame.columns) == list(RATINGS_COLUMNS) and len(frame) == 5
    assert frame["timbre"].tolist() == [""] * 5 and frame["comment"].iloc[0] == 'quoted, "text"'
    assert frame.attrs["dropped_rows"] == 1 and path.read_bytes() == before

    new_id = append_submission(path, make_submission([3, 1, 2], timbre="guitar"))
    assert path.read_text().startswith(HEADER + "\n") and header_count(path) == 1
    with path.open(newline="") as f:
        records = list(csv.reader(f))
    assert len(records) == 1 + 5 + 3  # every old row kept, the partial line cut off, the new rows
    added = [RATINGS_COLUMNS.index(name) for name in ("timbre", "loudness_matched", "weights")]
    for was, now in zip(old[1:], records[1:6], strict=True):
        # cell for cell, the columns added since (the timbre, the playback) empty
        assert [c for i, c in enumerate(now) if i not in added] == was and all(now[i] == "" for i in added)
    frame = read_ratings(path)
    assert frame["submission_id"].nunique() == 3 and frame.attrs["dropped_rows"] == 0
    assert frame.loc[frame["submission_id"] == new_id, "timbre"].tolist() == ["guitar"] * 3
    assert_complete(frame)
    append_submission(path, make_submission([1, 2]))  # already upgraded: appended to as it is
    assert header_count(path) == 1 and len(read_ratings(path)) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ratings.csv", "ratings.csv.lock"]  # no temp file


# the header of logs written with the timbre but before the playback (loudness matching) was recorded
TIMBRE_ERA_HEADER = OLD_HEADER.replace("seam_loudness_jump_db,", "seam_loudness_jump_db,timbre,")


def test_every_row_records_whether_playback_was_loudness_matched(tmp_path):
    path = tmp_path / "ratings.csv"
    for value in (True, False, "mixed", None):
        append_submission(path, make_submission([1, 2], loudness_matched=value))
    with path.open(newline="") as f:
        assert [r["loudness_matched"] for r in csv.DictReader(f)] == ["1", "1", "0", "0", "mixed", "mixed",
                                                                      "", ""]
    assert read_ratings(path)["loudness_matched"].tolist() == ["1", "1", "0", "0", "mixed", "mixed", "", ""]
    with pytest.raises(EnsembleError, match="loudness_matched must be True, False, 'mixed' or None, got 'yes'"):
        append_submission(path, make_submission([1, 2], loudness_matched="yes"))
    assert len(read_ratings(path)) == 8


def test_a_log_from_before_the_playback_column_is_upgraded_once(tmp_path):
    path = tmp_path / "ratings.csv"
    old = write_old_log(path, [make_submission([1, 2, 3], timbre="violin")], header=TIMBRE_ERA_HEADER)
    frame = read_ratings(path)
    assert frame["loudness_matched"].tolist() == [""] * 3 and frame["timbre"].tolist() == ["violin"] * 3
    append_submission(path, make_submission([2, 1], loudness_matched=True))
    assert path.read_text().startswith(HEADER + "\n") and header_count(path) == 1
    with path.open(newline="") as f:
        records = list(csv.reader(f))
    added = [RATINGS_COLUMNS.index(name) for name in ("loudness_matched", "weights")]
    for was, now in zip(old[1:], records[1:4], strict=True):
        assert [c for i, c in enumerate(now) if i not in added] == was and all(now[i] == "" for i in added)
    assert read_ratings(path)["loudness_matched"].tolist() == [""] * 3 + ["1"] * 2


def test_threads_appending_to_a_log_from_before_upgrade_it_once(tmp_path):
    path = tmp_path / "ratings.csv"
    write_old_log(path, [make_submission([1, 2, 3])])
    errors = []

    def worker(n: int) -> None:
        try:
            for _ in range(3):
                append_submission(path, make_submission([2, 1], rater=f"t{n}", timbre="violin"))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    frame = read_ratings(path)
    assert header_count(path) == 1 and frame["submission_id"].nunique() == 1 + 18
    assert (frame["timbre"] == "violin").sum() == 36 and (frame["timbre"] == "").sum() == 3
    assert_complete(frame)


def test_a_corrupt_log_from_before_is_left_as_it_is(tmp_path):
    path = tmp_path / "ratings.csv"
    old = write_old_log(path, [make_submission([1, 2])])
    path.write_text("\n".join([OLD_HEADER, ",".join(old[1][:-3]), ",".join(old[2])]) + "\n")
    before = path.read_bytes()
    with pytest.raises(EnsembleError, match="line 2 has 23 fields, expected 26"):
        append_submission(path, make_submission([1, 2]))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ratings.csv", "ratings.csv.lock"]


# --------------------------------------------------------------------------------------------------
# validation and CSV injection


INVALID = {
    "duplicate ranks": (make_submission([1, 1, 3]), "rank 1 is given to both"),
    "missing rank": (make_submission([1, None, 3]), "no rank"),
    "rank 0": (make_submission([0, 1, 2]), "rank 0 .* out of range; ranks must be 1..3"),
    "rank K+1": (make_submission([1, 2, 4]), "rank 4 .* out of range"),
    "rank not an int": (make_submission([1, 2.0, 3]), "not an integer"),
    "duplicate composite ranks": (make_submission([1, 2, 3], composite_ranks=[1, 1, 2]), "composite rank 1"),
    "favourite out of range": (make_submission([1, 2, 3], favourite=4), "favourite 4 .* 1..3"),
    "favourite 0": (make_submission([1, 2, 3], favourite=0), "favourite 0"),
    "k mismatch": (make_submission([1, 2, 3], k=4), "k = 4 but 3 candidates"),
    "NaN composite": (None, "composite of the candidate at position 2 must be finite"),
    "infinite input length": (make_submission([1, 2], input_seconds=math.inf), "input_seconds"),
    "negative target": (make_submission([1, 2], target_seconds=-1.0), "target_seconds must be > 0"),
    "long comment": (make_submission([1, 2], comment="x" * (MAX_COMMENT_CHARS + 1)), "at most 2000"),
    "bad sha": (make_submission([1, 2], input_sha256="abc"), "64 hex digits"),
    "blind not bool": (make_submission([1, 2], blind="yes"), "blind must be True or False"),
    "timbre not text": (make_submission([1, 2], timbre=3), "timbre must be text"),
}


def _nan_composite() -> Submission:
    s = make_submission([1, 2, 3])
    bad = replace(s.candidates[1], composite=math.nan)
    return replace(s, candidates=(s.candidates[0], bad, s.candidates[2]))


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_submission_writes_nothing(tmp_path, name):
    submission, message = INVALID[name]
    submission = _nan_composite() if submission is None else submission
    with pytest.raises(EnsembleError, match=message):
        validate_submission(submission)

    fresh = tmp_path / "new" / "ratings.csv"
    with pytest.raises(EnsembleError, match=message):
        append_submission(fresh, submission)
    assert not fresh.exists() and not fresh.parent.exists()

    existing = tmp_path / "ratings.csv"
    append_submission(existing, make_submission([2, 1, 3]))
    before = existing.read_bytes()
    with pytest.raises(EnsembleError):
        append_submission(existing, submission)
    assert existing.read_bytes() == before


def test_csv_injection_is_neutralised_but_numbers_stay_numbers(tmp_path):
    path = tmp_path / "ratings.csv"
    append_submission(path, make_submission([1, 2], rater="@evil", comment='=HYPERLINK("http://x","click")',
                                            model_version="+cmd|' /C calc'!A0", database_version="-2+3",
                                            alpha=-3.5))
    append_submission(path, make_submission([1, 2], rater="-", comment="-3", session_id="@s\n1"))
    append_submission(path, make_submission([1, 2], comment="one\ntwo\r\nthree\u2028four\tfive"))
    with path.open(newline="") as f:
        records = list(csv.DictReader(f))
    first, second, third = records[0], records[2], records[4]
    assert first["comment"] == "'=HYPERLINK(\"http://x\",\"click\")"
    assert first["rater_id"] == "evil"
    assert first["model_version"].startswith("'+cmd")
    assert first["database_version"] == "'-2+3"
    assert first["alpha"] == "-3.5" and first["relevance"] == "-3.5" and first["transpose"] == "-2"
    assert second["comment"] == "-3"  # text that is a plain number is harmless and stays
    assert second["rater_id"] == "anonymous"
    assert second["session_id"] == "s1"
    assert third["comment"] == "one two  three four five"  # control characters become spaces
    for record in records:
        for value in record.values():
            assert not value.startswith(("=", "+", "@", "\t", "\r"))
            assert not value.startswith("-") or re.fullmatch(r"-\d+(\.\d+)?", value)
    assert len(path.read_bytes().split(b"\n")) == 1 + 6 + 1  # one physical line per row

    frame = read_ratings(path)
    assert frame["alpha"].iloc[0] == -3.5 and frame["relevance"].dtype == "float64"
    seam = frame["seam_pitch_jump_cents"]
    assert math.isnan(seam.iloc[0]) and seam.iloc[1] == 35.5
    assert frame["comment"].iloc[0] == "'=HYPERLINK(\"http://x\",\"click\")"


def test_sanitize_rater_id():
    assert sanitize_rater_id("alice_01.b-c") == "alice_01.b-c"
    assert sanitize_rater_id("  Bob Smith!") == "BobSmith"
    assert sanitize_rater_id("@evil") == "evil"
    assert sanitize_rater_id("-=1+2") == "12"
    assert sanitize_rater_id("../../etc") == "etc"
    assert sanitize_rater_id("") == sanitize_rater_id(None) == sanitize_rater_id("!!!") == "anonymous"
    assert len(sanitize_rater_id("a" * 500)) == 64


def test_ratings_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RATINGS_DIR", str(tmp_path / "from-env"))
    assert ratings_dir() == tmp_path / "from-env"
    assert ratings_path() == tmp_path / "from-env" / "ratings.csv"
    assert not (tmp_path / "from-env").exists()  # nothing is created
    monkeypatch.delenv("RATINGS_DIR")
    spaces = tmp_path / "data"
    assert ratings_dir("ratings", spaces_data=spaces) == Path("ratings")  # no /data: the default
    spaces.mkdir()
    assert ratings_dir("ratings", spaces_data=spaces) == spaces / "ratings"
    assert ratings_dir(env={"RATINGS_DIR": "elsewhere"}, spaces_data=spaces) == Path("elsewhere")
    blank = ratings_dir(tmp_path / "x", env={"RATINGS_DIR": " "}, spaces_data=tmp_path / "none")
    assert blank == tmp_path / "x"


# --------------------------------------------------------------------------------------------------
# statistics


def test_summary_on_a_log_with_known_answers(tmp_path):
    path = tmp_path / "ratings.csv"
    # shown positions are shuffled against the composite order; human_rank follows the composite rank
    append_submission(path, make_submission([2, 1, 4, 3], composite_ranks=[2, 1, 4, 3], rater="a",
                                            favourite=2))  # perfect agreement, tau = 1
    append_submission(path, make_submission([1, 2, 3, 4], rater="a", favourite=1))  # tau = 1
    append_submission(path, make_submission([4, 3, 2, 1], rater="b"))  # reversed, tau = -1
    append_submission(path, make_submission([2, 3, 1, 4], rater="c", favourite=3))  # composite 3 first
    summary = summarize(read_ratings(path))

    assert summary["n_submissions"] == 4 and summary["n_rows"] == 16 and summary["n_raters"] == 3
    assert summary["k_values"] == [4]
    taus = [p["tau"] for p in summary["per_submission"]]
    assert taus[:3] == pytest.approx([1.0, 1.0, -1.0])
    assert taus[3] == pytest.approx(1 / 3)  # 4 concordant, 2 discordant pairs of 6
    t = summary["kendall_tau"]
    assert t["n"] == 4 and t["mean"] == pytest.approx((1 + 1 - 1 + 1 / 3) / 4)
    assert -1.0 <= t["ci_low"] <= t["mean"] <= t["ci_high"] <= 1.0 and t["ci_low"] < t["ci_high"]
    assert summary["first_choice"] == {"composite_rank": [1, 2, 3, 4], "count": [2, 0, 1, 1]}
    means = [m["mean"] for m in summary["mean_human_rank"]]
    assert means == pytest.approx([(1 + 1 + 4 + 2) / 4, (2 + 2 + 3 + 3) / 4, (3 + 3 + 2 + 1) / 4,
                                   (4 + 4 + 1 + 4) / 4])
    for m in summary["mean_human_rank"]:
        assert m["n"] == 4 and 1 <= m["ci_low"] <= m["mean"] <= m["ci_high"] <= 4
    assert summary["favourite"]["count"] == [2, 0, 1, 0]  # composite ranks of the favourites
    assert summarize(read_ratings(path)) == summary  # seeded: the same numbers every time
    json.dumps(summary, allow_nan=False)

    text = format_summary(summary)
    assert "4 submissions (16 rows) from 3 raters" in text and "mean 0.333" in text


def test_summary_edge_cases(tmp_path):
    path = tmp_path / "ratings.csv"
    empty = summarize(read_ratings(path, missing_ok=True))
    assert empty["n_submissions"] == 0 and empty["kendall_tau"]["mean"] is None
    assert "no complete submissions" in format_summary(empty)

    append_submission(path, make_submission([1, 2, 3]))
    one = summarize(read_ratings(path), SummaryConfig(n_bootstrap=50))
    t = one["kendall_tau"]
    assert t["mean"] == 1.0 and t["ci_low"] is None and t["ci_high"] is None  # one submission: undefined
    assert "CI undefined with 1 submission" in format_summary(one) and "[1.000, 1.000]" not in format_summary(one)

    append_submission(path, make_submission([1]))  # K = 1: stored, but tau is undefined
    mixed = summarize(read_ratings(path))
    assert mixed["n_submissions"] == 2 and mixed["kendall_tau"]["n"] == 1
    assert mixed["per_submission"][1]["tau"] is None
    with pytest.raises(EnsembleError, match="n_bootstrap"):
        SummaryConfig(n_bootstrap=0)


def test_figures(tmp_path):
    path = tmp_path / "ratings.csv"
    for ranks in ([1, 2, 3], [3, 1, 2], [2, 1, 3]):
        append_submission(path, make_submission(ranks))
    for summary in (summarize(read_ratings(path)), summarize(read_ratings(tmp_path / "no", missing_ok=True))):
        for fig in (first_choice_figure(summary), mean_rank_figure(summary)):
            ax = fig.axes[0]
            assert ax.get_title() and "composite rank" in ax.get_xlabel() and ax.get_ylabel()
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            assert buf.getvalue().startswith(b"\x89PNG")


# --------------------------------------------------------------------------------------------------
# command line


def test_cli_summary_in_a_subprocess(tmp_path):
    path = tmp_path / "ratings.csv"
    for ranks in ([1, 2, 3], [3, 2, 1], [1, 3, 2], [2, 1, 3]):
        append_submission(path, make_submission(ranks))
    result = subprocess.run([sys.executable, "-m", "ensemble", "ratings", "summary", str(path)], cwd=tmp_path,
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == json.loads(json.dumps(summarize(read_ratings(path))))
    assert any(line.startswith("composite rank") for line in lines)
    assert "Kendall tau" in result.stdout


def test_cli_json_only_and_errors(tmp_path, capsys):
    path = tmp_path / "ratings.csv"
    append_submission(path, make_submission([2, 1, 3]))
    assert cli_main(["ratings", "summary", str(path), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and json.loads(out[0])["n_submissions"] == 1

    missing = tmp_path / "nope.csv"
    assert cli_main(["ratings", "summary", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(missing) in err

    corrupt = tmp_path / "corrupt.csv"
    corrupt.write_text(HEADER + "\nnot,enough,fields\n" + HEADER + "\n")
    assert cli_main(["ratings", "summary", str(corrupt)]) == 2
    err = capsys.readouterr().err
    assert str(corrupt) in err and "line 2" in err

    assert cli_main(["ratings", "summary", str(path), "--bootstrap", "0"]) == 2
    assert "n_bootstrap" in capsys.readouterr().err
