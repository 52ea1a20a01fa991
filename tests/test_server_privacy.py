"""Issue 16, privacy: raters' data is the researcher's.

The real app (``python app.py``, ``ENSEMBLE_RESEARCHER_KEY`` and ``ENSEMBLE_RATER_SALT`` set) driven
from ``gradio_client``; each test failed on the code before issue 16's fix:

* ``/summary`` without the key gives aggregates only (no rater id anywhere); with the key, the
  per-submission rater ids; a wrong key is refused in words;
* the full log (``/ratings``) needs the key;
* with a salt, the log holds a salted hash of the rater id, never the id itself;
* with ``ENSEMBLE_STUDY_ONLY=1`` free mode's ``/generate`` is refused, so a study's blind clips cannot
  be generated again with their scores shown (a second, short-lived server).
The Results tab's own view (no rows, rater ids or CSV without the key) is checked in the browser by
``tests/test_app_browser.py``.
"""

from __future__ import annotations

import json

import pytest
from test_app import generate, read_rows, running_app, shortest_example

KEY = "correct horse battery staple"
SALT = "pepper-16"
RATER = "alice-the-rater"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    env = {"ENSEMBLE_RESEARCHER_KEY": KEY, "ENSEMBLE_RATER_SALT": SALT, "ENSEMBLE_WARMUP": "0"}
    with running_app(tmp_path_factory.mktemp("privacy-app"), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def client(app, tmp_path_factory):
    from gradio_client import Client

    return Client(app.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


@pytest.fixture(scope="module")
def rated(client) -> dict:
    _, _, rnd, _ = generate(client, shortest_example(), target=10.0, k=2, rater=RATER)
    return client.predict(rnd["round_id"], [2, 1], 1, "a private remark", RATER, api_name="/rate")


def test_the_log_holds_a_salted_hash_of_the_rater_id(app, rated):
    from ensemble.ratings.log import pseudonymize_rater_id

    text = app.ratings_file.read_text()
    assert RATER not in text
    rows = read_rows(app)
    assert set(rows["rater_id"]) == {pseudonymize_rater_id(RATER, SALT)}
    assert pseudonymize_rater_id(RATER, SALT).startswith("p-") and pseudonymize_rater_id(RATER, "") == RATER


def test_public_summary_is_aggregate_only(app, client, rated):
    public = client.predict(api_name="/summary")
    assert public["n_submissions"] == 1 and public["n_raters"] == 1
    dumped = json.dumps(public)
    assert "rater_id" not in dumped and RATER not in dumped and "p-" not in dumped
    assert "private remark" not in dumped


def test_the_researcher_key_shows_per_rater_data(app, client, rated):
    from gradio_client.exceptions import AppError

    from ensemble.ratings.log import pseudonymize_rater_id

    full = client.predict(KEY, api_name="/summary")
    assert [p["rater_id"] for p in full["per_submission"]] == [pseudonymize_rater_id(RATER, SALT)]
    with pytest.raises(AppError, match="researcher_key does not match"):
        client.predict("guess", api_name="/summary")


def test_the_full_log_needs_the_key(app, client, rated):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="needs researcher_key"):
        client.predict("", api_name="/ratings")
    with pytest.raises(AppError, match="does not match"):
        client.predict("guess", api_name="/ratings")
    path = client.predict(KEY, api_name="/ratings")
    with open(path) as f:
        text = f.read()
    assert "a private remark" in text and text.count("\n") == 3  # header + K = 2 rows


def test_study_only_server_refuses_free_mode(tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    with running_app(tmp_path / "study-only", env={"ENSEMBLE_STUDY_ONLY": "1", "ENSEMBLE_WARMUP": "0"}) as app:
        client = Client(app.url, verbose=False, download_files=str(tmp_path / "downloads"))
        with pytest.raises(AppError, match="free mode is off on this server while a listening study runs"):
            generate(client, shortest_example(), target=10.0, k=2, blind=False)
        assert not app.round_folders()
