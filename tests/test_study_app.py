"""A study end to end, with the real engine, the real app and headless Chromium (Playwright).

* ``python -m ensemble study prepare`` renders a tiny study (2 stimuli cut from the shipped examples,
  K = 2, 11 s) into ``tmp_path``: the manifest's hashes match the files; the low anchor is its base
  candidate +1 semitone, 200 ms late and +6 dB (measured on the WAVs, in cents, ms and dB); the hidden
  reference is the recording's own continuation (its audio, performed by the band); a bad study file
  writes nothing;
* two raters in two browser contexts: the ranking stays locked until the page's own players have
  played every candidate for 5 s across the seam (the test drives the media elements, muted, at 8x;
  the events reach the log only through the page's player code), *switch here* keeps the playhead,
  submissions, a rater who prefers the anchor is flagged, and ``python -m ensemble study report``
  prints exactly what the study's Results view shows; the ratings and listening logs are checked
  row by row;
* a restart mid-study (the server killed after rater 1 submitted round 1 and rater 2 listened) loses
  nothing, and each rater resumes at their next round.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from test_app import ROOT, running_app
from test_study import faults_measured, gap_ms

from ensemble.files import sha256_file
from ensemble.study.store import LISTENING_COLUMNS, RATING_COLUMNS, Study, read_log

CHROMIUM = Path("/usr/bin/chromium")
SR = 16000
SEAM = 7.9
EXAMPLES = ROOT / "assets" / "examples"


def study_yaml(folder: Path) -> Path:
    d = {"name": "pilot", "title": "Which continuation fits?",
         "instructions": "Listen to each continuation across the seam, then rank them (1 = best).",
         "consent": "Your rankings are stored under the rater id you give.", "rounds_per_rater": 2, "seed": 7,
         "defaults": {"target_seconds": 11, "k": 2, "alpha": 0.8, "beta": 0.6, "seed": 0},
         "conditions": [{"name": "composite", "ranking": "composite"}],
         "controls": {"anchor": {"pitch_semitones": 1, "delay_ms": 200, "gain_db": 6}},
         "stimuli": [{"id": "s1", "clip": str(EXAMPLES / "babyband_track00020_12s.wav"), "input_seconds": 8},
                     {"id": "s2", "clip": str(EXAMPLES / "babyband_track00039_16s.wav"), "start_seconds": 2,
                      "input_seconds": 8}]}
    path = folder / "pilot.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "ensemble", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """The tiny study, prepared once (``<tmp>/studies/pilot``)."""
    tmp = tmp_path_factory.mktemp("study")
    done = run_cli("study", "prepare", str(study_yaml(tmp)), "--out", str(tmp / "studies" / "pilot"))
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "studies" / "pilot"


def workdir_with(prepared: Path, tmp: Path) -> Path:
    """A fresh app working folder whose studies root (``ratings/studies``) holds a copy of the study."""
    shutil.copytree(prepared, tmp / "ratings" / "studies" / "pilot")
    return tmp


# ---------------------------------------------------------------------------------------- prepare


def test_prepare_writes_a_complete_checked_study(prepared):
    m = json.loads((prepared / "manifest.json").read_text())
    assert m["name"] == "pilot" and m["loudness_matched"] and m["study_sha256"] == sha256_file(prepared / "study.yaml")
    assert m["versions"]["model"] and m["versions"]["database"] and "performer" in m["versions"]["engine"]
    assert m["seeds"] == {"study": 7, "stimuli": {"s1": 0, "s2": 0}}
    assert not list(prepared.parent.glob(".pilot.*"))  # the temporary folder was renamed, none left
    for r in m["rounds"]:
        assert [c["label"] for c in r["candidates"]] == ["composite@1", "composite@2", "reference", "anchor"]
        assert r["seam_seconds"] == pytest.approx(SEAM) and r["seconds"] == pytest.approx(11.0)
        for c in r["candidates"]:
            path = prepared / c["file"]
            assert sha256_file(path) == c["sha256"]
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
            assert info.duration == pytest.approx(11.0, abs=0.01)
            assert c["composite_rank"] == (int(c["label"][-1]) if "@" in c["label"] else None)


def _audio(prepared: Path, rnd: dict, label: str) -> np.ndarray:
    c = next(c for c in rnd["candidates"] if c["label"] == label)
    return sf.read(prepared / c["file"], dtype="float32")[0]


def test_prepared_anchor_and_reference_measured(prepared):
    """The anchor against its base, on the written WAVs: +1 semitone (100 cents), 200 ms late, +6 dB;
    the reference follows the recording's true continuation, the candidates do not."""
    m = json.loads((prepared / "manifest.json").read_text())
    for r in m["rounds"]:
        base, anchor = _audio(prepared, r, "composite@1"), _audio(prepared, r, "anchor")
        cut = int(round(r["cut_seconds"] * SR))
        cents, delay, gain = faults_measured(base, anchor, cut)
        assert abs(cents - 100) <= 15, (r["round_id"], cents)
        assert abs(delay - 200) <= 3 and gap_ms(base, cut) < 5, (r["round_id"], delay)
        assert abs(gain - 6.0) <= 0.5, (r["round_id"], gain)

        clip = sf.read(EXAMPLES / r["clip"], dtype="float32")[0]
        a = int(r["start_seconds"] * SR)
        lo, hi = cut + SR // 10, int(10.5 * SR)  # the continuation, away from the crossfade
        true_cont = clip[a + lo:a + hi]

        ref, *others = [float(np.corrcoef(_audio(prepared, r, lab)[lo:hi], true_cont)[0, 1])
                        for lab in ("reference", "composite@1", "composite@2")]
        assert ref > 0.5 and ref > max(others) + 0.3, (r["round_id"], ref, others)


def test_prepare_refuses_bad_input_and_writes_nothing(tmp_path):
    path = study_yaml(tmp_path)
    d = yaml.safe_load(path.read_text())
    d["defaults"]["k"] = 0
    path.write_text(yaml.safe_dump(d))
    done = run_cli("study", "prepare", str(path), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "defaults.k = 0; allowed: 1..10" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_prepare_failing_midway_leaves_nothing(tmp_path, monkeypatch):
    """A render that fails after writing part of the study: no study folder, no temporary folder."""
    from ensemble.errors import EnsembleError
    from ensemble.jobs import study_prepare

    calls = []

    def render(engine, spec, stim, folder, say):
        calls.append(stim.id)
        (folder / "audio" / stim.id).mkdir(parents=True)
        (folder / "audio" / stim.id / "x.wav").write_bytes(b"half")
        if len(calls) == 2:
            raise EnsembleError("the second stimulus failed")
        return {"round_id": stim.id}

    monkeypatch.setattr(study_prepare, "_render_stimulus", render)
    with pytest.raises(EnsembleError, match="second stimulus"):
        study_prepare.prepare_study(study_yaml(tmp_path), tmp_path / "studies" / "pilot", engine=None)
    assert calls == ["s1", "s2"]
    assert list((tmp_path / "studies").iterdir()) == []


# ------------------------------------------------------------------------------------ the browser

pytestmark_browser = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                    "--disable-component-update", "--disable-sync", "--no-first-run",
                                    "--autoplay-policy=no-user-gesture-required"])
        try:
            yield b
        finally:
            b.close()


class Rater:
    """One rater's browser context on the study page."""

    def __init__(self, browser, url: str, name: str) -> None:
        self.name = name
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.url = url

    def open(self, *, expect_round: str) -> None:
        from playwright.sync_api import expect

        page = self.page
        page.goto(f"{self.url}?study=pilot&rater={self.name}")
        expect(page.locator("#study-header")).to_contain_text("Which continuation fits?", timeout=60_000)
        expect(page.locator("#study-rater textarea, #study-rater input").first).to_have_value(self.name)
        page.locator("#study-consent input").check()
        page.click("#study-start")
        expect(page.locator("#study-progress")).to_contain_text(expect_round, timeout=30_000)
        expect(page.locator("audio.study-player")).to_have_count(4)

    @property
    def round_id(self) -> str:
        return self.page.locator(".study-round").get_attribute("data-round")

    @property
    def session(self) -> str:
        return self.page.locator(".study-round").get_attribute("data-session")

    def locked(self) -> bool:
        return self.page.locator("#study-rank-1 input").first.is_disabled() and \
            self.page.locator("#study-submit").is_disabled()

    def listen(self, pos: int, *, until: float | None = None, from_start: bool = True) -> None:
        """Play candidate ``pos`` through the page's own player (muted, at normal speed: the server
        credits no more than its own clock saw pass) from its start (3 s before the seam; or from
        where it stands) to ``until`` (default: the end), then wait for the server's answer to show."""
        from playwright.sync_api import expect

        sel = f"#study-audio-{pos}"
        seek = "a.currentTime = Number(a.dataset.start); " if from_start else ""
        self.page.evaluate(f"async () => {{ const a = document.querySelector('{sel}'); a.muted = true; "
                           f"{seek}await a.play(); }}")
        if until is None:
            self.page.wait_for_function(f"document.querySelector('{sel}').ended", timeout=30_000)
        else:
            self.page.wait_for_function(f"document.querySelector('{sel}').currentTime >= {until}", timeout=30_000)
            self.page.evaluate(f"document.querySelector('{sel}').pause()")
        expect(self.page.locator(f"#study-heard-{pos}")).not_to_have_text("heard 0.0 s", timeout=15_000)

    def rank(self, ranks: dict[str, int], study: Study) -> dict[int, int]:
        """Rank by label (the test knows the hidden labels from the server's files); returns position -> rank."""
        from playwright.sync_api import expect

        shown = study.shown(self.name, self.round_id)
        by_pos = {c["position"]: ranks[c["label"]] for c in shown}
        expect(self.page.locator("#study-submit")).to_be_enabled(timeout=30_000)
        for pos, r in by_pos.items():
            self.page.locator(f"#study-rank-{pos} input[value='{r}']").check()
        return by_pos

    def submit(self, *, next_round: str) -> None:
        from playwright.sync_api import expect

        self.page.click("#study-submit")
        expect(self.page.locator("#study-status")).to_contain_text("Saved", timeout=30_000)
        expect(self.page.locator("#study-progress")).to_contain_text(next_round, timeout=30_000)

    def listen_all(self) -> None:
        for pos in range(1, 5):
            self.listen(pos)


KEY = "study-researcher-key"


def results_tab_view(page) -> tuple[str, dict[str, list[list[str]]]]:
    """The main Results tab with the researcher key and the study chosen in *Ratings of*: the report
    text and each study table's rows (cell texts) as the page shows them."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="3. Results").click()
    page.locator("#researcher-key input, #researcher-key textarea").first.fill(KEY)
    page.locator("#researcher-key input, #researcher-key textarea").first.press("Enter")
    page.locator("#results-source input").click()
    page.get_by_role("option", name="study: pilot").click()
    text = page.locator("#study-report-text textarea")
    expect(text).to_have_value(re.compile("post-screening"), timeout=60_000)
    expect(page.locator("#results-free")).to_be_hidden()
    tables = {}
    for name in ("screening", "strengths", "agreement", "tau", "listening"):
        sel = f"#study-table-{name} [role=row]"  # Gradio's table: a header row, then one row of gridcells per row
        tables[name] = page.evaluate(
            "sel => Array.from(document.querySelectorAll(sel), r => Array.from(r.querySelectorAll('[role=gridcell]'), "
            "c => c.innerText.trim())).filter(r => r.some(c => c !== ''))", sel)
    return text.input_value(), tables


GOOD = {"reference": 1, "composite@1": 2, "composite@2": 3, "anchor": 4}
CARELESS = {"anchor": 1, "composite@2": 2, "composite@1": 3, "reference": 4}


@pytestmark_browser
def test_two_rater_study_end_to_end(prepared, browser, tmp_path, monkeypatch):
    from playwright.sync_api import expect

    monkeypatch.setenv("ENSEMBLE_WARMUP", "0")  # no free-mode warm-up round competing for the CPU

    work = workdir_with(prepared, tmp_path)
    folder = work / "ratings" / "studies" / "pilot"
    given: dict[tuple[str, str], dict[int, int]] = {}
    sessions: dict[str, str] = {}
    with running_app(work, env={"ENSEMBLE_RESEARCHER_KEY": KEY}) as app:
        study = Study(folder)
        alice, bob = Rater(browser, app.url, "alice"), Rater(browser, app.url, "bob")
        alice.open(expect_round="Round 1 of 2")
        bob.open(expect_round="Round 1 of 2")
        assert alice.locked() and bob.locked()
        page = alice.page
        # every player starts 3 s before the seam; no figures, no scores in a study round
        starts = page.evaluate("Array.from(document.querySelectorAll('audio.study-player'), a => a.currentTime)")
        assert starts == pytest.approx([SEAM - 3.0] * 4, abs=0.05)
        assert page.locator("#study-players img").count() == 0
        assert "composite" not in page.locator("#study-players").inner_html()
        # switch here: candidate 2 continues at candidate 1's playhead
        alice.listen(1, until=6.5)
        page.evaluate("document.querySelector('#study-audio-1').play()")
        page.wait_for_function("document.querySelector('#study-audio-1').currentTime >= 7.0")
        page.click("#study-switch-2")
        page.wait_for_function("!document.querySelector('#study-audio-2').paused")
        t1, t2 = page.evaluate("[document.querySelector('#study-audio-1').currentTime, "
                               "document.querySelector('#study-audio-2').currentTime]")
        assert page.evaluate("document.querySelector('#study-audio-1').paused")
        assert abs(t2 - t1) < 0.6, (t1, t2)
        page.evaluate("document.querySelector('#study-audio-2').pause()")
        # three candidates heard: still locked, the note names the fourth
        for pos in (1, 2, 3):
            alice.listen(pos)
        expect(page.locator("#study-listen-note")).to_contain_text("candidate 4: heard 0.0 s of 5 s", timeout=15_000)
        assert alice.locked()
        alice.listen(4)
        expect(page.locator("#study-listen-note")).to_contain_text("ranking unlocked", timeout=15_000)
        for rater, ranks in ((alice, GOOD), (bob, CARELESS)):
            if rater is bob:
                bob.listen_all()
            for i in (1, 2):
                rid = rater.round_id
                sessions[rater.name] = rater.session
                given[(rater.name, rid)] = rater.rank(ranks, study)
                rater.submit(next_round="Round 2 of 2" if i == 1 else "All 2 rounds done")
                if i == 1:
                    assert rater.locked()  # a new round: locked again
                    rater.listen_all()
        # the main Results tab, the study chosen there, with the researcher key
        view, view_tables = results_tab_view(page)
        page.screenshot(path=str(tmp_path / "study.png"), full_page=True)

    # ratings log, row by row: each rater's rounds in their order, each round's candidates in their shown order
    rows = read_log(folder / "logs" / "ratings.csv", RATING_COLUMNS)
    assert len(rows) == 2 * 2 * 4
    study = Study(folder)
    for name in ("alice", "bob"):
        state = study.rater(name)
        mine = [r for r in rows if r["rater_id"] == name]
        assert [r["round_id"] for r in mine[::4]] == list(state.rounds)
        for index, rid in enumerate(state.rounds, start=1):
            sub = [r for r in mine if r["round_id"] == rid]
            shown = study.shown(name, rid)
            assert [r["label"] for r in sub] == [c["label"] for c in shown]
            assert [int(r["human_rank"]) for r in sub] == [given[(name, rid)][c["position"]] for c in shown]
            assert [r["composite_rank"] for r in sub] == [str(c["composite_rank"] or "") for c in shown]
            for r in sub:
                assert (r["study"], r["round_index"], r["order_seed"], r["n_shown"]) == \
                    ("pilot", str(index), str(state.seed), "4")
                assert (r["loudness_matched"], r["blind"], r["seam_heard"]) == ("True", "True", "True")
                assert float(r["heard_seconds"]) >= 5.0 and r["session_id"] == sessions[name]
    # listening log: every row came from the page (its session, the client's clock), every candidate heard
    events = read_log(folder / "logs" / "listening.csv", LISTENING_COLUMNS)
    assert {e["session_id"] for e in events} == set(sessions.values())
    assert all(int(e["client_ms"]) > 0 for e in events)
    assert {e["event"] for e in events} >= {"play", "progress", "ended", "seek", "switch", "pause"}
    for name in ("alice", "bob"):
        for rid in study.rater(name).rounds:
            for pos, heard in study.heard(name, rid).items():
                assert heard.enough(5.0), (name, rid, pos, heard)
                plays = [e for e in events if (e["rater_id"], e["round_id"], e["shown_position"], e["event"])
                         == (name, rid, str(pos), "play")]
                assert plays and all(float(e["playback_rate"]) == 1.0 for e in plays)
    # the rows carry what the report needs: role, condition, round, study and version, matched playback,
    # and each listening row when the server received it and what its clock credited
    roles = {"reference": "reference", "anchor": "anchor", "composite@1": "system", "composite@2": "system"}
    assert all(r["role"] == roles[r["label"]] and r["condition"] == r["label"].split("@")[0] for r in rows)
    assert {(r["study"], r["study_sha256"], r["tau_condition"], r["screening_threshold"], r["log_version"])
            for r in rows} == {("pilot", study.manifest["study_sha256"], "composite", "0.15", "2")}
    assert all(e["role"] == roles[e["label"]] and int(e["server_ms"]) > 0 for e in events)
    heard_rows = [e for e in events if e["event"] in ("progress", "pause", "ended")]
    assert all(0.0 <= float(e["credited_s"]) <= float(e["media_to_s"]) - float(e["media_from_s"]) + 1e-6
               for e in heard_rows)

    # the report, from the released logs alone, equals the Results tab: its text and every table
    done = run_cli("study", "report", str(folder))
    assert done.returncode == 0, done.stderr[-2000:]
    text, line = done.stdout.rstrip("\n").rsplit("\n", 1)
    assert text == view
    for name, shown_rows in view_tables.items():
        with open(folder / "report" / f"{name}.csv", newline="") as f:
            header, *want = list(csv.reader(f))
        assert shown_rows == want, (name, shown_rows, want)
    assert view_tables["screening"] and view_tables["strengths"] and view_tables["listening"]
    # only the two logs, nothing else of the study (no manifest, no study file, no audio): the same report
    released = tmp_path / "released"
    released.mkdir()
    for name in ("ratings.csv", "listening.csv"):
        shutil.copy(folder / "logs" / name, released / name)
    alone = run_cli("study", "report", str(released))
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert alone.stdout == done.stdout and sorted(p.name for p in released.iterdir()) == \
        ["listening.csv", "ratings.csv", "report"]
    report = json.loads(line)
    assert report["screening"]["pass_rate"] == 0.5 and report["excluded_raters"] == ["bob"]
    assert [r["flagged"] for r in report["screening"]["raters"]] == [False, True]
    theta = dict(zip(report["strengths"]["items"], report["strengths"]["theta"], strict=True))
    assert theta["reference"] > theta["composite@1"] > theta["composite@2"] > theta["anchor"]
    assert report["composite_tau"]["mean"] == 1.0 and report["composite_tau"]["n_raters"] == 1
    assert "1 of 2 raters pass (pass rate 50%); left out: bob" in view
    assert "CI undefined (fewer than 2 raters)" in view  # one rater left after screening
    for name in ("report.txt", "report.json", "strengths.png", "screening.png"):
        assert (folder / "report" / name).stat().st_size > 0


@pytestmark_browser
def test_restart_mid_study_loses_nothing_and_resumes(prepared, browser, tmp_path, monkeypatch):
    from playwright.sync_api import expect

    monkeypatch.setenv("ENSEMBLE_WARMUP", "0")

    work = workdir_with(prepared, tmp_path)
    folder = work / "ratings" / "studies" / "pilot"
    with running_app(work) as app:
        alice, bob = Rater(browser, app.url, "alice"), Rater(browser, app.url, "bob")
        alice.open(expect_round="Round 1 of 2")
        alice.listen_all()
        first = alice.round_id
        alice.rank(GOOD, Study(folder))
        alice.submit(next_round="Round 2 of 2")
        bob.open(expect_round="Round 1 of 2")
        bob.listen_all()  # heard, not yet submitted
        expect(bob.page.locator("#study-submit")).to_be_enabled(timeout=30_000)
        ratings_before = (folder / "logs" / "ratings.csv").read_bytes()
        listening_before = (folder / "logs" / "listening.csv").read_bytes()
        app.process.send_signal(signal.SIGKILL)  # no clean shutdown
        app.process.wait(timeout=30)
    with running_app(work) as app:
        assert (folder / "logs" / "ratings.csv").read_bytes() == ratings_before
        assert (folder / "logs" / "listening.csv").read_bytes() == listening_before
        for r in (alice, bob):
            r.url = app.url
        alice.open(expect_round="Round 2 of 2")
        assert alice.round_id != first and alice.round_id == Study(folder).rater("alice").rounds[1]
        bob.open(expect_round="Round 1 of 2")
        assert bob.round_id == Study(folder).rater("bob").rounds[0]
        # bob's listening survived the restart: his ranking is open at once
        expect(bob.page.locator("#study-submit")).to_be_enabled(timeout=30_000)
        bob.rank(GOOD, Study(folder))
        bob.submit(next_round="Round 2 of 2")
    assert (folder / "logs" / "ratings.csv").read_bytes().startswith(ratings_before)  # appended, nothing lost
    rows = read_log(folder / "logs" / "ratings.csv", RATING_COLUMNS)
    assert len(rows) == 8
    assert [r["rater_id"] for r in rows] == ["alice"] * 4 + ["bob"] * 4


def _component_id(url: str, elem_id: str) -> int:
    import urllib.request

    with urllib.request.urlopen(url + "config", timeout=30) as r:
        config = json.load(r)
    return next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)


def forge(url: str, component_id: int, payload: dict) -> dict:
    """Call the players' server function as a tampered page would: a POST to Gradio's component server."""
    import urllib.request

    body = json.dumps({"session_hash": "forger", "component_id": component_id, "fn_name": "log_listening",
                       "data": payload}).encode()
    req = urllib.request.Request(url + "gradio_api/component_server/", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


@pytestmark_browser
def test_forged_listening_is_clamped_and_the_submission_refused(prepared, browser, tmp_path, monkeypatch):
    """A page that claims 5 s heard of every candidate within a second, sent to the real server: the
    server's clock credits about what passed, the ranking stays locked (the server's unlock check),
    and a submission forced through the page (its controls enabled by hand) is refused, saying why."""
    import time

    from playwright.sync_api import expect

    monkeypatch.setenv("ENSEMBLE_WARMUP", "0")
    work = workdir_with(prepared, tmp_path)
    folder = work / "ratings" / "studies" / "pilot"
    with running_app(work) as app:
        mallory = Rater(browser, app.url, "mallory")
        mallory.open(expect_round="Round 1 of 2")
        rid, session = mallory.round_id, mallory.session
        cid = _component_id(app.url, "study-players")
        base = {"study": "pilot", "rater": "mallory", "session": session, "round": rid}
        t0 = time.monotonic()
        for pos in range(1, 5):
            forge(app.url, cid, {**base, "events": [{"position": pos, "event": "play", "from": 4.9}]})
            answer = forge(app.url, cid, {**base, "events": [
                {"position": pos, "event": "progress", "from": 4.9, "to": 7.4},
                {"position": pos, "event": "ended", "from": 7.4, "to": 11.0}]})
        elapsed = time.monotonic() - t0
        assert elapsed < 3.0, elapsed  # four forged 6.1 s listens in well under a second each
        assert not answer["unlocked"]
        for pos in range(1, 5):
            assert answer["heard"][str(pos)]["seconds"] <= 1.1 * elapsed + 0.01, answer
        assert "candidate 1: the page reported 6.1 s heard" in "; ".join(answer["clamped"])
        events = read_log(folder / "logs" / "listening.csv", LISTENING_COLUMNS)
        ended = [e for e in events if e["event"] == "ended"]
        assert len(ended) == 4 and all(float(e["credited_s"]) < 1.0 for e in ended)

        assert "candidate 1: heard" in "; ".join(answer["missing"])  # the server's unlock check

        page = mallory.page
        assert mallory.locked()
        # a tampered page: the rank controls and the button enabled by hand
        page.evaluate("""() => document.querySelectorAll(
            '[id^=study-rank-] input, #study-submit').forEach(e => { e.disabled = false; })""")
        for pos, rank in zip(range(1, 5), (1, 2, 3, 4), strict=True):
            page.locator(f"#study-rank-{pos} input[value='{rank}']").check()
        page.click("#study-submit")
        status = page.locator("#study-status")
        expect(status).to_contain_text("Not saved", timeout=30_000)
        expect(status).to_contain_text("not yet heard enough to rank (each candidate 5 s by the server's clock")
        expect(status).to_contain_text("the page reported 6.1 s heard, the server's clock allows")
    assert read_log(folder / "logs" / "ratings.csv", RATING_COLUMNS) == []
