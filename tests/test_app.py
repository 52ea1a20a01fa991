"""The real app, started as ``python app.py`` on a free port and driven from ``gradio_client``.

* generate K = 3 from a shipped example, rate it, and find exactly 3 new rows in the ratings log;
  invalid ratings (duplicate, missing, too few ranks) and a second rating of the same round write
  nothing; ``/summary`` agrees with what was submitted;
* every bad input of the issue's list (no file, not audio, silent, too short, too long, target <=
  input, an unknown timbre) gives its readable message, never a traceback, writes nothing and leaves
  no files behind, and the app keeps serving;
* the timbre a round was asked for renders it, and its JSON, status and ratings rows name it;
* SIGTERM shuts the app down cleanly and removes its temporary files, Gradio's included (no file of
  the run remains under its temporary folder).

The app loads the shipped ``checkpoints/`` and ``assets/`` (or ``ENSEMBLE_CHECKPOINTS``,
``ENSEMBLE_DATABASE``, ``ENSEMBLE_DRUMS`` when set); its ratings log and temporary files go into
``tmp_path`` (``RATINGS_DIR``, ``TMPDIR``), never into the repository.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def shortest_example() -> Path:
    """The shortest clip listed in assets/examples/manifest.json."""
    manifest = json.loads((ROOT / "assets" / "examples" / "manifest.json").read_text())
    clip = min(manifest["clips"], key=lambda c: c["seconds"])
    return ROOT / "assets" / "examples" / clip["file"]


def missing_assets() -> list[str]:
    """Files the app needs that are not there (honouring the ENSEMBLE_* overrides)."""
    ckpt = Path(os.environ.get("ENSEMBLE_CHECKPOINTS", ROOT / "checkpoints"))
    rag = Path(os.environ.get("ENSEMBLE_DATABASE", ROOT / "assets" / "rag"))
    drums = Path(os.environ.get("ENSEMBLE_DRUMS", ROOT / "assets" / "drums"))
    need = [ckpt / f"decoder_{n}.pt" for n in ("Guitar", "Bass", "Keys")] + [ckpt / "arranger.pt"]
    need += [rag / "manifest.json", drums / "manifest.json"]
    return [str(p) for p in need if not p.exists()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class App:
    """A running ``python app.py``."""

    url: str
    process: subprocess.Popen
    workdir: Path
    log_path: Path
    startup_s: float

    @property
    def ratings_file(self) -> Path:
        return self.workdir / "ratings" / "ratings.csv"

    @property
    def tmp(self) -> Path:
        return self.workdir / "tmp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def round_folders(self) -> list[Path]:
        return [p for p in self.tmp.glob("ensemble-app-*/*") if re.fullmatch(r"[0-9a-f]{32}", p.name)]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


@contextlib.contextmanager
def running_app(workdir: Path, *, timeout_s: float = 180.0, env: dict[str, str] | None = None) -> Iterator[App]:
    """Start ``python app.py`` on a free port with its files under ``workdir``; stop it on exit.

    ``env`` adds to (or overrides) the app's environment, e.g. ``ENSEMBLE_RATE_LIMIT``.
    """
    missing = missing_assets()
    if missing:
        pytest.fail("the app's shipped models/databases are missing: " + ", ".join(missing)
                    + " (see README: checkpoints/, assets/rag, assets/drums)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    port = _free_port()
    inherited = {k: v for k, v in os.environ.items() if k not in ("GRADIO_TEMP_DIR", "ENSEMBLE_RUN_DIR")}
    env = {**inherited, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "RATINGS_DIR": str(workdir / "ratings"),
           "TMPDIR": str(workdir / "tmp"),  # GRADIO_TEMP_DIR unset: the app puts Gradio's files in its own folder
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    log_path = workdir / "app.log"
    url = f"http://127.0.0.1:{port}/"
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    app = App(url, proc, workdir, log_path, 0.0)
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode} before serving:\n{app.log()[-3000:]}")
            if time.monotonic() - t0 > timeout_s:
                pytest.fail(f"app.py did not serve within {timeout_s:g} s:\n{app.log()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        app.startup_s = time.monotonic() - t0
        yield app
    finally:
        app.stop()


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[App]:
    with running_app(tmp_path_factory.mktemp("app")) as running:
        yield running


@pytest.fixture(scope="module")
def client(app, tmp_path_factory):
    from gradio_client import Client

    return Client(app.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def generate(client, audio: Path | None, *, target: float = 12.0, k: int = 3, blind: bool = True,
             matched: bool = False, rater: str = "client-rater", timbre: str | None = None):
    """Call /generate with the page's defaults for everything else (``timbre`` None: left out, as
    clients written before it was a parameter do)."""
    from gradio_client import handle_file

    extra = () if timbre is None else (timbre,)
    return client.predict(handle_file(str(audio)) if audio is not None else None, target, k, 0.8, 0.6,
                          [7.0, 7.5, 8.0, 8.5], ["Bass", "Drums", "Keys"], False, 0, blind, matched, rater,
                          *extra, api_name="/generate")


def read_rows(app: App):
    from ensemble.ratings.log import read_ratings

    return read_ratings(app.ratings_file, missing_ok=True)


# ------------------------------------------------------------------------------------------ tests


def test_page_and_named_endpoints(app, client):
    with urllib.request.urlopen(app.url, timeout=10) as r:
        assert r.status == 200
    named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/generate", "/rate", "/summary"} <= set(named)
    params = [p["parameter_name"] for p in named["/generate"]["parameters"]]
    assert params[:3] == ["audio", "target_seconds", "k"]
    assert params[-3:] == ["loudness_matched", "rater_id", "timbre"]  # timbre last: older clients still fit
    assert [p["parameter_name"] for p in named["/rate"]["parameters"]][:2] == ["round_id", "ranks"]


def test_generate_rate_and_exactly_k_new_rows(app, client):
    from gradio_client.exceptions import AppError
    from scipy.stats import kendalltau

    report, status, rnd, files = generate(client, shortest_example(), target=12.0, k=3, timbre="guitar")
    assert Path(report).suffix == ".png" and Path(report).stat().st_size > 10_000
    assert "3 candidates" in status
    assert "Instrument sound: guitar (your choice)" in status
    assert (rnd["timbre"]["name"], rnd["timbre"]["chosen_by"]) == ("guitar", "user")
    assert rnd["k"] == 3 and rnd["blind"] and not rnd["submitted"]
    assert [c["position"] for c in rnd["candidates"]] == [1, 2, 3]
    # blind: no scores and opaque file names before the rating
    assert not any("composite" in c or "composite_rank" in c for c in rnd["candidates"])
    assert len(files) == 3
    for f in files:
        assert re.fullmatch(r"[0-9a-f]{16}\.wav", Path(f).name)
        info = sf.info(f)
        assert (info.subtype, info.samplerate, info.channels) == ("PCM_16", SR, 1)
        assert abs(info.duration - 12.0) < 0.05
    # PCM-16 files as rendered (not peak-normalised): the mix stays below the limiter's ceiling
    peaks = [float(np.max(np.abs(sf.read(f)[0]))) for f in files]
    assert all(0.01 < p < 0.95 for p in peaks)

    before = len(read_rows(app))
    rid = rnd["round_id"]
    for ranks, reason in (([1, 1, 2], "exactly once"), ([1, None, 2], "has no rank"),
                          ([1, 2], "3 candidates"), ([1, 2, 4], "out of range")):
        with pytest.raises(AppError, match=reason) as err:
            client.predict(rid, ranks, None, "", "", api_name="/rate")
        assert "Traceback" not in str(err.value)
    with pytest.raises(AppError, match="unknown or has expired"):
        client.predict("0" * 32, [1, 2, 3], None, "", "", api_name="/rate")
    assert len(read_rows(app)) == before  # nothing written by invalid submissions

    human = [3, 1, 2]
    out = client.predict(rid, human, 2, "from gradio_client", "client-rater", api_name="/rate")
    frame = read_rows(app)
    new = frame[frame["submission_id"] == out["submission_id"]]
    assert len(frame) == before + 3 and len(new) == 3 and out["rows"] == 3
    new = new.sort_values("shown_position")
    assert new["shown_position"].tolist() == [1, 2, 3]
    assert new["human_rank"].tolist() == human
    assert sorted(new["composite_rank"].tolist()) == [1, 2, 3]
    assert new["favourite"].tolist() == [0, 1, 0]
    assert set(new["rater_id"]) == {"client-rater"} and set(new["blind"]) == {1}
    assert set(new["comment"]) == {"from gradio_client"}
    assert set(new["timbre"]) == {"guitar"}  # the timbre that rendered the round, on every row
    assert set(new["input_seconds"]) == {8.0} and set(new["target_seconds"]) == {12.0}
    revealed = out["round"]["candidates"]
    assert [c["composite_rank"] for c in revealed] == new["composite_rank"].tolist()
    assert np.allclose([c["composite"] for c in revealed], new["composite"])

    with pytest.raises(AppError, match="already rated"):
        client.predict(rid, human, None, "", "", api_name="/rate")
    assert len(read_rows(app)) == before + 3

    summary = client.predict(api_name="/summary")
    mine = [p for p in summary["per_submission"] if p["submission_id"] == out["submission_id"]]
    assert len(mine) == 1
    tau = kendalltau(new["composite_rank"], new["human_rank"]).statistic
    assert mine[0]["tau"] == pytest.approx(tau)
    assert summary["kendall_tau"]["n"] >= 1


def test_not_blind_shows_scores_in_composite_order(app, client):
    _, _, rnd, files = generate(client, shortest_example(), target=11.0, k=2, blind=False, matched=True)
    assert not rnd["blind"]
    assert rnd["timbre"]["chosen_by"] in ("auto", "default")  # left out: automatic
    assert [c["composite_rank"] for c in rnd["candidates"]] == [1, 2]
    assert all({"composite", "relevance", "coherence"} <= set(c) for c in rnd["candidates"])
    # loudness-matched files: each at the input's integrated loudness (unless the peak ceiling cut it)
    from ensemble.audio import load_audio
    from ensemble.listening.levels import integrated_loudness_db

    ref = integrated_loudness_db(load_audio(shortest_example()).audio)
    for f, c in zip(files, rnd["candidates"], strict=True):
        assert Path(f).name == c["file_matched"]
        level = integrated_loudness_db(sf.read(f, dtype="float32")[0])
        assert level == pytest.approx(ref, abs=0.5) or level < ref


def test_generate_plays_a_stereo_24bit_upload_at_its_own_rate_and_channels(app, client, tmp_path):
    """The user's recording is never downgraded: a 44.1 kHz stereo PCM-24 upload comes back as 44.1 kHz
    stereo PCM-24 candidates (loudness-matched copies too)."""
    import soxr

    from ensemble.audio import load_audio

    mono = load_audio(shortest_example()).audio
    hi = soxr.resample(mono, SR, 44100, quality="HQ")
    upload = tmp_path / "stereo take.wav"
    sf.write(upload, np.stack([hi, 0.6 * hi], axis=1), 44100, subtype="PCM_24")
    for matched in (False, True):
        _, _, rnd, files = generate(client, upload, target=11.0, k=1, blind=False, matched=matched)
        assert rnd["output"] == {"sample_rate": 44100, "channels": 2, "subtype": "PCM_24",
                                 "analysis_sample_rate": SR}
        info = sf.info(files[0])
        assert (info.samplerate, info.channels, info.subtype) == (44100, 2, "PCM_24")
        assert abs(info.duration - 11.0) < 0.05


def test_an_unpitched_upload_is_said_in_plain_words_in_the_status(app, client, tmp_path):
    noise = tmp_path / "noise.wav"
    rng = np.random.default_rng(0)
    sf.write(noise, (0.1 * rng.standard_normal(6 * SR)).astype(np.float32), SR, subtype="PCM_16")
    _, status, rnd, _ = generate(client, noise, target=10.0, k=1)
    assert "**Note:**" in status and "unpitched" in status
    assert any("unpitched" in n for n in rnd["notes"])


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    notes = d / "notes.txt"
    notes.write_text("this is a shopping list, not audio\n")
    silent = d / "silent.wav"
    sf.write(silent, np.zeros(5 * SR, np.float32), SR, subtype="PCM_16")
    t = np.arange(int(1.5 * SR)) / SR
    short = d / "short.wav"
    sf.write(short, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR, subtype="PCM_16")
    long = d / "long.wav"  # 10 min 1 s of a quiet click train: written as int16 in one go
    x = np.zeros(601 * SR, np.int16)
    x[::400] = 300
    sf.write(long, x, SR, subtype="PCM_16")
    return {"notes": notes, "silent": silent, "short": short, "long": long}


@pytest.mark.parametrize("case, target, reason", [
    ("none", 12.0, "no clip was given"),
    ("notes", 12.0, "'notes.txt' is not a readable audio file"),
    ("silent", 12.0, "'silent.wav' is silent"),
    ("short", 12.0, "1.50 s long; allowed: at least 2 s"),
    ("long", 30.0, "601.0 s long; allowed: at most 600 s"),
    ("target", 8.0, "target length 8 s must be longer than the input (8.00 s)"),
])
def test_bad_input_gives_a_readable_error(app, client, bad_files, case, target, reason):
    from gradio_client.exceptions import AppError

    audio = {"none": None, "target": shortest_example()}.get(case, bad_files.get(case))
    rows, folders = len(read_rows(app)), set(app.round_folders())
    with pytest.raises(AppError) as err:
        generate(client, audio, target=target)
    message = str(err.value)
    assert reason in message
    assert "Traceback" not in message and 'File "' not in message
    assert not re.search(r"/\w+/", message)  # the user's file by its name, never a server path
    assert len(read_rows(app)) == rows  # a failed request writes nothing to the log ...
    assert set(app.round_folders()) <= folders  # ... and leaves no files behind


def test_an_unknown_timbre_names_the_field_and_the_allowed_values(app, client):
    from gradio_client.exceptions import AppError

    rows, folders = len(read_rows(app)), set(app.round_folders())
    with pytest.raises(AppError) as err:
        generate(client, shortest_example(), timbre="tuba")
    message = str(err.value)
    assert "timbre 'tuba'; allowed: auto, guitar" in message
    assert "Traceback" not in message and "not in the list of choices" not in message
    assert len(read_rows(app)) == rows and set(app.round_folders()) <= folders


def test_still_serving_after_bad_inputs(app, client):
    assert app.process.poll() is None
    with urllib.request.urlopen(app.url, timeout=10) as r:
        assert r.status == 200
    assert client.predict(api_name="/summary")["n_submissions"] >= 1


def test_sigterm_stops_cleanly_and_removes_temporary_files(app):
    roots = list(app.tmp.glob("ensemble-app-*"))
    assert len(roots) == 1 and app.round_folders()  # the rounds made above
    # Gradio's uploads and served files live in the app's folder too (GRADIO_TEMP_DIR set by the app)
    assert not (app.tmp / "gradio").exists()
    assert [p for p in roots[0].iterdir() if not re.fullmatch(r"[0-9a-f]{32}", p.name)]
    assert app.stop() == 0, app.log()[-2000:]
    assert not any(r.exists() for r in roots)
    left = [str(p) for p in app.tmp.rglob("*") if p.is_file()]
    assert not left, left[:10]  # no file of the run remains
    assert "Traceback" not in app.log()
