"""Report card metrics: scores against known signals, seam jumps, caching, candidates, figures, CLI."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ensemble import features as fe
from ensemble import metrics as M
from ensemble.errors import EnsembleError
from ensemble.figures import report as F
from tests.conftest import SR, sine_from_f0

ROOT = Path(__file__).resolve().parents[1]
FAST = M.MetricsConfig()


def harmonic(f_hz: np.ndarray, amplitude: float = 0.4) -> np.ndarray:
    """A tone with 3 harmonics following the per-sample frequency ``f_hz``."""
    return (sine_from_f0(f_hz, amplitude=amplitude) + sine_from_f0(2 * f_hz, amplitude=amplitude / 3)
            + sine_from_f0(3 * f_hz, amplitude=amplitude / 6))


def notes(midi: list[int], seconds_each: float, vibrato_cents: float = 15.0) -> np.ndarray:
    """[n] per-sample frequency of a note sequence with gentle 5.5 Hz vibrato."""
    m = np.repeat(np.asarray(midi, float), int(seconds_each * SR))
    t = np.arange(len(m)) / SR
    return 440.0 * 2.0 ** ((m - 69) / 12 + vibrato_cents / 1200 * np.sin(2 * np.pi * 5.5 * t))


# A phrase that starts and ends on A3, so joining it to its transposition jumps by the transposition.
PHRASE = [57, 60, 64, 60, 57]


def no_pitch_marked(fig) -> bool:
    return any(M.NO_PITCH_TEXT in t.get_text() for ax in fig.axes for t in ax.texts)


# -- scores ----------------------------------------------------------------------------------------


def test_steady_tone_is_less_complex_than_a_melody(steady_tone):
    steady = M.clip_scores(M.analyze_clip(steady_tone[0], f0_method="pyin", cache=None))
    melody = M.clip_scores(M.analyze_clip(harmonic(notes([60, 64, 67, 72, 67, 64, 62, 60], 0.25)),
                                          f0_method="pyin", cache=None))
    assert steady.melodic_complexity < 0.01  # pitch sd well under a semitone
    assert melody.melodic_complexity > 0.15  # C4..C5 arpeggio: sd ~4 semitones
    assert steady.melodic_complexity < melody.melodic_complexity
    assert melody.pitch_std_semitones == pytest.approx(12 * melody.melodic_complexity)
    assert steady.voiced_ratio > 0.95 and melody.voiced_ratio > 0.9
    assert 1200 * abs(math.log2(steady.median_f0_hz / 330.0)) < 10


def test_energy_and_dynamics_follow_a_known_envelope():
    f = np.full(2 * SR, 440.0)
    amp = np.where(np.arange(2 * SR) < SR, 0.5, 0.05)
    audio = (sine_from_f0(f, amplitude=1.0) * amp).astype(np.float32)
    s = M.clip_scores(M.analyze_clip(audio, f0_method="yin", cache=None))
    expected_energy = amp.mean() / math.sqrt(2)  # mean RMS of a sine = amplitude / sqrt 2
    assert s.energy_rms == pytest.approx(expected_energy, rel=0.05)
    assert s.energy_dbfs == pytest.approx(20 * math.log10(s.energy_rms))
    assert s.dynamics_db == pytest.approx(20.0, abs=1.0)  # 0.5 vs 0.05 = 20 dB
    assert s.duration_s == pytest.approx(2.0)

    steady = M.clip_scores(M.analyze_clip(audio[:SR], f0_method="yin", cache=None))
    assert steady.dynamics_db < 1.0
    assert steady.energy_rms == pytest.approx(0.5 / math.sqrt(2), rel=0.05)


# -- seams -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("semitones", [2, -2])
def test_seam_pitch_jump_of_a_clip_joined_to_its_transposition(semitones):
    f = notes(PHRASE, 0.3)
    first, second = harmonic(f), harmonic(f * 2.0 ** (semitones / 12))
    joined = np.concatenate([first, second])
    clip = M.split_at_seam(M.analyze_clip(joined, f0_method="pyin", cache=None), len(first) / SR)
    assert clip.seam.pitch_jump_cents == pytest.approx(100.0 * semitones, abs=15.0)
    assert clip.seam.pitch_note == ""
    assert abs(clip.seam.loudness_jump_db) < 1.5  # same level on both sides (A-weighting differs)
    assert abs(clip.seam.rms_jump_db) < 0.5


def test_candidate_seam_from_stored_features_without_running_a_pitch_tracker(monkeypatch):
    f = notes(PHRASE, 0.3)
    first, second = harmonic(f), harmonic(f * 2.0 ** (2 / 12))
    inp = M.analyze_clip(first, f0_method="yin", cache=None)
    seg = M.SegmentFeatures.from_features(
        fe.analyze(second, f0_method="yin", with_chroma=False, with_onset=False), label="up 2",
        f0_method="yin", duration_s=len(second) / SR)

    def boom(*args, **kwargs):
        raise AssertionError("a pitch tracker ran for a candidate")

    monkeypatch.setattr(M, "_f0", boom)
    for xf in (0.0, 0.05):
        cand = M.candidate_analysis(inp, seg, crossfade_s=xf)
        assert cand.seam.pitch_jump_cents == pytest.approx(200.0, abs=15.0)
        assert cand.seam.seam_s == pytest.approx(inp.duration_s - xf / 2)
        assert cand.analysis.duration_s == pytest.approx(inp.duration_s + seg.duration_s - xf,
                                                         abs=0.006)
        assert cand.analysis.n_frames == fe.n_frames(round(cand.analysis.duration_s * SR), fe.FeatureConfig())
        assert cand.label == "up 2" and cand.analysis.f0_method == "yin"
        # before the seam the candidate's curves are the input's
        k = int(cand.seam.seam_s * 100) - 1
        np.testing.assert_array_equal(cand.analysis.f0_hz[:k], inp.f0_hz[:k])
        assert np.isnan(cand.analysis.envelope[-1]).all()  # segment stored without a waveform


def test_candidate_from_what_the_rag_database_stores():
    """f0, voicing, loudness per frame (fp16), no RMS; or those plus the segment's audio."""
    f = notes(PHRASE, 0.3)
    first, second = harmonic(f), harmonic(f, amplitude=0.1)
    inp = M.analyze_clip(first, f0_method="yin", cache=None)
    stored = fe.analyze(second, f0_method="yin", with_chroma=False, with_onset=False)
    f0, voiced, loud = (stored.f0_hz.astype(np.float16), stored.voiced,
                        stored.loudness_db.astype(np.float16))

    bare = M.candidate_analysis(inp, M.SegmentFeatures(f0_hz=f0, voiced=voiced, loudness_db=loud))
    assert bare.seam.rms_jump_db is None
    assert bare.seam.loudness_jump_db == pytest.approx(-12.0, abs=1.0)  # 0.4 -> 0.1 amplitude
    assert bare.scores.energy_rms == pytest.approx(M.clip_scores(inp).energy_rms, rel=0.02)
    assert bare.scores.rms_coverage == pytest.approx(0.5, abs=0.02)
    fig = F.report_card(bare)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "RMS not stored" in texts and "waveform not stored" in texts

    full = M.candidate_analysis(inp, M.SegmentFeatures.from_audio(second, f0_hz=f0, voiced=voiced))
    assert full.seam.rms_jump_db == pytest.approx(-12.0, abs=0.5)
    assert full.scores.dynamics_db == pytest.approx(12.0, abs=1.0)
    assert np.isfinite(full.analysis.envelope).all()
    up = M.candidate_analysis(inp, M.SegmentFeatures.from_audio(
        second, f0_hz=f0, voiced=voiced).transposed(2))
    assert up.seam.pitch_jump_cents - full.seam.pitch_jump_cents == pytest.approx(200.0, abs=0.5)
    with pytest.raises(EnsembleError, match="frames"):
        M.SegmentFeatures.from_audio(second[:-SR // 10], f0_hz=f0, voiced=voiced)


def test_seam_with_an_unvoiced_side_has_no_pitch_jump():
    tone = harmonic(np.full(SR, 220.0))
    joined = np.concatenate([tone, np.zeros(SR, np.float32)])
    seam = M.seam_metrics(M.analyze_clip(joined, f0_method="yin", cache=None), 1.0)
    assert seam.pitch_jump_cents is None and seam.pitch_after_hz is None
    assert seam.pitch_note == "no pitch after the seam"
    assert seam.loudness_jump_db < -60
    with pytest.raises(EnsembleError, match="not inside the clip"):
        M.seam_metrics(M.analyze_clip(joined, f0_method="yin"), 2.5)


def test_candidate_rejects_other_grids_and_bad_seams():
    inp = M.analyze_clip(harmonic(np.full(SR, 220.0)), f0_method="yin")
    seg = M.SegmentFeatures.from_analysis(inp)
    other = M.SegmentFeatures(f0_hz=seg.f0_hz, voiced=seg.voiced, loudness_db=seg.loudness_db,
                              rms=seg.rms, config=fe.FeatureConfig(hop_length=320))
    with pytest.raises(EnsembleError, match="different grid"):
        M.candidate_analysis(inp, other)
    with pytest.raises(EnsembleError, match="seam_s"):
        M.candidate_analysis(inp, seg, seam_s=1.5)
    with pytest.raises(EnsembleError, match="frames"):
        M.SegmentFeatures(f0_hz=seg.f0_hz, voiced=seg.voiced[:-1], loudness_db=seg.loudness_db,
                          rms=seg.rms)


# -- no pitch: silence, very short, noise ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["silent", "very short", "noise"])
def test_unpitched_input_gives_a_report_marked_no_pitch(kind, rng):
    audio = {"silent": np.zeros(SR, np.float32),
             "very short": np.zeros(int(0.1 * SR), np.float32),
             "noise": (0.3 * rng.standard_normal(SR)).astype(np.float32)}[kind]
    analysis = M.analyze_clip(audio, f0_method="pyin", cache=None)
    assert not analysis.has_pitch
    scores = M.clip_scores(analysis)
    assert scores.melodic_complexity is None and scores.voiced_ratio == 0.0
    fig = F.report_card(analysis)
    assert no_pitch_marked(fig)
    assert F.figure_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_very_short_tone_is_reported_with_its_pitch():
    audio = harmonic(np.full(int(0.1 * SR), 330.0))
    analysis = M.analyze_clip(audio, f0_method="pyin", cache=None)
    assert analysis.n_frames == 11 and analysis.has_pitch
    assert not no_pitch_marked(F.report_card(analysis))


# -- cache -----------------------------------------------------------------------------------------


def test_cache_returns_the_same_analysis_for_the_same_audio(steady_tone):
    cache = M.AnalysisCache(maxsize=2)
    audio = steady_tone[0]
    first = M.analyze_clip(audio, f0_method="yin", cache=cache)
    assert M.analyze_clip(audio.copy(), f0_method="yin", cache=cache) is first
    other = audio.copy()
    other[1000] += 1e-3  # one sample differs
    second = M.analyze_clip(other, f0_method="yin", cache=cache)
    assert second is not first and second.sha256 != first.sha256
    assert M.analyze_clip(audio, f0_method="yin", cache=cache,
                          config=fe.FeatureConfig(hop_length=320)) is not first
    assert len(cache) == 2  # bounded: the oldest entry was dropped
    assert not first.f0_hz.flags.writeable  # shared objects cannot be altered in place


def test_disk_cache_survives_a_new_cache_object(tmp_path, steady_tone, monkeypatch):
    audio = steady_tone[0][:SR // 2]
    made = M.analyze_clip(audio, f0_method="yin", cache=M.AnalysisCache(directory=tmp_path))
    assert len(list(tmp_path.glob("*.npz"))) == 1
    monkeypatch.setattr(M, "_f0", lambda *a, **k: pytest.fail("recomputed despite the disk cache"))
    loaded = M.analyze_clip(audio, f0_method="yin", cache=M.AnalysisCache(directory=tmp_path))
    for name in ("times", "f0_hz", "voiced", "rms", "loudness_db", "envelope"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(made, name))
    assert (loaded.sha256, loaded.f0_method, loaded.config) == (made.sha256, "yin", made.config)


# -- figures ---------------------------------------------------------------------------------------


def labelled(ax) -> bool:
    return bool(ax.get_title() and ax.get_xlabel() and ax.get_ylabel())


def test_report_card_panels_have_titles_units_and_note_names():
    f = notes(PHRASE, 0.3)
    joined = np.concatenate([harmonic(f), harmonic(f * 2 ** (2 / 12))])
    clip = M.split_at_seam(M.analyze_clip(joined, f0_method="yin"), 1.5)
    fig = F.report_card(clip, title="test")
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 3 and all(labelled(ax) for ax in panels)
    assert all("(s)" in ax.get_xlabel() for ax in panels)
    melody = next(ax for ax in panels if "Melody" in ax.get_title())
    ticks = [label.get_text() for label in melody.get_yticklabels()]
    assert len(ticks) >= 3 and all(re.fullmatch(r"[A-G]#?-?\d \d+", t) for t in ticks), ticks
    box = next(ax for ax in fig.axes if not ax.axison)
    text = box.texts[0].get_text()
    assert box.get_title() == "Scores" and "pitch jump" in text and "cents" in text
    assert not no_pitch_marked(fig)


def test_compare_candidates_figure():
    f = notes(PHRASE, 0.3)
    inp = M.analyze_clip(harmonic(f), f0_method="yin")
    segs = [M.SegmentFeatures.from_analysis(
        M.analyze_clip(harmonic(f * 2 ** (k / 12)), f0_method="yin"), label=f"up {k}")
        for k in range(3)]
    segs.append(M.SegmentFeatures.from_analysis(M.analyze_clip(np.zeros(SR, np.float32),
                                                               f0_method="yin"), label="rest"))
    cands = [M.candidate_analysis(inp, s) for s in segs]
    assert cands[-1].seam.pitch_note == "no pitch after the seam"
    fig = F.compare_candidates(inp, cands)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 4 and all(labelled(ax) for ax in panels)
    assert sum("\u00b1" in ax.get_title() for ax in panels) == 2  # the zooms around the seam
    zoom = next(ax for ax in panels if "Melody" in ax.get_title() and "\u00b1" in ax.get_title())
    assert zoom.get_xlim() == (-1.0, 1.0)
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]
    assert cands[1].seam.pitch_jump_cents == pytest.approx(100.0, abs=15.0)
    assert any(f"{cands[1].seam.pitch_jump_cents:+.0f} cents" in t for t in legend)
    assert any("no pitch after the seam" in t for t in legend)
    with pytest.raises(EnsembleError, match="1 to 10"):
        F.compare_candidates(inp, cands * 3)


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), float)


def test_candidate_sheet_cards_match_figures_of_their_own():
    """The sheet draws the input once and each card on it: a card looks like compare_candidates of
    that candidate alone, the overview like compare_candidates of all, and drawing is repeatable."""
    f = notes(PHRASE, 0.3)
    inp = M.analyze_clip(harmonic(f), f0_method="yin")
    cands = [M.candidate_analysis(inp, M.SegmentFeatures.from_analysis(
        M.analyze_clip(harmonic(f * 2 ** (k / 12)), f0_method="yin"), label=f"up {k}")) for k in range(3)]

    def close(a: np.ndarray, b: np.ndarray) -> bool:  # same picture, up to antialiasing at line ends
        return a.shape == b.shape and np.abs(a - b).mean() < 0.5 and (np.abs(a - b).max(axis=2) > 32).mean() < 0.005

    one = F.CandidateSheet(inp, cands[:1], dpi=50)
    assert close(_pixels(one.card(0, label="#1 x", title="T")),
                 _pixels(F.figure_png(F.compare_candidates(inp, cands[:1], dpi=50, labels=["#1 x"], title="T"))))
    sheet = F.CandidateSheet(inp, cands, dpi=50)
    assert len(sheet) == 3
    cards = [_pixels(sheet.card(i)) for i in range(3)]
    assert all((cards[0] == c).all(axis=2).mean() > 0.95 for c in cards[1:])  # the shared background
    assert not np.array_equal(cards[0], cards[1])
    assert np.array_equal(_pixels(sheet.card(0)), cards[0])  # nothing of a card stays behind
    assert close(_pixels(sheet.overview()), _pixels(F.figure_png(F.compare_candidates(inp, cands, dpi=50))))
    with pytest.raises(EnsembleError, match="candidate index 3; allowed: 0..2"):
        sheet.card(3)
    with pytest.raises(EnsembleError, match="2 labels for 3 candidates"):
        sheet.overview(labels=["a", "b"])


def test_seam_jump_text_is_signed_and_says_when_undefined():
    assert M.seam_jump_text(-120.5, 1.25) == "pitch jump -120 cents, loudness jump +1.2 dB"
    assert M.seam_jump_text(99.6, -0.04) == "pitch jump +100 cents, loudness jump -0.0 dB"
    assert M.seam_jump_text(None, float("nan")) == "pitch jump n/a (no pitch on a side), loudness jump n/a"


def test_figure_wording_is_an_argument():
    f = notes(PHRASE, 0.3)
    inp = M.analyze_clip(harmonic(f), f0_method="yin")
    card = F.report_card(inp, text={"waveform_title": "Wellenform", "melody_title": "Melodie ({f0_method})",
                                    "time_label": "Zeit (s)"})
    titles = [ax.get_title() for ax in card.axes]
    assert "Wellenform" in titles and "Melodie (yin)" in titles and "Scores" in titles
    assert sum(ax.get_xlabel() == "Zeit (s)" for ax in card.axes) == 3
    cand = M.candidate_analysis(inp, M.SegmentFeatures.from_analysis(inp, label="same"))
    fig = F.compare_candidates(inp, [cand], text={"melody_title": "{n} Kandidat{s}",
                                                  "jump_legend": "Sprung {pitch_jump}"})
    assert "1 Kandidat" in [ax.get_title() for ax in fig.axes]
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]
    assert legend[1].startswith("#1 same\nSprung ") and "cents" in legend[1]
    with pytest.raises(EnsembleError, match="unknown keys"):
        F.report_card(inp, text={"wave_title": "x"})
    with pytest.raises(EnsembleError, match="f0_method"):
        F.report_card(inp, text={"melody_title": "{method}"})
    with pytest.raises(EnsembleError, match="must be a string"):
        F.compare_candidates(inp, [cand], text={"seam": None})


def test_bad_settings_raise_clear_errors():
    audio = np.zeros(SR, np.float32)
    with pytest.raises(EnsembleError, match="'crest' is not one of"):
        M.analyze_clip(audio, f0_method="crest")
    with pytest.raises(EnsembleError, match="dynamics_percentiles"):
        M.MetricsConfig(dynamics_percentiles=(95.0, 5.0))
    with pytest.raises(EnsembleError, match="shape"):
        M.analyze_clip(np.zeros((2, SR), np.float32))
    try:
        import torchcrepe  # noqa: F401
    except ImportError:
        with pytest.raises(EnsembleError, match="torchcrepe"):
            M.analyze_clip(audio, f0_method="crepe", cache=None)


# -- command line ----------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ensemble", "report", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_report_png_and_metrics_json(tmp_path):
    f = notes(PHRASE, 0.3)
    wav = tmp_path / "clip.wav"
    sf.write(wav, np.concatenate([harmonic(f), harmonic(f * 2 ** (2 / 12))]), SR)
    out = tmp_path / "out"
    proc = run_cli(str(wav), "--seam-at", "1.5", "--out", str(out), "--f0", "yin")
    assert proc.returncode == 0, proc.stderr
    assert "pitch jump +" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seam"]["pitch_jump_cents"] == pytest.approx(200.0, abs=15.0)
    assert metrics["scores"]["duration_s"] == pytest.approx(3.0)
    assert metrics["f0_method"] == "yin" and metrics["has_pitch"] is True
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "report.png"]  # no temp files


def test_cli_reports_errors_in_one_line(tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    proc = run_cli(str(bad), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "not a readable audio file" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
