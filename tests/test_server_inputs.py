"""Issue 16, inputs: every API parameter is checked by the app, which answers in its own words.

The real app (``python app.py`` on a free port, one server for the module) driven from
``gradio_client``; each test failed on the code before issue 16's fix:

* ``/rate`` refuses ranks that are not a list of whole numbers (``"312"``, a dict) and a rater id that
  is not text, naming the field, the value and what is allowed, and writes nothing;
* ``/generate``'s range errors (K, alpha, beta, target, followers) give the app's message naming the
  field, not Gradio's "Value 0 is less than minimum value 1.", and no traceback in the server's log;
  the alpha/beta sliders reach the allowed range (``Limits.max_weight``);
* a request naming a server path is refused in words; random bytes named ``.mp3`` are "not readable
  audio"; a WAV whose data stops short of its header is reported as truncated;
* an upload above the configured size is refused, and a client over the configured request rate is
  told to wait.
"""

from __future__ import annotations

import json
import struct
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_app import SR, generate, read_rows, running_app, shortest_example

RATE_LIMIT = 40  # requests per minute per client for this module's server (ENSEMBLE_RATE_LIMIT)
READ_RATE_LIMIT = 25  # the same for the endpoints that only read (ENSEMBLE_READ_RATE_LIMIT)
UPLOAD_MB = 5  # ENSEMBLE_MAX_UPLOAD_MB


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    env = {"ENSEMBLE_MAX_UPLOAD_MB": str(UPLOAD_MB), "ENSEMBLE_RATE_LIMIT": str(RATE_LIMIT),
           "ENSEMBLE_READ_RATE_LIMIT": str(READ_RATE_LIMIT), "ENSEMBLE_WARMUP": "0"}
    with running_app(tmp_path_factory.mktemp("inputs-app"), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def client(app, tmp_path_factory):
    from gradio_client import Client

    return Client(app.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


@pytest.fixture(scope="module")
def round_id(client) -> str:
    _, _, rnd, _ = generate(client, shortest_example(), target=10.0, k=3)
    return rnd["round_id"]


def _call(client, *args, api_name: str):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as err:
        client.predict(*args, api_name=api_name)
    return str(err.value)


@pytest.fixture
def log_mark(app) -> int:
    """Where the server's log stood when the test began (each test reads only its own lines)."""
    return len(app.log())


def _generate_args(**change):
    from gradio_client import handle_file

    args = {"audio": handle_file(str(shortest_example())), "target_seconds": 12.0, "k": 3, "alpha": 0.8,
            "beta": 0.6, "lookbacks": [7.0, 7.5, 8.0, 8.5], "followers": ["Bass", "Drums", "Keys"],
            "transpose": False, "seed": 0, "blind": True, "loudness_matched": False, "rater_id": "r"}
    args.update(change)
    return list(args.values())


def _no_traceback(app, message: str, since: int) -> None:
    assert "Traceback" not in message and "Traceback" not in app.log()[since:], app.log()[since:][-3000:]


# ------------------------------------------------------------------------------------------ /rate


@pytest.mark.parametrize("ranks, shown", [("312", "'312'"), ({"2": 0, "1": 0, "3": 0}, "{'2': 0")])
def test_rate_refuses_ranks_that_are_not_a_list_of_whole_numbers(app, client, round_id, ranks, shown, log_mark):
    before = len(read_rows(app))
    message = _call(client, round_id, ranks, None, "", "someone", api_name="/rate")
    assert "ranks" in message and shown in message
    assert "allowed: a list of" in message and "whole numbers" in message
    assert len(read_rows(app)) == before
    _no_traceback(app, message, log_mark)


def test_rate_refuses_a_rater_id_that_is_not_text(app, client, round_id, log_mark):
    before = len(read_rows(app))
    message = _call(client, round_id, [1, 2, 3], None, "", 12345, api_name="/rate")
    assert "rater_id 12345" in message and "allowed: text" in message
    assert len(read_rows(app)) == before
    _no_traceback(app, message, log_mark)


# ------------------------------------------------------------------------------------------ /generate


@pytest.mark.parametrize("change, expected", [
    ({"k": 0}, "K = 0; allowed: a whole number 1..10"),
    ({"k": 11}, "K = 11; allowed: a whole number 1..10"),
    ({"alpha": -0.5}, "alpha = -0.5; allowed: 0..10"),
    ({"beta": 10.5}, "beta = 10.5; allowed: 0..10"),
    ({"target_seconds": 700.0}, "target length 700 s; allowed: up to 600 s"),
    ({"target_seconds": 1.0}, "target length 1 s must be longer than the input"),
    ({"followers": ["Tuba"]}, "followers 'Tuba'; allowed: Bass, Drums, Keys"),
    ({"lookbacks": [99.0]}, "lookback 99 s; allowed: 7, 7.5, 8, 8.5 s"),
])
def test_generate_range_errors_name_the_field(app, client, change, expected, log_mark):
    message = _call(client, *_generate_args(**change), api_name="/generate")
    assert expected in message, message
    assert "less than minimum" not in message and "greater than maximum" not in message
    assert "not in the list of choices" not in message
    _no_traceback(app, message, log_mark)


def test_weights_up_to_the_allowed_maximum_are_reachable(app):
    """The sliders reach Limits.max_weight (10), the range check_settings allows."""
    with urllib.request.urlopen(app.url + "config", timeout=10) as r:
        config = json.load(r)
    labels = {c["props"].get("label"): c["props"] for c in config["components"] if "props" in c}
    for name in ("alpha (relevance weight)", "beta (coherence weight)"):
        assert (labels[name]["minimum"], labels[name]["maximum"]) == (0, 10)


def _raw_generate(app, audio: dict) -> str:
    """POST /generate with ``audio`` as given (gradio_client would upload a local file of that path
    instead) and return the event stream's text."""
    args = _generate_args()
    args[0] = audio
    body = json.dumps({"data": [*args, "auto", None]}).encode()  # timbre, and the session's state
    req = urllib.request.Request(app.url + "gradio_api/call/generate", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        event_id = json.load(r)["event_id"]
    with urllib.request.urlopen(app.url + f"gradio_api/call/generate/{event_id}", timeout=120) as r:
        return r.read().decode()


def test_a_server_path_is_refused_in_words(app):
    for path in ("/etc/passwd", str(Path(app.workdir) / "ratings" / "ratings.csv")):
        stream = _raw_generate(app, {"path": path, "meta": {"_type": "gradio.FileData"}})
        assert "event: error" in stream, stream
        assert "data: null" not in stream, stream
        assert "not uploaded by a user" in stream, stream
        assert "root:" not in stream  # nothing of the file itself


def test_random_bytes_named_mp3_are_not_readable_audio(app, client, tmp_path, log_mark):
    from gradio_client import handle_file

    junk = tmp_path / "song.mp3"
    junk.write_bytes(np.random.default_rng(16).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    message = _call(client, *_generate_args(audio=handle_file(str(junk))), api_name="/generate")
    assert "'song.mp3' is not a readable audio file: its contents are not a WAV, FLAC, OGG or MP3" in message, \
        message
    assert "possibly a pipe" not in message and "does not exist" not in message
    _no_traceback(app, message, log_mark)


def test_a_truncated_wav_is_reported_as_truncated(app, client, tmp_path, log_mark):
    from gradio_client import handle_file

    whole = tmp_path / "whole.wav"
    t = np.arange(8 * SR) / SR
    sf.write(whole, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), SR, subtype="PCM_16")
    data = whole.read_bytes()
    assert data[36:40] == b"data" and struct.unpack("<I", data[40:44])[0] == 8 * SR * 2
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: 44 + 5 * SR * 2])  # the header still says 8 s; 5 s of data follow it
    message = _call(client, *_generate_args(audio=handle_file(str(cut))), api_name="/generate")
    assert "'cut.wav' is truncated" in message and "8.00 s" in message and "5.00 s" in message, message
    _no_traceback(app, message, log_mark)


# ------------------------------------------------------------------------------------------ caps


def test_an_upload_above_the_size_cap_is_refused(app, client, tmp_path):
    big = tmp_path / "big.wav"
    x = np.zeros((UPLOAD_MB + 1) * 1024 * 1024 // 2, np.int16)
    x[::400] = 300
    sf.write(big, x, SR, subtype="PCM_16")
    from gradio_client import handle_file

    with pytest.raises(Exception) as err:  # the upload route refuses it before any handler runs
        client.predict(*_generate_args(audio=handle_file(str(big))), api_name="/generate")
    assert "File too large" in str(err.value) or "exceeds" in str(err.value) or "413" in str(err.value)


@pytest.mark.parametrize("api_name, args", [("/summary", ("",)), ("/candidate_audio", (1,)), ("/take", (1,)),
                                           ("/ratings", ("not the key",))])
def test_the_reading_endpoints_are_capped_per_client(app, tmp_path, round_id, api_name, args):
    """/candidate_audio, /take, /summary and /ratings count against their own per-client cap (a
    fresh client each: the cap is per address, so this uses up the reads of this module's address
    for a minute, one endpoint after the other)."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(app.url, verbose=False, download_files=str(tmp_path))
    full = (round_id, *args) if api_name in ("/candidate_audio", "/take") else args
    messages = []
    for _ in range(READ_RATE_LIMIT + 3):
        try:
            client.predict(*full, api_name=api_name)
        except AppError as exc:
            messages.append(str(exc))
        if any("too many requests" in m for m in messages):
            break
    assert any("too many requests" in m and f"{READ_RATE_LIMIT} per minute" in m for m in messages), messages[-3:]
    assert app.process.poll() is None


def test_a_client_over_the_request_rate_is_told_to_wait(app, client):
    """Last in the module: it uses up this client's requests for a minute."""
    from gradio_client.exceptions import AppError

    messages = []
    for _ in range(RATE_LIMIT + 5):
        try:
            client.predict("0" * 32, [1, 2, 3], None, "", "r", api_name="/rate")
        except AppError as exc:
            messages.append(str(exc))
    assert any("too many requests" in m and f"{RATE_LIMIT} per minute" in m for m in messages), messages[-3:]
    assert app.process.poll() is None
