"""The real app in headless Chromium (Playwright): upload a WAV (44.1 kHz stereo PCM-24), generate, see K
players (playing it back at its own rate and channels) with the figures and scores hidden (blind),
try an incomplete ranking (told why, nothing saved), rank every candidate, submit, and see the
figures and scores revealed and the Results tab's table updated.

Needs ``/usr/bin/chromium`` (``scripts/test.sh`` installs it with apt when missing); skipped without
it. Screenshots go to ``tmp_path``, and one copy to ``$ENSEMBLE_SCREENSHOT`` (default
``/tmp/ensemble_screenshot.png``) outside the repository.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from test_app import read_rows, running_app, shortest_example

from ensemble.audio import load_audio

CHROMIUM = Path("/usr/bin/chromium")
K = 3
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (scripts/test.sh "
                                                                "installs it with apt)")


RESEARCHER_KEY = "browser-test-key"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("browser-app"),
                     env={"ENSEMBLE_RESEARCHER_KEY": RESEARCHER_KEY}) as running:
        yield running


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def _set_number(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(f"{value:g}")
    box.press("Enter")


def test_upload_generate_rank_submit_results(app, page, tmp_path):
    from playwright.sync_api import expect

    # a 44.1 kHz stereo PCM-24 recording: the players get it back at its own rate and channels
    hi = soxr.resample(load_audio(shortest_example()).audio, 16000, 44100, quality="HQ")
    clip = tmp_path / "my melody.wav"
    sf.write(clip, np.stack([hi, 0.7 * hi], axis=1), 44100, subtype="PCM_24")
    page.goto(app.url + "?rater=pw-rater")
    expect(page.locator("#rater textarea, #rater input").first).to_have_value("pw-rater", timeout=30_000)
    page.locator("#input-audio input[type=file]").set_input_files(str(clip))
    expect(page.locator("#input-audio")).to_contain_text("0:08", timeout=30_000)  # the upload's player
    _set_number(page, "target-seconds", 12)
    _set_number(page, "k", K)
    expect(page.locator("#blind input[type=checkbox]")).to_be_checked()
    page.click("#generate-btn")

    expect(page.locator("#report-card img")).to_be_visible(timeout=90_000)
    expect(page.locator(f"#card-{K}")).to_be_visible(timeout=180_000)
    for i in range(1, K + 1):
        card = page.locator(f"#card-{i}")
        expect(card.get_by_test_id(f"waveform-Candidate {i}")).to_be_visible()
        # blind: figures and scores hidden before submitting
        expect(page.locator(f"#figure-{i}")).to_be_hidden()
        expect(page.locator(f"#scores-{i}")).to_be_hidden()
        assert page.locator(f"#audio-{i} button[aria-label*='ownload']").count() == 0
    for i in range(K + 1, 11):
        expect(page.locator(f"#card-{i}")).to_be_hidden()
    expect(page.locator("#overview")).to_be_hidden()

    # an incomplete ranking: a warning, nothing written
    page.locator("#rank-1 input[value='1']").check()
    page.click("#submit-btn")
    expect(page.get_by_text("has no rank")).to_be_visible(timeout=30_000)
    assert len(read_rows(app)) == 0

    human = {1: 2, 2: 3, 3: 1}
    for i, rank in human.items():
        page.locator(f"#rank-{i} input[value='{rank}']").check()
    page.locator("#favourite input[value='3']").check()
    page.locator("#comment textarea").fill("from the browser")
    page.click("#submit-btn")
    expect(page.locator("#submit-status")).to_contain_text("Saved", timeout=30_000)
    for i in range(1, K + 1):
        expect(page.locator(f"#scores-{i}")).to_contain_text("Composite rank")
        expect(page.locator(f"#figure-{i} img")).to_be_visible()
    expect(page.locator("#overview img")).to_be_visible()
    page.screenshot(path=str(tmp_path / "listen.png"), full_page=True)

    frame = read_rows(app).sort_values("shown_position")
    assert len(frame) == K
    assert frame["human_rank"].tolist() == [human[i] for i in range(1, K + 1)]
    assert frame["favourite"].tolist() == [0, 0, 1]
    assert set(frame["rater_id"]) == {"pw-rater"} and set(frame["comment"]) == {"from the browser"}

    page.get_by_role("tab", name="3. Results").click()
    table = page.locator("#ratings-table")
    # a visitor without the researcher key: aggregates only (no rows, no rater ids, no CSV)
    expect(page.locator("#summary-text textarea")).to_have_value(
        re.compile(r"^1 submission \(3 rows\) from 1 rater"), timeout=30_000)
    expect(page.locator("#summary-text textarea")).not_to_have_value(re.compile("pw-rater"))
    expect(page.locator("#per-submission")).not_to_contain_text("pw-rater")
    expect(table).not_to_contain_text("pw-rater")
    expect(page.locator("#ratings-csv a")).to_have_count(0)
    key_box = page.locator("#researcher-key input, #researcher-key textarea").first
    key_box.fill(RESEARCHER_KEY)
    key_box.press("Enter")
    expect(table).to_contain_text("pw-rater", timeout=30_000)
    expect(table).to_contain_text(frame["submission_id"].iloc[0][:12])
    expect(page.locator("#summary-text textarea")).to_have_value(
        re.compile(r"^1 submission \(3 rows\) from 1 rater"), timeout=30_000)
    expect(page.locator("#first-choice img")).to_be_visible()
    page.screenshot(path=str(tmp_path / "results.png"), full_page=True)

    stable = Path(os.environ.get("ENSEMBLE_SCREENSHOT", "/tmp/ensemble_screenshot.png"))
    try:
        shutil.copy(tmp_path / "listen.png", stable)
        shutil.copy(tmp_path / "results.png", stable.with_name(stable.stem + "_results.png"))
    except OSError:
        pass  # the copy outside tmp_path is a convenience for people, not part of the test
