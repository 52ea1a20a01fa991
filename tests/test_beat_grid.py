"""The beat grid's constant-tempo fit and extrapolation (ensemble.beats), on synthetic beats with a
known period and phase: tolerances in milliseconds of the true grid."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble.beats import GridFitConfig, extend_grid, fit_tempo, grid_from_beats, regular_grid, track_beats
from ensemble.errors import EnsembleError

FRAME_RATE = 100.0  # the project's onset grid: beats are tracked on 10 ms frames
PERIOD = 60.0 / 108.0  # 108 BPM: 0.5556 s, not a whole number of frames
PHASE = 0.137
CLIP_S, TOTAL_S = 20.0, 30.0  # an input clip and its 10 s continuation


def _truth(n: int) -> np.ndarray:
    return PHASE + PERIOD * np.arange(n)


def _quantize(t: np.ndarray) -> np.ndarray:
    return np.round(t * FRAME_RATE) / FRAME_RATE


def _tracker_like_beats(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(beats, index of each beat on the true grid): 5 ms jitter, 10 ms frames, one skipped beat,
    one doubled beat, and the last three beats off the grid as the tracker leaves them at a clip's end."""
    n = int((CLIP_S - PHASE) / PERIOD) + 1
    index = np.arange(n, dtype=float)
    t = _truth(n) + rng.normal(0.0, 0.005, n)
    t[-3:] += np.array([0.12, 0.25, -0.18])
    keep = np.ones(n, dtype=bool)
    keep[14] = False  # skipped
    t = np.append(t[keep], t[20] + 0.45 * PERIOD)  # doubled
    index = np.append(index[keep], np.nan)
    order = np.argsort(t)
    return _quantize(t[order]), index[order]


def _old_extend(beats: np.ndarray, duration_s: float) -> np.ndarray:
    """The grid before the fit: the median interval, from the last tracked beat."""
    ibi = float(np.median(np.diff(beats)))
    n_after = int(np.ceil(max(0.0, duration_s - beats[-1]) / ibi))
    return np.concatenate([beats, beats[-1] + ibi * np.arange(1, n_after + 1)])


def _error_ms(grid: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """ms from each grid beat in [lo, hi) to the nearest true beat."""
    t = grid[(grid >= lo) & (grid < hi)]
    truth = _truth(int(hi / PERIOD) + 3)
    return 1000.0 * np.min(np.abs(t[:, None] - truth[None, :]), axis=1)


def _click_envelope(times_s: np.ndarray, n_frames: int) -> np.ndarray:
    """[T] onset envelope of clicks at ``times_s``: each rises over one frame from its start (the
    envelope peak trails the note start, as the tracker's latency shift expects) and decays."""
    env = np.zeros(n_frames)
    decay = np.exp(-np.arange(12) / 3.0)
    for t in times_s:
        i = int(round(t * FRAME_RATE))
        if 0 <= i < n_frames - 1:
            seg = env[i + 1:i + 1 + len(decay)]
            seg += decay[:len(seg)]
    return env


def test_the_fit_finds_period_and_phase_through_skipped_doubled_and_edge_beats(rng):
    beats, index = _tracker_like_beats(rng)
    fit = fit_tempo(beats)
    assert fit.steady
    assert abs(fit.period_s - PERIOD) * 1000 < 0.3  # ms per beat
    on_grid = ~np.isnan(index)
    # one offset of index for the whole clip: the skipped beat leaves a gap, nothing drifts
    offsets = fit.index[on_grid] - index[on_grid]
    assert np.all(offsets == offsets[0])
    assert not fit.inliers[np.isnan(index)].any()  # the doubled beat
    assert not fit.inliers[-3:].any()  # the edge beats
    assert fit.inliers.mean() > 0.85


def test_extrapolation_lands_on_the_true_grid_10_s_past_the_clip(rng):
    beats, _ = _tracker_like_beats(rng)
    grid = extend_grid(beats, TOTAL_S)
    after = _error_ms(grid, CLIP_S, TOTAL_S)
    assert len(after) >= 17 and np.max(after) < 15.0
    # the grid before the fit (median of 10 ms intervals, from the last, off-grid beat) misses
    assert np.max(_error_ms(_old_extend(beats, TOTAL_S), CLIP_S, TOTAL_S)) > 40.0


def test_track_beats_puts_a_steady_click_track_on_one_regular_grid(rng):
    n = int(CLIP_S * FRAME_RATE) + 1
    clicks = _truth(int((CLIP_S - PHASE) / PERIOD) + 1) + rng.normal(0.0, 0.004, 36)
    grid = track_beats(_click_envelope(clicks, n), frame_rate=FRAME_RATE, duration_s=CLIP_S)
    assert grid.source == "tracked" and grid.n_tracked >= 30
    assert grid.times_s[0] <= 0.0 and grid.times_s[-1] >= CLIP_S
    assert np.ptp(np.diff(grid.times_s)) < 1e-9  # the fitted line, not the tracked beats
    assert grid.tempo_bpm == pytest.approx(108.0, rel=0.005)
    assert np.max(_error_ms(grid.times_s, 0.0, CLIP_S)) < 15.0
    full = extend_grid(grid.times_s, TOTAL_S)  # what the performer does for the continuation
    assert np.array_equal(full[:len(grid.times_s)], grid.times_s)
    assert np.max(_error_ms(full, CLIP_S, TOTAL_S)) < 15.0


def _ramp(bpm0: float, bpm1: float, duration_s: float) -> np.ndarray:
    t, out = 0.3, []
    while t < duration_s:
        out.append(t)
        t += 60.0 / (bpm0 + (bpm1 - bpm0) * t / duration_s)
    return np.array(out)


def test_a_tempo_ramp_keeps_its_tracked_beats_and_continues_at_its_final_tempo():
    beats = _quantize(_ramp(96.0, 120.0, CLIP_S))
    assert not fit_tempo(beats).steady
    grid, tempo = grid_from_beats(beats, TOTAL_S)
    inside = grid[(grid >= 0.0) & (grid < CLIP_S)]
    assert np.array_equal(inside, beats[beats < CLIP_S])
    last_ibi = float(np.mean(np.diff(beats[-4:])))
    after = grid[grid > beats[-1]]
    assert len(after) >= 2
    # the next beats follow the line of the last 10 s (edge_seconds), not the clip's average: the
    # step where tracking ends is bounded (a 25 % accelerando: ~1/4 beat, documented in extend_grid)
    assert abs((after[0] - beats[-1]) - last_ibi) < 0.3 * last_ibi
    assert np.allclose(np.diff(after), np.diff(after)[0]) and abs(np.diff(after)[0] - last_ibi) < 0.08 * last_ibi
    whole = float(np.mean(np.diff(beats)))
    assert abs(np.diff(after)[0] - last_ibi) < abs(whole - last_ibi)
    assert 96.0 < tempo < 120.0


@pytest.mark.parametrize("duration_s", [0.0, 3.3, 20.0, 31.7])
def test_extended_grids_cover_increase_and_keep_their_beats(rng, duration_s):
    beats, _ = _tracker_like_beats(rng)
    for b in (beats, beats[5:], _quantize(_ramp(90.0, 110.0, 15.0)) + 1.0, np.array([2.0, 2.4])):
        grid = extend_grid(b, duration_s)
        assert grid[0] <= 0.0 and grid[-1] >= duration_s
        assert np.all(np.diff(grid) > 0)
        assert np.all(np.isin(b, grid))
    fit = fit_tempo(beats)
    line = regular_grid(fit, duration_s)
    assert line[0] <= 0.0 < line[1] and line[-2] < max(duration_s, line[1]) <= line[-1]


@pytest.mark.parametrize("beats, match", [
    (np.array([1.0]), "at least 2"),
    (np.array([1.0, 0.5, 2.0]), "increasing"),
    (np.array([1.0, np.nan]), "finite"),
    (np.zeros((2, 2)), "at least 2"),
])
def test_bad_beats_raise_a_clear_error(beats, match):
    with pytest.raises(EnsembleError, match=match):
        extend_grid(beats, 10.0)
    with pytest.raises(EnsembleError, match=match):
        fit_tempo(beats)


def test_bad_durations_and_settings_raise():
    with pytest.raises(EnsembleError, match="duration_s"):
        extend_grid(np.array([0.5, 1.0, 1.5]), -1.0)
    with pytest.raises(EnsembleError, match="steady_frac"):
        GridFitConfig(steady_frac=0.2, outlier_frac=0.1)
    with pytest.raises(EnsembleError, match="onset envelope"):
        track_beats(np.zeros((0,)), frame_rate=FRAME_RATE, duration_s=1.0)
