"""What a listener gets back (``ensemble.outputs``): the mix at the recording's own rate and channels
(the user's own audio in the input part, the band upsampled and added), and the folder ``extend``
writes. Built on a hand-made Extension with known stems, so every sample can be checked.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import soxr

from ensemble.audio import load_audio
from ensemble.dsp import crossfade, soft_limit
from ensemble.errors import EnsembleError
from ensemble.extend import ExtendRequest, Extension
from ensemble.outputs import leader_gain, native_format, native_mix, write_extension
from ensemble.perform import Performance
from ensemble.rag import Candidate

SR = 16000
RATE = 44100
XFADE = 1600  # 0.1 s, the database's crossfade


def _candidate(rank: int) -> Candidate:
    return Candidate(rank=rank, chunk=10 + rank, track=f"Track{rank:05d}", start_seconds=1.5, composite=0.9,
                     relevance=0.8, coherence=0.7, lookback=7.5, transpose=0, seam_pitch_jump_cents=-120.5,
                     seam_loudness_jump_db=1.25, fallback=False)


def fake_extension(input_seconds: float = 3.0, target_seconds: float = 5.0, k: int = 2, *,
                   gain: float = 0.8, with_gain_info: bool = False, original: str = "stereo44k"
                   ) -> Extension:
    """An Extension of a 44.1 kHz stereo recording whose channels differ, with quiet known stems
    (below the limiter's threshold, so the limiter is the identity and every sample can be checked)."""
    n_src = int(input_seconds * RATE)
    t = np.arange(n_src) / RATE
    if original == "stereo44k":
        recording = np.stack([0.2 * np.sin(2 * np.pi * 330.0 * t),
                              0.1 * np.sin(2 * np.pi * 440.0 * t + 1.0)], axis=1).astype(np.float32)
        clip = load_audio((RATE, recording), keep_original=True)
        orig, rate = clip.original, RATE
    else:  # the 16 kHz mono input itself
        clip = load_audio((SR, (0.2 * np.sin(2 * np.pi * 330.0 * np.arange(int(input_seconds * SR)) / SR)
                                ).astype(np.float32)), keep_original=True)
        orig, rate = clip.original, SR
    audio = clip.audio
    n_total = int(round(target_seconds * SR))
    n_cont = n_total - len(audio) + XFADE
    rng = np.random.default_rng(0)
    perfs, leaders, cands = [], [], []
    for j in range(k):
        tc = np.arange(n_cont) / SR
        cont = (0.15 * np.sin(2 * np.pi * (262.0 + 50 * j) * tc)).astype(np.float32)
        leader = crossfade(audio, cont, XFADE, kind="equal_power").astype(np.float32)
        tt = np.arange(len(leader)) / SR
        stems = {"Leader": (gain * leader).astype(np.float32),
                 "Bass": (0.05 * np.sin(2 * np.pi * 82.0 * tt)).astype(np.float32),
                 "Drums": (0.02 * rng.standard_normal(len(leader))).astype(np.float32)}
        mix = soft_limit(sum(stems.values()), threshold_db=-6.0, ceiling_db=-1.0).astype(np.float32)
        info = {"config": {"limiter_threshold_db": -6.0, "limiter_ceiling_db": -1.0}, "notes": []}
        if with_gain_info:
            info["leader_gain"] = gain
        perfs.append(Performance(mix=mix, stems=stems, info=info, sample_rate=SR, analysis=None))
        leaders.append(leader)
        cands.append(_candidate(j + 1))
    return Extension(input_audio=audio, query=SimpleNamespace(lookbacks_used=(7.5,)), candidates=cands,
                     continuations=[None] * k, performances=perfs, leaders=leaders,
                     request=ExtendRequest(seconds=target_seconds, k=k), notes=["a note"], timings={},
                     versions={}, crossfade=XFADE, sample_rate=SR, original=orig, original_rate=rate)


def _db(x: np.ndarray) -> float:
    return 10.0 * math.log10(max(float(np.mean(np.square(x, dtype=np.float64))), 1e-30))


@pytest.mark.parametrize("with_gain_info", [False, True])
def test_native_mix_input_part_is_the_users_own_audio_plus_the_upsampled_band(with_gain_info):
    ext = fake_extension(with_gain_info=with_gain_info)
    assert native_format(ext) == (RATE, 2)
    assert leader_gain(ext.performances[0], ext.input_audio, len(ext.input_audio) - XFADE) == \
        pytest.approx(0.8, rel=1e-6)
    for i, perf in enumerate(ext.performances):
        out = native_mix(ext, i)
        # channels and rate kept; length = the target at the native rate, within a sample per 16 kHz frame
        assert out.shape[1] == 2 and out.dtype == np.float32
        assert abs(len(out) - 5.0 * RATE) <= math.ceil(RATE / SR)
        band = soxr.resample(perf.stems["Bass"] + perf.stems["Drums"], SR, RATE, quality="HQ")
        seam = int(round((len(ext.input_audio) - XFADE) * RATE / SR))
        before = slice(int(0.05 * RATE), seam - int(0.05 * RATE))  # well before the seam
        for ch in range(2):
            residual = out[before, ch] - 0.8 * ext.original[before, ch] - band[before]
            assert _db(residual) - _db(out[before, ch]) < -60.0, f"channel {ch}"
        # the two channels differ where the recording plays, and carry the same continuation after it
        assert _db(out[before, 0] - out[before, 1]) - _db(out[before, 0]) > -10.0
        after = seam + int(round(XFADE * RATE / SR))
        assert np.array_equal(out[after:, 0], out[after:, 1])
        # after the seam: the 16 kHz mix upsampled (what the band renders there)
        up = soxr.resample(perf.mix, SR, RATE, quality="HQ")
        tail = slice(after + int(0.05 * RATE), len(out) - int(0.05 * RATE))
        assert _db(out[tail, 0] - up[tail]) - _db(out[tail, 0]) < -60.0


def test_native_mix_crossfade_is_equal_power_at_the_same_time():
    """Across the seam the level neither dips nor bumps: the recording fades out over 0.1 s at the
    time the 16 kHz crossfade runs, while the continuation fades in."""
    ext = fake_extension()
    out = native_mix(ext, 0)
    ref = soxr.resample(ext.performances[0].mix, SR, RATE, quality="HQ")
    seam = int(round((len(ext.input_audio) - XFADE) * RATE / SR))
    n_fade = int(round(XFADE * RATE / SR))
    # mono fold of the native mix against the 16 kHz mix, over windows spanning the crossfade
    mono = out.mean(axis=1)
    for a in range(seam - n_fade, seam + 2 * n_fade, n_fade // 2):
        w = slice(a, a + n_fade // 2)
        assert abs(_db(mono[w]) - _db(ref[w])) < 1.5


def test_native_mix_of_a_16k_mono_recording_is_the_16k_mix_itself():
    ext = fake_extension(original="mono16k")
    assert native_format(ext) == (SR, 1)
    for i, perf in enumerate(ext.performances):
        assert np.array_equal(native_mix(ext, i)[:, 0], perf.mix)


def test_native_mix_without_an_original_is_the_16k_mix():
    ext = fake_extension()
    ext.original, ext.original_rate = None, None
    assert native_format(ext) == (SR, 1)
    assert np.array_equal(native_mix(ext, 1)[:, 0], ext.performances[1].mix)


def test_native_mix_limits_like_the_performer():
    ext = fake_extension(gain=6.0)  # far over full scale before the limiter
    out = native_mix(ext, 0)
    assert 20 * math.log10(float(np.max(np.abs(out)))) < -1.0  # below the limiter's ceiling


def test_write_extension_native_mix_analysis_copies_and_output_format(tmp_path):
    ext = fake_extension()
    out = write_extension(ext, tmp_path / "out", subtype="PCM_24")
    info = sf.info(out / "rank01" / "mix.wav")
    assert (info.samplerate, info.channels, info.subtype) == (RATE, 2, "PCM_24")
    info = sf.info(out / "rank01" / "mix_16k.wav")
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    assert {p.name for p in (out / "rank02" / "stems").iterdir()} == {"Leader.wav", "Bass.wav", "Drums.wav"}
    inp, rate = sf.read(out / "input.wav", dtype="float32")
    assert rate == RATE and inp.shape == ext.original.shape
    assert np.max(np.abs(inp - ext.original)) <= 1.0 / 2 ** 23  # the recording as uploaded
    mix, _ = sf.read(out / "rank01" / "mix.wav", dtype="float32")
    assert np.max(np.abs(mix - native_mix(ext, 0))) <= 1.0 / 2 ** 23
    results = json.loads((out / "results.json").read_text())
    assert results["output"] == {"sample_rate": RATE, "channels": 2, "subtype": "PCM_24",
                                 "analysis_sample_rate": SR}
    perform = json.loads((out / "rank01" / "perform.json").read_text())
    assert perform["files"]["mix"] == "mix.wav" and perform["files"]["mix_16k"] == "mix_16k.wav"
    assert perform["output"]["sample_rate"] == RATE
    # results.json and results.csv carry the candidate's own (signed) seam numbers
    assert results["candidates"][0]["seam_pitch_jump_cents"] == -120.5
    assert "-120.5,1.25" in (out / "results.csv").read_text()


def test_write_extension_default_subtypes(tmp_path):
    ext = fake_extension()
    out = write_extension(ext, tmp_path / "native")
    assert sf.info(out / "rank01" / "mix.wav").subtype == "PCM_24"  # never cut a recording to 16 bits
    ext.original, ext.original_rate = None, None
    out = write_extension(ext, tmp_path / "plain")
    info = sf.info(out / "rank01" / "mix.wav")
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")


@pytest.mark.parametrize("change, reason", [
    ({"subtype": "MP3"}, "subtype 'MP3' is not a WAV subtype written here; allowed: PCM_16, PCM_24, FLOAT"),
    ({"original": np.zeros((10, 2, 2), np.float32)}, "Extension.original has shape (10, 2, 2)"),
    ({"original_rate": 0}, "Extension.original_rate is 0"),
])
def test_write_extension_refuses_bad_settings_and_writes_nothing(tmp_path, change, reason):
    ext = fake_extension(k=1)
    subtype = change.pop("subtype", None)
    for name, value in change.items():
        setattr(ext, name, value)
    with pytest.raises(EnsembleError) as err:
        write_extension(ext, tmp_path / "out", subtype=subtype)
    assert reason in str(err.value)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ one real run


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_round(tmp_path_factory):
    """One real request through the listening round (the shipped engine) on a 44.1 kHz stereo PCM-24
    upload whose channels differ, with the Extension it was made from."""
    import ensemble.listening.round as round_module
    from ensemble.engine import Engine, EngineConfig
    from ensemble.listening.settings import check_settings, read_clip

    engine = Engine.load(EngineConfig(checkpoints_dir=str(ROOT / "checkpoints"),
                                      database_dir=str(ROOT / "assets" / "rag"),
                                      drums_dir=str(ROOT / "assets" / "drums")))
    tmp = tmp_path_factory.mktemp("real")
    mono = load_audio(sorted((ROOT / "assets" / "examples").glob("*_8s.wav"))[0]).audio
    hi = soxr.resample(mono, SR, RATE, quality="HQ")
    path = tmp / "take.wav"
    sf.write(path, np.stack([0.9 * hi, 0.5 * hi + 0.01 * np.sin(np.arange(len(hi)) * 0.05)], axis=1), RATE,
             subtype="PCM_24")
    clip = read_clip(str(path))
    settings = check_settings(target_seconds=12.0, k=3, alpha=None, beta=None, lookbacks=None,
                              followers=["Bass", "Drums", "Keys"], blind=True, input_seconds=clip.seconds)
    made, real_extend = [], round_module.extend

    def extend_and_keep(*args, **kwargs):
        made.append(real_extend(*args, **kwargs))
        return made[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(round_module, "extend", extend_and_keep)
        rnd = round_module.make_round(engine, clip, settings, folder=tmp / "round", session_id="s1")
    return clip, made[0], rnd, tmp


def test_real_round_plays_the_recording_at_its_own_rate_and_channels(real_round):
    clip, ext, rnd, _ = real_round
    assert rnd.output == {"sample_rate": RATE, "channels": 2, "subtype": "PCM_24", "analysis_sample_rate": SR}
    for files in (rnd.audio_files(False), rnd.audio_files(True)):
        for f in files:
            info = sf.info(f)
            assert (info.samplerate, info.channels, info.subtype) == (RATE, 2, "PCM_24")
            assert abs(info.duration - 12.0) < 0.05
    # the input part is the user's audio (times the leader gain) plus the band, sample for sample
    threshold = 10 ** (-6.0 / 20)
    for i, perf in enumerate(ext.performances):
        out = native_mix(ext, i)
        start16 = len(ext.input_audio) - ext.crossfade
        gain = leader_gain(perf, ext.input_audio, start16)
        band = soxr.resample(sum(s for n, s in perf.stems.items() if n != "Leader"), SR, RATE, quality="HQ")
        seam = int(round(start16 * RATE / SR))
        before = np.arange(int(0.05 * RATE), seam - int(0.05 * RATE))
        for ch in range(2):
            quiet = before[np.abs(out[before, ch]) < 0.99 * threshold]  # where the limiter is the identity
            assert len(quiet) > 0.5 * len(before)
            residual = out[quiet, ch] - gain * clip.original[quiet, ch] - band[quiet]
            assert _db(residual) - _db(out[quiet, ch]) < -60.0


def test_real_round_card_csv_and_results_json_agree_on_the_seam(real_round, tmp_path):
    """One request: the app's card, the ratings CSV row and results.json report the same (signed) seam
    numbers for every candidate, to the precision the card prints."""
    from ensemble.metrics import seam_jump_text
    from ensemble.ratings.log import append_submission, read_ratings
    from ui.round_text import scores_markdown

    clip, ext, rnd, _ = real_round
    out = write_extension(ext, tmp_path / "out", subtype=clip.output_subtype)
    results = {c["rank"]: c for c in json.loads((out / "results.json").read_text())["candidates"]}
    log = tmp_path / "ratings.csv"
    sid = append_submission(log, rnd.submission(list(range(1, rnd.k + 1))))
    rows = read_ratings(log)
    rows = rows[rows["submission_id"] == sid]
    assert len(rows) == rnd.k
    for i, shown in enumerate(rnd.shown):
        rank = shown.candidate.rank
        row = rows[rows["composite_rank"] == rank].iloc[0]

        def value(x):
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

        from_json = seam_jump_text(value(results[rank]["seam_pitch_jump_cents"]),
                                   value(results[rank]["seam_loudness_jump_db"]))
        from_csv = seam_jump_text(value(row["seam_pitch_jump_cents"]), value(row["seam_loudness_jump_db"]))
        assert from_json == from_csv
        assert f"seam: {from_json}" in scores_markdown(rnd, i)
    # the folder: native mix, 16 kHz analysis copies
    info = sf.info(out / "rank01" / "mix.wav")
    assert (info.samplerate, info.channels, info.subtype) == (RATE, 2, "PCM_24")
    assert sf.info(out / "rank01" / "mix_16k.wav").samplerate == SR


def test_a_blind_rounds_figures_are_drawn_after_it_is_answered(real_round):
    """A blind round keeps its figures hidden until it is rated, so they are drawn on its background
    thread after the request is answered; ``figures_ready`` waits for them: then every card and the
    overview are PNGs of the sheet's size (72 dpi: 1008 x 576 px)."""
    from PIL import Image

    _, _, rnd, _ = real_round
    assert rnd.blind and rnd.figures is not None
    assert "figures_drawn_beside" not in rnd.timings  # not on the request's path
    rnd.figures_ready(timeout=60)
    paths = [s.figure for s in rnd.shown] + [rnd.overview]
    assert len(set(paths)) == rnd.k + 1
    for path in paths:
        assert path.parent == rnd.folder
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (1008, 576)


def test_an_open_rounds_figures_are_there_when_it_is_answered(real_round, tmp_path):
    """An open round shows its figures with its audio: they are drawn beside the band and are on disk
    when ``make_round`` returns; a failed drawing is reported in words by ``figures_ready``."""
    from concurrent.futures import Future

    import ensemble.listening.round as round_module
    from ensemble.engine import Engine, EngineConfig
    from ensemble.errors import EnsembleError
    from ensemble.listening.settings import check_settings

    clip, _, blind_round, _ = real_round
    engine = Engine.load(EngineConfig(checkpoints_dir=str(ROOT / "checkpoints"),
                                      database_dir=str(ROOT / "assets" / "rag"),
                                      drums_dir=str(ROOT / "assets" / "drums")))
    settings = check_settings(target_seconds=10.0, k=2, alpha=None, beta=None, lookbacks=None,
                              followers=["Bass"], blind=False, input_seconds=clip.seconds)
    rnd = round_module.make_round(engine, clip, settings, folder=tmp_path / "open")
    assert rnd.timings["figures_drawn_beside"] > 0
    for path in [s.figure for s in rnd.shown] + [rnd.overview]:
        assert path.stat().st_size > 1000
    failed = Future()
    failed.set_exception(OSError("No such file or directory"))
    with pytest.raises(EnsembleError, match="figures could not be drawn: No such file"):
        round_module.Round(**{**blind_round.__dict__, "figures": failed}).figures_ready()


def test_cli_extend_writes_native_outputs_and_says_its_notes_first(tmp_path):
    """``python -m ensemble extend`` on a 3 s 48 kHz stereo PCM-24 file: the notes come first in plain
    words, the mixes are at 48 kHz stereo PCM-24, the analysis copies at 16 kHz mono."""
    import subprocess
    import sys

    mono = load_audio(sorted((ROOT / "assets" / "examples").glob("*_8s.wav"))[0]).audio[: 3 * SR]
    hi = soxr.resample(mono, SR, 48000, quality="HQ")
    src = tmp_path / "take.wav"
    sf.write(src, np.stack([hi, 0.5 * hi], axis=1), 48000, subtype="PCM_24")
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "ensemble", "extend", str(src), "--seconds", "6", "--top-k", "2",
                          "--followers", "bass", "--out", str(out), "--quiet"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("Note: ") and "shorter than the smallest lookback" in run.stdout
    summary = json.loads(lines[-1])
    assert summary["output"] == {"sample_rate": 48000, "channels": 2, "subtype": "PCM_24"}
    assert summary["notes"] and summary["notes"][0] in lines[0]
    info = sf.info(out / "rank02" / "mix.wav")
    assert (info.samplerate, info.channels, info.subtype) == (48000, 2, "PCM_24")
    info = sf.info(out / "rank02" / "mix_16k.wav")
    assert (info.samplerate, info.channels) == (SR, 1)
    assert sf.info(out / "input.wav").channels == 2


def test_a_recording_below_16k_comes_back_at_16k_with_its_channels():
    """An 8 kHz stereo phone recording: upsampled to 16 kHz (the band keeps its highs), channels kept."""
    ext = fake_extension(input_seconds=3.0, target_seconds=5.0, k=1)
    ext.original = soxr.resample(ext.original, RATE, 8000, quality="HQ")
    ext.original_rate = 8000
    assert native_format(ext) == (SR, 2)
    out = native_mix(ext, 0)
    assert out.shape == (len(ext.performances[0].mix), 2)
    up = soxr.resample(ext.original, 8000, SR, quality="HQ")
    perf = ext.performances[0]
    band = perf.stems["Bass"] + perf.stems["Drums"]
    before = slice(int(0.05 * SR), len(ext.input_audio) - XFADE - int(0.05 * SR))
    for ch in range(2):
        residual = out[before, ch] - 0.8 * up[before, ch] - band[before]
        assert _db(residual) - _db(out[before, ch]) < -60.0
