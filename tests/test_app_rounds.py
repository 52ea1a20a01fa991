"""The app's request logic without a server (``ensemble.listening``): reading uploads, checking settings,
loudness matching, turning ranks into a log submission, what the API reveals, and the round store.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ensemble.errors import EnsembleError
from ensemble.listening.levels import integrated_loudness_db, match_gain_db
from ensemble.listening.round import Round, Shown
from ensemble.listening.settings import check_settings, read_clip
from ensemble.listening.store import RoundStore
from ensemble.rag import Candidate
from ensemble.ratings.log import append_submission, read_ratings, validate_submission
from ensemble.timbre import TimbreChoice

SR = 16000


def tone(seconds: float, amplitude: float, f: float = 330.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * f * t)).astype(np.float32)


# ------------------------------------------------------------------------------------------ input


def test_read_clip_names_the_file_not_the_server_path(tmp_path):
    folder = tmp_path / "upload-3f2a"
    folder.mkdir()
    notes = folder / "notes.txt"
    notes.write_text("not audio")
    with pytest.raises(EnsembleError) as err:
        read_clip(str(notes))
    assert "'notes.txt' is not a readable audio file" in str(err.value)
    assert str(folder) not in str(err.value)
    with pytest.raises(EnsembleError, match="no clip was given"):
        read_clip(None)


@pytest.mark.parametrize("audio, reason", [
    (np.zeros(3 * SR, np.float32), "is silent"),
    (tone(1.0, 0.3), "allowed: at least 2 s"),
])
def test_read_clip_rejects_silent_and_short(tmp_path, audio, reason):
    path = tmp_path / "clip.wav"
    sf.write(path, audio, SR, subtype="PCM_16")
    with pytest.raises(EnsembleError, match=reason):
        read_clip(str(path))


def test_read_clip_resamples_to_mono_16k(tmp_path):
    path = tmp_path / "stereo.wav"
    t = np.arange(3 * 44100) / 44100
    x = 0.2 * np.sin(2 * np.pi * 440 * t)
    sf.write(path, np.stack([x, x], axis=1), 44100, subtype="PCM_16")
    clip = read_clip(str(path))
    assert clip.sample_rate == SR and clip.audio.ndim == 1 and abs(clip.seconds - 3.0) < 1e-3


def _settings(**kw):
    args = dict(target_seconds=12, k=3, alpha=0.8, beta=0.6, lookbacks=[7.0, 8.5],
                followers=["Bass", "Drums"], input_seconds=8.0)
    args.update(kw)
    return check_settings(**args)


def test_check_settings_accepts_the_page_values():
    s = _settings(k=3.0, seed=7.0, transpose=True)
    assert (s.k, s.seed, s.transpose, s.lookbacks, s.followers) == (3, 7, True, (7.0, 8.5), ("Bass", "Drums"))
    assert s.request().k == 3 and s.request().seconds == 12.0
    assert _settings(alpha=None, beta=None, lookbacks=None).request().alpha is None


def test_check_settings_passes_the_timbre_to_the_request():
    assert _settings().timbre == "auto" and _settings(timbre=None).request().timbre == "auto"
    assert _settings(timbre=" Guitar ").request().timbre == "guitar"
    assert _settings(timbre="violin", timbres=("violin", "flute")).request().timbre == "violin"


@pytest.mark.parametrize("change, reason", [
    ({"target_seconds": 8.0}, "must be longer than the input (8.00 s)"),
    ({"target_seconds": 601, "input_seconds": 20.0}, "allowed: up to 600 s"),
    ({"target_seconds": float("nan")}, "finite"),
    ({"k": 0}, "allowed: a whole number 1..10"),
    ({"k": 11}, "allowed: a whole number 1..10"),
    ({"k": 2.5}, "allowed: a whole number 1..10"),
    ({"alpha": -1}, "alpha = -1; allowed: 0..10"),
    ({"beta": "x"}, "beta 'x' is not a number"),
    ({"lookbacks": []}, "at least one lookback"),
    ({"followers": []}, "at least one follower"),
    ({"timbre": "tuba"}, "timbre 'tuba'; allowed: auto, guitar"),
    ({"timbre": "tuba", "timbres": ("violin", "flute")}, "timbre 'tuba'; allowed: auto, guitar, violin, flute"),
    ({"timbre": "violin"}, "timbre 'violin'; allowed: auto, guitar"),  # no timbre decoder installed
    ({"timbre": 3}, "timbre 3; allowed: auto, guitar"),
])
def test_check_settings_says_what_is_wrong(change, reason):
    with pytest.raises(EnsembleError) as err:
        _settings(**change)
    assert reason in str(err.value)


# ------------------------------------------------------------------------------------------ levels


def test_integrated_loudness_follows_level_and_ignores_rests():
    loud, quiet = tone(3, 0.4), tone(3, 0.2)
    diff = integrated_loudness_db(loud) - integrated_loudness_db(quiet)
    assert diff == pytest.approx(20 * math.log10(2), abs=0.1)
    with_rest = np.concatenate([loud, np.zeros(3 * SR, np.float32)])
    assert integrated_loudness_db(with_rest) == pytest.approx(integrated_loudness_db(loud), abs=0.2)
    assert integrated_loudness_db(np.zeros(SR, np.float32)) is None


def test_match_gain_keeps_the_played_version_below_the_peak_ceiling():
    """The level is measured on the 16 kHz analysis mix, the peak on what is played (the native mix)."""
    mix16 = tone(3, 0.5)
    played = np.stack([tone(3, 0.5), tone(3, 0.89)], axis=1)  # one channel louder than the mono mix
    ref = integrated_loudness_db(tone(3, 0.8))
    gain, limited = match_gain_db(mix16, ref)
    assert not limited and gain == pytest.approx(20 * math.log10(0.8 / 0.5), abs=0.1)
    gain, limited = match_gain_db(mix16, ref, played=played)
    assert limited and 20 * math.log10(0.89) + gain == pytest.approx(-1.0, abs=1e-6)


def test_match_gain_reaches_the_reference_below_the_peak_ceiling():
    ref = integrated_loudness_db(tone(3, 0.3))
    gain, limited = match_gain_db(tone(3, 0.1), ref)
    assert not limited and gain == pytest.approx(20 * math.log10(3), abs=0.1)
    gain, limited = match_gain_db(tone(3, 0.8), integrated_loudness_db(tone(3, 0.99)) + 6)
    assert limited and 20 * math.log10(0.8) + gain == pytest.approx(-1.0, abs=1e-6)
    assert match_gain_db(np.zeros(SR, np.float32), ref) == (0.0, False)


# ------------------------------------------------------------------------------------------ rounds


def fake_round(tmp_path: Path, *, order=(2, 0, 1), blind=True, timbre: TimbreChoice | None = None) -> Round:
    """A round of 3 candidates shown in ``order`` (composite indices), without running the engine."""
    shown = []
    for pos, i in enumerate(order, start=1):
        c = Candidate(rank=i + 1, chunk=100 + i, track=f"Track{i:05d}", start_seconds=2.0 * i,
                      composite=1.2 - 0.1 * i, relevance=0.8 - 0.05 * i, coherence=0.9, lookback=7.5,
                      transpose=0, seam_pitch_jump_cents=float("nan") if i == 1 else 12.0,
                      seam_loudness_jump_db=-1.5, fallback=False)
        shown.append(Shown(position=pos, candidate=c, audio=tmp_path / f"{pos}.wav",
                           audio_matched=tmp_path / f"{pos}m.wav", matched_gain_db=0.5,
                           matched_limited=False, figure=tmp_path / f"{pos}.png"))
    return Round(round_id="r" * 32, session_id="sess1", rater_id="alice", folder=tmp_path,
                 input_sha256="a" * 64, input_seconds=8.0, target_seconds=12.0, alpha=0.8, beta=0.6,
                 blind=blind, shuffle_seed=1, shown=shown, report_card=tmp_path / "r.png",
                 overview=tmp_path / "o.png", notes=[], timings={}, model_version="m1",
                 database_version="d1", timbre=timbre)


def test_submission_maps_shown_positions_to_composite_ranks(tmp_path):
    rnd = fake_round(tmp_path)
    sub = rnd.submission(["2", 3, 1.0], favourite=3, comment="nice", rater_id="bob!")
    validate_submission(sub)
    rows = sorted(sub.candidates, key=lambda c: c.shown_position)
    assert [c.composite_rank for c in rows] == [3, 1, 2]
    assert [c.human_rank for c in rows] == [2, 3, 1]
    assert [c.db_chunk_idx for c in rows] == [102, 100, 101]
    assert rows[2].seam_pitch_jump_cents is None and rows[0].seam_pitch_jump_cents == 12.0
    assert (sub.rater_id, sub.session_id, sub.favourite, sub.blind, sub.k) == ("bob", "sess1", 3, True, 3)
    assert rnd.submission([1, 2, 3], favourite=0).favourite is None
    assert rnd.submission([1, 2, 3], rater_id="  ").rater_id == "alice"


@pytest.mark.parametrize("ranks, reason", [([1, 2], "2 ranks were given for 3 candidates"),
                                           ([1, 2, "two"], "is not a whole number"),
                                           ([1, 2, 2.5], "is not a whole number")])
def test_submission_rejects_malformed_ranks(tmp_path, ranks, reason):
    with pytest.raises(EnsembleError, match=reason):
        fake_round(tmp_path).submission(ranks)


def test_incomplete_or_duplicate_ranks_fail_validation(tmp_path):
    rnd = fake_round(tmp_path)
    with pytest.raises(EnsembleError, match="has no rank"):
        validate_submission(rnd.submission([1, None, 2]))
    with pytest.raises(EnsembleError, match="exactly once"):
        validate_submission(rnd.submission([1, 1, 2]))


def test_public_json_hides_scores_of_blind_rounds_until_submitted(tmp_path):
    rnd = fake_round(tmp_path)
    assert not any("composite_rank" in c for c in rnd.public()["candidates"])
    rnd.submission_id = "s" * 32
    assert [c["composite_rank"] for c in rnd.public()["candidates"]] == [3, 1, 2]
    open_round = fake_round(tmp_path, order=(0, 1, 2), blind=False)
    assert [c["composite_rank"] for c in open_round.public()["candidates"]] == [1, 2, 3]
    assert open_round.audio_files(True) == [str(tmp_path / f"{p}m.wav") for p in (1, 2, 3)]


def test_store_drops_the_oldest_rounds_and_their_folders(tmp_path):
    store = RoundStore(tmp_path / "root", max_rounds=2, max_age_s=3600)
    rounds = []
    for _ in range(3):
        rid, folder = store.new_folder()
        folder.mkdir()
        rnd = fake_round(folder)
        rnd.round_id = rid
        store.add(rnd)
        rounds.append(rnd)
    assert len(store) == 2 and not rounds[0].folder.exists() and rounds[2].folder.exists()
    with pytest.raises(EnsembleError, match="unknown or has expired"):
        store.get(rounds[0].round_id)
    assert store.get(rounds[1].round_id) is rounds[1]
    rounds[1].created = time.time() - 7200  # too old now
    with pytest.raises(EnsembleError, match="unknown or has expired"):
        store.get(rounds[1].round_id)
    assert not rounds[1].folder.exists()
    store.close()
    assert not (tmp_path / "root").exists()



def test_the_store_wakes_its_listener_after_each_round(tmp_path):
    """The app's allocator trim runs after every stored round: RoundStore calls ``on_add`` once per
    added round, after the round is in the store."""
    seen = []
    store = RoundStore(tmp_path / "root", on_add=lambda: seen.append(len(store)))
    for _ in range(3):
        rid, folder = store.new_folder()
        folder.mkdir()
        rnd = fake_round(folder)
        rnd.round_id = rid
        store.add(rnd)
    assert seen == [1, 2, 3]
    store.close()

# ------------------------------------------------------------------------------------------ words


def test_cards_show_the_candidates_own_signed_seam_numbers(tmp_path):
    from ui.round_text import scores_markdown

    rnd = fake_round(tmp_path, order=(0, 1, 2), blind=False)
    card = scores_markdown(rnd, 0)
    assert "seam: pitch jump +12 cents, loudness jump -1.5 dB" in card
    assert "pitch jump n/a" in scores_markdown(rnd, 1)  # unvoiced: NaN on the candidate


def test_status_puts_the_requests_notes_first_in_plain_words(tmp_path):
    from ui.round_text import round_status

    rnd = fake_round(tmp_path)
    rnd.notes = ["the input has no pitch (unpitched): the database holds melodies and cannot serve it well"]
    lines = round_status(rnd).split("  \n")
    assert lines[1] == f"**Note:** {rnd.notes[0]}"


def test_a_round_records_the_timbre_that_rendered_it(tmp_path):
    """A round rendered by the guitar names it in its JSON, its status, each card and every log row."""
    from ui.round_text import round_status, scores_markdown

    rnd = fake_round(tmp_path, timbre=TimbreChoice("guitar", None, "user"))
    # the round passes TimbreChoice.summary() on whole (the timbre module owns its keys)
    assert rnd.public()["timbre"] == TimbreChoice("guitar", None, "user").summary()
    assert {"name": "guitar", "chosen_by": "user", "distances": {}, "note": ""}.items() <= \
        rnd.public()["timbre"].items()
    assert "Instrument sound: guitar (your choice)." in round_status(rnd)
    rnd.submission_id = "s" * 32  # revealed: every card says it too
    assert all("instrument sound: guitar (your choice)" in scores_markdown(rnd, i) for i in range(rnd.k))
    log = tmp_path / "ratings.csv"
    append_submission(log, rnd.submission([1, 2, 3]))
    rows = read_ratings(log)
    assert len(rows) == 3 and rows["timbre"].tolist() == ["guitar"] * 3
    assert fake_round(tmp_path).public()["timbre"] is None  # nothing rendered it (spliced audio)


def test_the_timbre_is_said_with_how_it_was_chosen(tmp_path):
    from ensemble.outputs import timbre_text
    from ui.round_text import round_status

    assert timbre_text(TimbreChoice("violin", 0, "auto", {"violin": 1.0, "flute": 2.0})) == \
        "violin (inferred from your clip)"
    note = "no timbre decoder is installed: BabyBand's guitar plays"
    default = TimbreChoice("guitar", None, "default", note=note)
    assert timbre_text(default) == f"guitar (the default: {note})"
    rnd = fake_round(tmp_path, timbre=default)
    rnd.notes = [note]  # said once, as a note
    assert round_status(rnd).count(note) == 1 and "guitar (the default, see the note)" in round_status(rnd)


def test_background_work_gives_way_to_requests_until_the_server_settles():
    """``Foreground.give_way`` returns only once no request is in progress and ``settle_s`` has passed
    since the last one ended; a server that is never idle still lets it run after ``max_wait_s``."""
    import threading

    from ensemble.listening.round import Foreground

    gate = Foreground(settle_s=0.2, max_wait_s=30.0)
    inside, release, ended = threading.Event(), threading.Event(), {}

    def request():
        with gate.request():
            inside.set()
            release.wait(10)
        ended["t"] = time.monotonic()

    worker = threading.Thread(target=request)
    worker.start()
    inside.wait(10)
    assert gate.busy()
    done = {}
    waiter = threading.Thread(target=lambda: done.setdefault("t", (gate.give_way(), time.monotonic())))
    waiter.start()
    time.sleep(0.3)
    assert "t" not in done  # still waiting: the request is in progress
    release.set()
    worker.join(10)
    waiter.join(10)
    assert done["t"][1] >= ended["t"] + 0.2  # ran only after the server settled
    assert not gate.busy()

    never_idle = Foreground(settle_s=0.1, max_wait_s=0.3)
    with never_idle.request():
        t = time.monotonic()
        waited = never_idle.give_way()
        assert waited >= 0.3 and time.monotonic() - t >= 0.3


def test_foreground_rejects_a_settle_time_longer_than_its_longest_wait():
    from ensemble.errors import EnsembleError
    from ensemble.listening.round import Foreground

    with pytest.raises(EnsembleError, match="allowed: 0 <= settle_s <= max_wait_s"):
        Foreground(settle_s=5.0, max_wait_s=1.0)


def test_background_work_runs_by_its_deadline_on_a_server_that_is_never_idle():
    """Every piece of a round's background work asks ``give_way(until=deadline)``: once the deadline
    has passed, no piece waits any more, so the work ends in bounded time however busy the server."""
    from ensemble.listening.round import Foreground

    gate = Foreground(settle_s=0.1, max_wait_s=60.0)
    with gate.request():
        deadline = time.monotonic() + 0.3
        first = gate.give_way(until=deadline)
        t = time.monotonic()
        later = [gate.give_way(until=deadline) for _ in range(20)]
    assert first >= 0.25
    assert max(later) < 0.05 and time.monotonic() - t < 1.0
