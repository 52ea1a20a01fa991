"""The performer: harmony, beat grids, the drum database, rendering, mixing, writing and the CLI.

Everything runs on synthetic audio with tiny debug models and a drum database built in ``tmp_path``
from a synthetic two-track corpus (tests never read data/ or the shipped checkpoints).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from ensemble.audio import peak_dbfs
from ensemble.cli import main
from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig, loudness_db, n_frames
from ensemble.jobs.corpus.layout import NoteList, notes_to_frames, stem_features, write_track
from ensemble.jobs.drum_assets import build_assets
from ensemble.jobs.perform_eval import drum_onset_errors
from ensemble.models.arranger import make_debug_arranger
from ensemble.models.decoder import make_debug_decoder
from ensemble.models.io import save_checkpoint
from ensemble.music import Key, estimate_key, midi_to_hz
from ensemble.perform import PerformConfig, Performer, parse_followers, write_performance
from ensemble.perform.analysis import (
    _features,
    analyze_leader,
    chunked_features,
    chunked_loudness,
    plan_harmony,
)
from ensemble.perform.drums import DrumDB, LoopCut, leader_pattern, place_loop, select_loop
from ensemble.perform.harmony import (
    HarmonyModel,
    bass_midi,
    harmony_counts,
    keys_voicings,
)
from ensemble.perform.rhythm import BeatGrid, drum_grids, extend_grid

SR = 16000
FC = FeatureConfig()


# ----------------------------------------------------------------------------- synthetic audio

def tone(midi: float, seconds: float, *, amp: float = 0.3, decay: float = 1.5) -> np.ndarray:
    """A plucked harmonic tone (3 harmonics, exponential decay)."""
    t = np.arange(int(round(seconds * SR))) / SR
    f = float(midi_to_hz(midi))
    y = sum(a * np.sin(2 * np.pi * k * f * t) for k, a in ((1, 1.0), (2, 0.4), (3, 0.2)))
    env = np.exp(-t * decay) * np.minimum(1.0, t / 0.005)
    return (amp * y * env).astype(np.float32)


def melody(notes: list[tuple[float, float]], note_s: float, lead_s: float = 0.0) -> np.ndarray:
    """Consecutive notes (midi, beats... as seconds) starting at ``lead_s``."""
    parts = [np.zeros(int(round(lead_s * SR)), np.float32)]
    parts += [tone(m, note_s * d) for m, d in notes]
    return np.concatenate(parts)


def drum_hit(pitch: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic GM drum hit: kick 36, snare 38, hat 42, crash 49."""
    n = {36: 0.25, 38: 0.2, 42: 0.06, 49: 0.8}[pitch]
    t = np.arange(int(n * SR)) / SR
    if pitch == 36:
        y = np.sin(2 * np.pi * (50 + 60 * np.exp(-t * 30)) * t) * np.exp(-t * 18)
    else:
        noise = rng.uniform(-1, 1, len(t))
        if pitch == 42:
            noise = np.diff(noise, prepend=0.0)
        y = noise * np.exp(-t * {38: 25, 42: 70, 49: 5}[pitch]) * (0.5 if pitch == 42 else 0.8)
    return (0.6 * y).astype(np.float32)


def drum_track(bpm: float, bars: int, lead_s: float, rng: np.random.Generator
               ) -> tuple[np.ndarray, list[tuple[float, float, int, int]]]:
    """4/4 groove: kick on 1 and 3, snare on 2 and 4, hats on eighths, a crash on bar 1."""
    beat = 60.0 / bpm
    rows = []
    for b in range(bars):
        s = lead_s + 4 * b * beat
        rows += [(s, 36), (s + 2 * beat, 36), (s + beat, 38), (s + 3 * beat, 38)]
        rows += [(s + k * beat / 2, 42) for k in range(8)]
        if b == 0:
            rows.append((s, 49))
    rows.append((lead_s + 4 * bars * beat, 36))  # the ending
    n = int((lead_s + 4 * (bars + 1) * beat) * SR)
    audio = np.zeros(n + SR, np.float32)
    for t, p in rows:
        h = drum_hit(p, rng)
        i = int(round(t * SR))
        audio[i:i + len(h)] += h[: len(audio) - i]
    return audio[:n], [(t, t + 0.1, p, 100) for t, p in rows]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> object:
    """Two train tracks (120 and 100 BPM) in the corpus layout."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(7)
    for i, bpm in enumerate((120.0, 100.0)):
        lead = 0.25
        drums, rows = drum_track(bpm, 6, lead, rng)
        n = len(drums)
        beat = 60.0 / bpm
        prog = [48, 53, 55, 48, 48, 53]  # C F G C C F, one chord per bar
        gtr, bass = np.zeros(n, np.float32), np.zeros(n, np.float32)
        g_notes, b_notes = [], []
        for b, chord in enumerate(prog):
            for k, iv in enumerate((0, 4, 7, 12)):
                t = lead + (4 * b + k) * beat
                y = tone(chord + 24 + iv, beat * 0.95)
                gtr[int(t * SR):int(t * SR) + len(y)] += y[: n - int(t * SR)]
                g_notes.append((t, t + beat * 0.95, chord + 24 + iv, 100))
                y = tone(chord - 12, beat * 0.95, amp=0.4)
                bass[int(t * SR):int(t * SR) + len(y)] += y[: n - int(t * SR)]
                b_notes.append((t, t + beat * 0.95, chord - 12, 100))
        stems = {"Guitar": gtr, "Bass": bass, "Keys": 0.5 * gtr, "Drums": drums}
        notes = {"Guitar": NoteList.from_rows(g_notes), "Bass": NoteList.from_rows(b_notes),
                 "Keys": NoteList.from_rows(g_notes), "Drums": NoteList.from_rows(rows)}
        T = n_frames(n, FC)
        feats = {k: stem_features(v, notes_to_frames(notes[k], T, pitched=k != "Drums"))
                 for k, v in stems.items()}
        meta = {"split": "train", "beat_bpm": bpm, "tempo_bpm": bpm, "time_signature": "4/4",
                "key": {"name": "C major"},
                "stems": {k: {"notes": notes[k].to_json()} for k in stems}}
        mix = sum(stems.values())
        write_track(root / f"Track{i:05d}", stems=stems, mix=mix, features=feats,
                    mix_loudness_db=loudness_db(mix), metadata=meta)
    return root


@pytest.fixture(scope="module")
def drum_db_dir(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("assets") / "drums"
    build_assets(corpus, out, command="test")
    return out


@pytest.fixture(scope="module")
def performer(drum_db_dir) -> Performer:
    decoders = {"Bass": make_debug_decoder("Bass"), "Keys": make_debug_decoder("Keys")}
    return Performer(make_debug_arranger(), decoders, DrumDB.load(drum_db_dir), PerformConfig())


def click_track(bpm: float, seconds: float, first: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Short 1 kHz clicks on every beat (accented on every 4th): (audio, click times)."""
    times = np.arange(first, seconds - 0.05, 60.0 / bpm)
    y = np.zeros(int(seconds * SR), np.float32)
    t = np.arange(int(0.03 * SR)) / SR
    for i, c in enumerate(times):
        click = (0.6 if i % 4 == 0 else 0.35) * np.sin(2 * np.pi * 1000 * t) * np.exp(-t * 150)
        j = int(round(c * SR))
        y[j:j + len(click)] += click[: len(y) - j].astype(np.float32)
    return y, times


# ----------------------------------------------------------------------------- config & harmony

def test_parse_followers_and_config_validation():
    assert parse_followers("keys, BASS") == ("Bass", "Keys")
    with pytest.raises(EnsembleError, match="allowed"):
        parse_followers("bass,guitar")
    with pytest.raises(EnsembleError, match="harmony_unit"):
        PerformConfig(harmony_unit="phrase")
    with pytest.raises(EnsembleError, match="ceiling"):
        PerformConfig(limiter_ceiling_db=0.5)


def test_key_and_chords_of_arpeggiated_triads():
    """C-F-G-C arpeggios (a bar each at 120 BPM) -> key C major, roots C, F, G, C."""
    prog = [60, 65, 67, 60]
    notes = [(r + iv, 1.0) for r in prog for iv in (0, 4, 7, 12, 7, 4, 0, 4)]
    audio = melody(notes, 0.25, lead_s=0.5)
    audio = np.concatenate([audio, np.zeros(SR // 2, np.float32)])
    ana = analyze_leader(audio)
    assert ana.key.name == "C major"
    plan = plan_harmony(ana, HarmonyModel.rules())
    beats = plan.beat_times_s[:-1]
    for k, root in enumerate(prog):  # the beats well inside each chord's 2 s
        mid = (beats > 0.5 + 2 * k + 0.4) & (beats < 0.5 + 2 * k + 1.6)
        assert mid.any()
        roots = {plan.chords[u][0] for u in plan.unit_of_beat[mid]}
        assert roots == {root % 12}, (k, roots)
    sounding = plan.bass_f0_hz[plan.bass_f0_hz > 0]
    assert sounding.size and sounding.min() >= 40.0 and sounding.max() <= 110.5


def test_key_estimate_and_voicing_helpers():
    major = np.zeros(12)
    major[[0, 2, 4, 5, 7, 9, 11]] = [5, 2, 4, 2, 5, 2, 1]
    assert estimate_key(major).name == "C major"
    assert estimate_key(np.roll(major, 9)).name == "A major"
    assert estimate_key(np.zeros(12)).confidence == 0.0
    notes = bass_midi(np.array([0, 5, 7, 0, 11]), low=28, high=45)
    assert np.all((notes >= 28) & (notes <= 45)) and list(notes % 12) == [0, 5, 7, 0, 11]
    v = keys_voicings([(0, 4, 7), (5, 9, 0), (7, 11, 2)], low=48, high=72)
    assert v.shape == (3, 3) and np.all((v >= 48) & (v <= 72)) and np.all(np.diff(v, axis=1) > 0)
    assert np.abs(np.diff(v, axis=0)).sum(axis=1).max() <= 6  # voice-led, not jumping


def test_harmony_counts_and_model_roundtrip():
    units = np.zeros((3, 12))
    units[:, [2, 6, 9]] = 1.0  # D major triad evidence
    prior, emis, trans = harmony_counts(units, Key(2, "major", 1.0), np.array([2, 2, 9]))
    assert prior[0, 0] == 2 and prior[0, 7] == 1 and prior[1].sum() == 0
    assert trans[0, 0, 0] == 1 and trans[0, 0, 7] == 1
    model = HarmonyModel.from_counts(prior, emis, trans)
    again = HarmonyModel.from_dict(json.loads(model.to_json()))
    assert np.allclose(again.log_emission, model.log_emission, atol=1e-5)
    with pytest.raises(EnsembleError, match="rebuild"):
        HarmonyModel.from_dict({"name": "learned"})


def test_chunked_analysis_matches_whole_clip_analysis():
    audio = np.tile(melody([(60, 1), (64, 1), (67, 1), (71, 2)], 0.3), 12)[: int(17.3 * SR) + 51]
    whole, parts = _features(audio, FC), chunked_features(audio, FC, chunk_seconds=5.0)
    for k in ("f0_hz", "voiced", "loudness_db", "rms"):
        assert np.array_equal(getattr(whole, k), getattr(parts, k)), k
    # chroma's filter-bank product runs through BLAS, whose blocking (and so the last bits of a float32
    # sum) depends on the matrix width and the CPU: equal within float32 rounding, not always bitwise
    assert np.max(np.abs(whole.chroma - parts.chroma)) < 1e-5
    assert np.mean(np.abs(whole.onset - parts.onset)) < 0.02  # per-chunk dB reference
    assert np.array_equal(chunked_loudness(audio, FC, chunk_seconds=5.0), whole.loudness_db)
    exact = audio[: 15 * SR]  # a whole number of chunks: the last frame must not be lost
    assert len(chunked_features(exact, FC, chunk_seconds=5.0).f0_hz) == n_frames(len(exact), FC)
    assert np.array_equal(chunked_loudness(exact, FC, chunk_seconds=5.0), _features(exact, FC).loudness_db)


# ----------------------------------------------------------------------------- rhythm & drums

def test_grids_cover_the_clip():
    g = extend_grid(np.array([1.0, 1.5, 2.0, 2.5]), 4.0)
    assert g[0] <= 0 and g[-1] >= 4.0 and np.allclose(np.diff(g), 0.5)
    beats = BeatGrid(g, 120.0, "tracked", 4)
    grids = drum_grids(beats, 4.0)
    assert {gr.ratio for gr in grids} == {1 / 3, 0.5, 1.0, 2.0, 3.0}
    for gr in grids:
        assert gr.times_s[0] <= 0 and gr.times_s[-1] >= 4.0


def test_place_loop_lands_beats_on_an_irregular_grid():
    beats = 4
    loop = np.zeros(4 * 8000, np.float32)  # 120 BPM
    loop[np.arange(beats) * 8000] = 1.0  # an impulse on every beat
    grid = np.cumsum(np.r_[0.0, 0.48, 0.52, 0.5, 0.47, 0.53, 0.5, 0.5, 0.5])
    out = place_loop(loop, beats, grid, 1, n_samples=int(4.0 * SR), sample_rate=SR)
    peaks = np.flatnonzero(out > 0.5) / SR
    inside = grid[grid < 4.0]
    assert len(peaks) == len(inside)
    assert np.max(np.abs(peaks - inside)) < 0.002


def test_select_loop_finds_the_bar_phase(rng):
    """A loop with one accented beat, heard from its 3rd beat on: the phase must be found exactly."""
    bpm, beats = 120.0, 4
    beat_n = int(60.0 / bpm * SR)

    def accented(accent: int) -> np.ndarray:
        y = np.zeros(beats * beat_n, np.float32)
        for b in range(beats):
            hit = drum_hit(36 if b == accent else 42, rng) * (1.0 if b == accent else 0.3)
            y[b * beat_n:b * beat_n + len(hit)] += hit[: len(y) - b * beat_n]
        return y

    loops = [LoopCut(accented(0), bpm, beats, beats, 2, "A", 0.0),
             LoopCut(accented(0), 90.0 * bpm / 120.0 * 1.5, beats, beats, 2, "far tempo", 0.0)]
    db = DrumDB.from_loops(loops)
    leader = np.tile(accented(0), 5)[2 * beat_n:]  # starts on loop beat 2
    from ensemble.features import onset_strength

    onset = onset_strength(leader)
    grid = BeatGrid(np.arange(-1, 4 * beats + 1) * 60.0 / bpm, bpm, "tracked", 17)
    grids = [g for g in drum_grids(grid, len(leader) / SR) if g.ratio == 1]
    choice = select_loop(db, onset, grids, frame_rate=FC.frame_rate)
    assert choice.index == 0 and choice.correlation > 0.8 and choice.stretch == 1.0
    # grid beat j plays loop beat (j + lag) % 4; grid beat 1 is t = 0 s, where loop beat 2 sounds
    assert (1 + choice.lag_beats) % beats == 2
    x, valid = leader_pattern(onset, grid.times_s, frame_rate=FC.frame_rate)
    assert x.shape == valid.shape and not valid[:12].any()  # grid beat 0 is before the clip


def test_drum_db_files_manifest_and_tamper_check(drum_db_dir, tmp_path):
    man = json.loads((drum_db_dir / "manifest.json").read_text())
    assert set(man["files"]) == {"drums.ogg", "drums.npz", "harmony.json"}
    assert all(f["bytes"] <= 10 * 1024 * 1024 for f in man["files"].values())
    db = DrumDB.load(drum_db_dir)
    assert len(db) >= 2 and db.harmony is not None and db.harmony.name == "learned"
    for i in range(len(db)):  # a loop is a whole number of beats at its tempo
        beats = db.table["lengths"][i] / SR / (60.0 / db.table["tempo_bpm"][i])
        assert abs(beats - db.table["beats"][i]) < 0.01
    bad = tmp_path / "drums"
    bad.mkdir()
    for name in man["files"]:
        (bad / name).write_bytes((drum_db_dir / name).read_bytes())
    (bad / "manifest.json").write_text(json.dumps(man))
    data = bytearray((bad / "drums.npz").read_bytes())
    data[-10] ^= 0xFF
    (bad / "drums.npz").write_bytes(bytes(data))
    with pytest.raises(EnsembleError, match="sha256"):
        DrumDB.load(bad)
    with pytest.raises(EnsembleError, match="manifest"):
        DrumDB.load(tmp_path / "nowhere")


def test_loop_db_in_memory_rejects_empty():
    with pytest.raises(EnsembleError, match="no drum loops"):
        DrumDB.from_loops([])
    cut = LoopCut(np.zeros(SR, np.float32), 120.0, 2, 2, 2, "T", 0.0)
    assert len(DrumDB.from_loops([cut])) == 1


# ----------------------------------------------------------------------------- the performer

def test_drums_follow_a_click_track_and_mix_never_clips(performer):
    audio, clicks = click_track(120.0, 10.0)
    perf = performer.perform(audio)
    assert perf.info["beat_source"] == "tracked"
    assert abs(perf.info["tempo_bpm"] - 120.0) < 3.0
    drums = perf.stems["Drums"]
    assert peak_dbfs(drums) > -60.0
    errs = drum_onset_errors(drums[SR // 2:], clicks - 0.5)  # skip the first half second
    assert errs.size >= 8
    # onsets of a groove fall on beats or eighths: compare with the half-beat grid too
    halves = np.sort(np.r_[clicks, clicks + 0.25])
    errs_half = drum_onset_errors(drums[SR // 2:], halves - 0.5)
    assert np.median(errs_half) <= 0.040
    beat_hits = drum_onset_errors(drums, clicks)
    assert np.mean(beat_hits <= 0.040) >= 0.5
    assert peak_dbfs(perf.mix) <= -1.0 + 1e-3


def test_loud_gains_still_do_not_clip(drum_db_dir):
    cfg = PerformConfig(leader_gain_db=12.0, bass_gain_db=20.0, drums_gain_db=20.0, keys_gain_db=20.0)
    p = Performer(make_debug_arranger(), {"Bass": make_debug_decoder("Bass"),
                                          "Keys": make_debug_decoder("Keys")},
                  DrumDB.load(drum_db_dir), cfg)
    audio = melody([(64, 1), (67, 1), (71, 1), (72, 1)] * 3, 0.25) * 3.0
    perf = p.perform(np.clip(audio, -1, 1))
    assert peak_dbfs(perf.mix) <= cfg.limiter_ceiling_db + 1e-3 < 0.0


def test_silent_leader_gets_drums_and_a_note(performer, tmp_path):
    perf = performer.perform(np.zeros(3 * SR, np.float32))
    assert perf.info["leader"]["silent"] and perf.info["beat_source"] == "default"
    assert any("silent" in n for n in perf.info["notes"])
    assert peak_dbfs(perf.stems["Drums"]) > -40.0
    assert not perf.stems["Bass"].any() and not perf.stems["Keys"].any()
    out = write_performance(perf, tmp_path / "silent")
    info = json.loads((out / "perform.json").read_text())
    assert info["notes"] and info["harmony"] is None and info["drums"]["segment"]["track"]


def test_unpitched_leader_gets_drums_but_no_bass(performer, rng):
    audio = np.zeros(4 * SR, np.float32)
    for t in np.arange(0.2, 3.9, 0.5):  # noise bursts, no pitch
        i = int(t * SR)
        audio[i:i + 1600] = (rng.uniform(-0.5, 0.5, 1600) * np.exp(-np.arange(1600) / 300)).astype(np.float32)
    perf = performer.perform(audio)
    assert not perf.info["leader"]["pitched"]
    assert any("unpitched" in n for n in perf.info["notes"])
    assert not perf.stems["Bass"].any() and peak_dbfs(perf.stems["Drums"]) > -60.0


@pytest.mark.parametrize("seconds", [2.0, 65.0])
def test_any_length_without_truncation(performer, seconds, tmp_path):
    n = int(seconds * SR) + 37  # not a whole number of frames
    reps = int(np.ceil(n / (2 * SR)))
    audio = np.tile(melody([(60, 1), (64, 1), (67, 1), (72, 1)] * 2, 0.25), reps)[:n]
    perf = performer.perform(audio)
    assert len(perf.mix) == n and all(len(s) == n for s in perf.stems.values())
    assert set(perf.stems) == {"Leader", "Bass", "Drums", "Keys"}
    if seconds > 60:  # the bass still plays at the end: nothing was cut
        assert perf.plan is not None and (perf.plan.bass_f0_hz[-300:] > 0).any()
    out = write_performance(perf, tmp_path / "out")
    info = sf.info(str(out / "mix.wav"))
    assert info.frames == n and info.samplerate == SR and info.subtype == "PCM_16"
    for s in perf.stems:
        assert sf.info(str(out / "stems" / f"{s}.wav")).frames == n
    assert json.loads((out / "perform.json").read_text())["n_samples"] == n


def test_perform_json_contents_and_seed(performer, tmp_path):
    audio = melody([(62, 1), (66, 1), (69, 1), (74, 1)] * 4, 0.25, lead_s=0.3)
    a = performer.perform(audio, seed=1)
    b = performer.perform(audio, seed=1)
    assert np.array_equal(a.mix, b.mix)
    info = a.info
    for key in ("tempo_bpm", "beat_times_s", "key", "harmony", "drums", "gains_db", "models",
                "notes", "timings_s", "config", "mix_peak_dbfs"):
        assert key in info
    assert info["harmony"]["beats"] and {"chord", "start_s", "end_s"} <= set(info["harmony"]["beats"][0])
    assert info["models"]["harmony"]["model"] == "learned"
    json.dumps(info)  # JSON-able
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    (tmp_path / "out" / "stems").mkdir()
    (tmp_path / "out" / "stems" / "Keys.wav").write_bytes(b"old take")
    no_keys = replace(a, stems={k: v for k, v in a.stems.items() if k != "Keys"})
    write_performance(no_keys, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "out" / "stems").iterdir()) == [
        "Bass.wav", "Drums.wav", "Leader.wav"]
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_perform_batch_equals_one_call_per_clip(performer):
    """K clips through one batch (shared decoder passes, two planning threads) give the same audio
    as K separate perform() calls: the batched GRU differs only by float rounding, and each clip's
    noise comes from its own seeded generator. A clip of another length and a silent clip ride
    along in the same batch."""
    tune = [(62, 1), (66, 1), (69, 1), (74, 1), (71, 1), (67, 1)] * 3
    clips = [melody([(m + shift, d) for m, d in tune], 0.25, lead_s=0.2) for shift in (0, 2, 5)]
    clips.append(melody(tune[:10], 0.3))  # another length: its own render group
    clips.append(np.zeros(3 * SR, np.float32))  # silent: no bass or keys to render
    batch = performer.perform_batch(clips, seed=4, workers=2)
    assert len(batch) == len(clips)
    for clip, got in zip(clips, batch, strict=True):
        want = performer.perform(clip, seed=4)
        assert set(got.stems) == set(want.stems)
        for name in want.stems:
            err = np.max(np.abs(got.stems[name] - want.stems[name]))
            ref = max(float(np.max(np.abs(want.stems[name]))), 1e-3)
            assert 20 * np.log10(max(err, 1e-12) / ref) < -80, name  # 80 dB below the stem's peak
        assert got.info["key"] == want.info["key"] and got.info["drums"] == want.info["drums"]
    assert "silent" in " ".join(batch[-1].info["notes"])
    # above render_chunk_seconds each voice goes through the whole decoder alone: same audio
    one_voice = Performer(performer.arranger, performer.decoders, performer.drum_db,
                          replace(performer.config, render_chunk_seconds=1.0))
    alone = one_voice.perform(clips[0], seed=4)
    for name in ("Bass", "Keys"):
        err = np.max(np.abs(alone.stems[name] - batch[0].stems[name]))
        assert 20 * np.log10(max(err, 1e-12) / np.max(np.abs(alone.stems[name]))) < -80, name
    with pytest.raises(EnsembleError, match="clip 1"):
        performer.perform_batch([clips[0], np.zeros(SR, np.float32)])
    assert performer.perform_batch([]) == []


def test_arranger_with_the_beat_input_reads_the_performers_grid(drum_db_dir, monkeypatch):
    """An arranger trained with the ``beat`` input gets the beat grid the drums are laid on (not a
    second tracking of the clip)."""
    import torch

    from ensemble.models.arranger import Arranger, ArrangerConfig

    torch.manual_seed(0)
    inputs = ("loudness", "onset", "f0", "voiced", "beat")
    arranger = Arranger(ArrangerConfig(inputs=inputs, d_model=16, n_heads=2, n_layers=1))
    p = Performer(arranger, {"Bass": make_debug_decoder("Bass"), "Keys": make_debug_decoder("Keys")},
                  DrumDB.load(drum_db_dir), PerformConfig())
    seen = []
    import ensemble.perform.performer as performer_module

    real = performer_module.arranger_features

    def spy(*args, **kwargs):
        seen.append(kwargs.get("beats_s"))
        return real(*args, **kwargs)

    monkeypatch.setattr(performer_module, "arranger_features", spy)
    perf = p.perform(melody([(62, 1), (66, 1), (69, 1), (74, 1)] * 4, 0.25, lead_s=0.3))
    assert set(perf.stems) == {"Leader", "Bass", "Drums", "Keys"}
    assert np.array_equal(seen[0], perf.analysis.beats.times_s)


def test_bad_input_raises_and_writes_nothing(performer, tmp_path):
    for bad, match in ((np.zeros(SR, np.float32), "allowed: 2 s"), (np.zeros(0), "empty"),
                       (np.zeros((2, 3 * SR)), "mono"), (np.full(3 * SR, np.nan), "NaN")):
        with pytest.raises(EnsembleError, match=match):
            performer.perform(bad)
    with pytest.raises(EnsembleError, match="601|allowed"):
        performer.perform(np.zeros(601 * SR, np.float32))
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not audio")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(SR, np.float32), SR)
    for i, path in enumerate((not_audio, empty, short, tmp_path / "missing.wav")):
        out = tmp_path / f"out{i}"
        assert main(["perform", str(path), "--out", str(out)]) == 2
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.wav", "notes.wav", "short.wav"]


def test_cli_perform_with_checkpoints(drum_db_dir, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt / "arranger.pt", make_debug_arranger(), "arranger", {"name": "arranger"})
    for name in ("Bass", "Keys"):
        save_checkpoint(ckpt / f"decoder_{name}.pt", make_debug_decoder(name), "decoder",
                        {"name": f"decoder_{name}", "steps": 1})
    clip = tmp_path / "clip.wav"
    sf.write(clip, melody([(60, 1), (64, 1), (67, 1), (64, 1)] * 3, 0.25), SR)
    out = tmp_path / "take"
    rc = main(["perform", str(clip), "--out", str(out), "--followers", "bass,drums", "--seed", "3",
               "--checkpoints", str(ckpt), "--drum-db", str(drum_db_dir), "--quiet"])
    assert rc == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["mix_peak_dbfs"] <= 0.0
    info = json.loads((out / "perform.json").read_text())
    assert info["followers"] == ["Bass", "Drums"] and info["seed"] == 3
    assert info["models"]["Bass"]["file"] == "decoder_Bass.pt" and info["models"]["Bass"]["sha256"]
    assert sorted(p.name for p in (out / "stems").iterdir()) == ["Bass.wav", "Drums.wav", "Leader.wav"]
    assert main(["perform", str(clip), "--out", str(tmp_path / "x"), "--checkpoints",
                 str(tmp_path / "none")]) == 2
    assert not (tmp_path / "x").exists()
