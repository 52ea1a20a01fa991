"""Benchmark: continuations of held-out queries (20 s -> 30 s, K = 10) by several systems, measured on
the audio each system wrote.

Queries come from :mod:`ensemble.jobs.heldout` (melodies and GM instruments the project never trains
on, 44.1 kHz stereo 24-bit at -35..-6 dBFS), built into ``--heldout`` (default ``data/heldout``) when
missing. Each system runs the extend CLI once per query, sequentially (one process at a time, so the
benchmark does not fight other jobs for the two cores):

* ``v1``: the previous version, in its own worktree (``--v1-dir``, default ``/tmp/ensemble_v1``;
  ``git -C . worktree add /tmp/ensemble_v1 965042a``) with its own shipped assets;
* ``v2``: this working tree, ``python -m ensemble extend`` exactly as a user runs it;
* ``random``: this tree with ``--ranking random --no-conform`` (K random database segments, rendered
  as stored) and ``random-conformed`` (``--ranking random``): run only when the CLI offers those
  options, else skipped with a note.

Per candidate, from ``DIR/results.json`` and ``DIR/rankNN/`` (16 kHz analysis copies when present:
``mix_16k.wav``, ``stems/*.wav``; anything else is resampled), with the seam ``s`` and crossfade
``x`` from ``perform.json`` (or ``results.json``; else input length - x / 2):

* **fallback**: ``fallback: true`` in results.json;
* **seam pitch jump**, cents: :func:`ensemble.metrics.seam_metrics` on
  ``analyze_clip(leader, f0_method="yin")`` -- the project's one seam function;
* **leader level step**, dB: leader power over ``[s + x/2, s + x/2 + 3)`` minus over
  ``[s - x/2 - 3, s - x/2)`` (the crossfade itself is skipped);
* **key continuity**: Pearson correlation of the leader's mean chroma over the input part (active
  frames of ``[0, s - x/2)``) and over the continuation (active frames after ``s + x/2``);
* **tempo ratio** continuation / input: beats tracked (:func:`ensemble.beats.track_beats`, librosa's
  tracker) separately on the mix's input part and continuation part; the leader-only ratio too;
* **drum grid error**, ms: the first drum onset at or after the seam (``stems/Drums.wav``) against
  the input's grid: the held-out query's *score* beats (``beat_times_s`` in its manifest: the grid
  the input was performed on, which goes on past the seam at the score's tempo) split into eighth
  notes (a 6/8 dotted-quarter beat into 3, a quarter into 2, a half into 4). Also reported against
  grids *tracked* on the output's input part -- on the mix (``drum_grid_error_mix_grid_ms``) and on
  the leader alone (``drum_grid_error_leader_grid_ms``) -- extrapolated past the seam by
  :func:`ensemble.beats.extend_grid` and split in two. Those two are secondary: a tracked grid
  carries the tracker's own errors (it is the same kind of estimate the system makes), e.g. a
  6/8 jig tracked in quarter notes, whose every other "beat" is off the eighth-note grid;
* **trailing silence**, s: time at the end of the leader (and of the mix) whose frames are more than
  45 dB below the stem's median active level.

Before any system is trusted, ``--validate`` (on by default) applies every metric to known good and
bad continuations made from the queries' ``_full.wav`` files (the true continuation vs another
query's continuation in another key, a +-10 dB step, a 1.25x time-stretch, a click track 100 ms off
the grid, 2 s of appended silence) and prints whether each metric separates them.

Every extend runs with ``--seed 0`` (``--extend-seed``). Each candidate's ``perform.json`` is also
checked for one band over the whole output (``one_band: true``, one ``key``, one ``beat_times_s``
grid from 0 to the output's end without a break; :func:`one_band_problems`).

The report prints, for all queries and again for the untouched ones (``q06-q23``: ``q00``-``q05``
were listened to while v2 was developed), the metric table and issue 13's acceptance table with
PASS/FAIL per criterion and system: fallback rate <= 10 %; key continuity median >= 0.8; mix tempo
ratio in 0.97-1.03 for >= 90 % of candidates; leader level step median |dB| <= 2; first drum onset
after the seam <= 40 ms off the input's grid for >= 90 %; every perform.json one band; top-1 median
|seam pitch jump| <= 300 cents and <= 0.5x the median |jump| of all ``random`` candidates (same
queries); no candidate with > 0.5 s trailing silence (leader or mix). Shares count an undefined
metric as a failure.

    python -m benchmarks.continuation [--queries N] [--systems v1,v2,random,random-conformed]
        [--no-validate | --validate-only] [--reuse] [--preliminary v2] [--extend-seed 0]

Prints a table per stage and, last, one JSON line (the summary and the acceptance checks); the full
result (with every candidate's row) is written to ``benchmarks/results/continuation.json`` (also
after each system, marked ``partial``); the extend outputs stay in ``--work`` (default
``data/continuation``), so ``--reuse`` re-measures them without rerunning. A metric that raises on
one candidate is recorded in that row's ``error`` and counts as a failure; it does not end the run.

Cost on 2 shared cores: ~15-25 s per extend and ~1 s per candidate to measure, i.e. ~30 s per query
and system; all 24 queries x 4 systems ~ 45 min, the validation about a minute.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ensemble.audio import SILENCE_DBFS, load_audio
from ensemble.beats import extend_grid, track_beats
from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig, chroma, onset_strength, rms
from ensemble.files import write_json_atomic
from ensemble.metrics import analyze_clip, seam_metrics

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
GRID = FeatureConfig()  # the project's frame grid: 16 kHz, hop 160 (100 frames/s)
SYSTEMS = ("v1", "v2", "random", "random-conformed")
# queries looked at while v2 was developed; the report also shows the untouched rest on its own
DEVELOPMENT_QUERIES = ("q00", "q01", "q02", "q03", "q04", "q05")
UNTOUCHED_LABEL = "q06-q23"
# extra extend options per system (the two random baselines need options the CLI may not have yet)
SYSTEM_OPTIONS = {"v1": [], "v2": [], "random": ["--ranking", "random", "--no-conform"],
                  "random-conformed": ["--ranking", "random"]}


@dataclass(frozen=True)
class Thresholds:
    """Acceptance thresholds (what a candidate or a system must meet).

    Attributes:
        fallback_rate: largest share of fallback candidates per system.
        key_continuity: smallest median chroma correlation per system (and per candidate, for shares).
        tempo_ratio: (low, high) continuation/input tempo ratio of a candidate.
        level_step_db: largest median |leader level step| per system (and per candidate).
        drum_ms: largest drum grid error of a candidate.
        trailing_silence_s: a candidate with more trailing silence than this is counted.
    """

    fallback_rate: float = 0.10
    key_continuity: float = 0.8
    tempo_ratio: tuple[float, float] = (0.97, 1.03)
    level_step_db: float = 2.0
    drum_ms: float = 40.0
    trailing_silence_s: float = 0.5


@dataclass(frozen=True)
class MetricSettings:
    """How the metrics look at the audio (all on 16 kHz mono).

    Attributes:
        level_window_s: s of leader on each side of the crossfade whose power is compared.
        active_range_db: chroma frames within this of the loudest frame (and above
            :data:`~ensemble.audio.SILENCE_DBFS`) count as active.
        silence_below_median_db: trailing frames this far below the median active level are silent.
        grid_subdivision: the beat grid is split into this many parts before the drum onset is
            compared with it. 2 (eighths): a groove may legitimately enter on an off-beat eighth, and
            a tracker often locks half a beat off on a melody; 2 absorbs both and still leaves up to
            a quarter beat (125 ms at 120 BPM, >= 83 ms up to 180 BPM) for an error to show -- so a
            100 ms slip or a drum loop on its own clock still fails the 40 ms threshold. Sixteenths
            (4) would cap every error at 62 ms / 2 at 120 BPM = 31 ms, below the threshold: the
            metric could not fail.
        onset_hop: samples between drum-onset frames (5 ms), with a 32 ms window (``onset_n_fft``):
            a click lands within one hop of its true time (checked by ``--validate``).
        min_drum_dbfs: a drum stem whose peak after the seam is below this has no onset.
    """

    level_window_s: float = 3.0
    active_range_db: float = 40.0
    silence_below_median_db: float = 45.0
    grid_subdivision: int = 2  # of a tracked grid (the score grid is split into eighths by its meter)
    onset_hop: int = 80
    onset_n_fft: int = 512
    min_drum_dbfs: float = -50.0


SETTINGS = MetricSettings()
THRESHOLDS = Thresholds()


# --------------------------------------------------------------------------------------------------
# metrics: each takes 16 kHz mono float audio [n_samples] and times in seconds


def _sha(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()


_MEMO: dict[tuple, object] = {}  # results for identical audio (every candidate shares the input part)


def _memo(name: str, x: np.ndarray, fn, *extra):
    key = (name, _sha(x), *extra)
    if key not in _MEMO:
        _MEMO[key] = fn()
    return _MEMO[key]


def _frames_db(x: np.ndarray) -> np.ndarray:
    """[T] frame RMS in dBFS on the project grid (floor -120)."""
    return 20.0 * np.log10(np.maximum(rms(x, config=GRID), 1e-6)).astype(np.float64)


def seam_pitch_jump(leader: np.ndarray, seam_s: float, crossfade_s: float) -> float | None:
    """Cents from the leader's pitch just before the seam to just after it (None: a side unvoiced)."""
    analysis = analyze_clip(leader, f0_method="yin", cache=None)
    return seam_metrics(analysis, seam_s, crossfade_s=crossfade_s).pitch_jump_cents


def level_step_db(leader: np.ndarray, seam_s: float, crossfade_s: float,
                  window_s: float = SETTINGS.level_window_s) -> float | None:
    """dB: leader power over ``window_s`` after the crossfade minus over ``window_s`` before it.

    Power floors at -100 dBFS, so a silent side gives a large finite step rather than infinity.
    """
    a = int(round((seam_s - crossfade_s / 2) * SR))
    b = int(round((seam_s + crossfade_s / 2) * SR))
    w = int(round(window_s * SR))
    before, after = leader[max(0, a - w):a], leader[b:b + w]
    if len(before) < SR // 2 or len(after) < SR // 2:
        return None

    def power_db(x):
        return 10.0 * math.log10(max(float(np.mean(np.square(x, dtype=np.float64))), 1e-10))
    return power_db(after) - power_db(before)


def _mean_chroma(x: np.ndarray) -> np.ndarray | None:
    """[12] mean chroma over the active frames of ``x`` (None with fewer than 10 active frames)."""
    c = chroma(x, config=GRID)  # [12, T]
    db = _frames_db(x)
    active = (db >= db.max() - SETTINGS.active_range_db) & (db > SILENCE_DBFS)
    if np.count_nonzero(active) < 10:
        return None
    return c[:, active].mean(axis=1)


def key_continuity(leader: np.ndarray, seam_s: float, crossfade_s: float) -> float | None:
    """Pearson correlation of the leader's mean chroma before the crossfade and after it (-1..1)."""
    a = int(round((seam_s - crossfade_s / 2) * SR))
    b = int(round((seam_s + crossfade_s / 2) * SR))
    before = _memo("chroma", leader[:a], lambda: _mean_chroma(leader[:a]))
    after = _mean_chroma(leader[b:])
    if before is None or after is None or np.std(before) < 1e-9 or np.std(after) < 1e-9:
        return None
    return float(np.corrcoef(before, after)[0, 1])


def _grid(x: np.ndarray):
    """The project's beat grid of ``x`` (librosa's tracker, :func:`ensemble.beats.track_beats`)."""
    return _memo("grid", x, lambda: track_beats(onset_strength(x, config=GRID), frame_rate=GRID.frame_rate,
                                                duration_s=len(x) / SR))


def tempo_bpm(x: np.ndarray) -> float | None:
    """Tracked tempo of a clip in BPM (60 / median inter-beat interval); None when tracking fails."""
    if len(x) < 2 * SR:
        return None
    g = _grid(x)
    return float(g.tempo_bpm) if g.source == "tracked" else None


def tempo_ratio(audio: np.ndarray, seam_s: float, crossfade_s: float) -> float | None:
    """Continuation tempo / input tempo, each part beat-tracked on its own."""
    a = int(round((seam_s - crossfade_s / 2) * SR))
    b = int(round((seam_s + crossfade_s / 2) * SR))
    t_in, t_cont = tempo_bpm(audio[:a]), tempo_bpm(audio[b:])
    return None if t_in is None or t_cont is None else t_cont / t_in


def input_grid(leader: np.ndarray, seam_s: float, crossfade_s: float, duration_s: float) -> np.ndarray | None:
    """[G] the input part's beat grid, extrapolated to ``duration_s`` and split by ``grid_subdivision``.

    Tracked on ``[0, s - x/2)`` only; past it the beats continue at the median inter-beat interval
    (:func:`ensemble.beats.extend_grid`, inside ``track_beats``). None when tracking fails.
    """
    a = int(round((seam_s - crossfade_s / 2) * SR))
    g = _grid(leader[:a])
    if g.source != "tracked":
        return None
    return _split(extend_grid(g.times_s, duration_s), SETTINGS.grid_subdivision)


def _split(beats: np.ndarray, k: int) -> np.ndarray:
    """[(B - 1) * k + 1] the beats with each interval split into ``k`` equal parts."""
    frac = np.arange(k) / k
    return np.append((beats[:-1, None] + np.diff(beats)[:, None] * frac[None, :]).reshape(-1), beats[-1])


def score_grid(query: dict) -> np.ndarray | None:
    """[G] the held-out query's score beats (its manifest's ``beat_times_s``, covering input and
    continuation) split into eighth notes: ``round(2 * beat_ql)`` parts per beat (None: no beats)."""
    beats = np.asarray(query.get("beat_times_s") or [], np.float64)
    if beats.size < 2:
        return None
    return _split(beats, max(1, int(round(2.0 * float(query.get("beat_ql", 1.0))))))


def drum_grid_error_ms(drums: np.ndarray, seam_s: float, grid_s: np.ndarray | None) -> float | None:
    """ms from the first drum onset at or after the seam to the nearest point of ``grid_s``.

    None when there is no grid, the drums are silent after the seam, or no onset is found.
    """
    if grid_s is None:
        return None
    start = max(0, int(round((seam_s - 0.2) * SR)))  # a little context so the onset envelope settles
    tail = np.asarray(drums[start:], dtype=np.float32)
    after = tail[int(round(seam_s * SR)) - start:]
    if after.size == 0 or 20 * math.log10(float(np.max(np.abs(after))) + 1e-12) < SETTINGS.min_drum_dbfs:
        return None
    import librosa

    env = librosa.onset.onset_strength(y=tail, sr=SR, hop_length=SETTINGS.onset_hop, n_fft=SETTINGS.onset_n_fft)
    onsets = librosa.onset.onset_detect(onset_envelope=env, sr=SR, hop_length=SETTINGS.onset_hop, units="time")
    onsets = onsets + start / SR
    onsets = onsets[onsets >= seam_s - 1e-9]
    if onsets.size == 0:
        return None
    return float(1000.0 * np.min(np.abs(grid_s - onsets[0])))


def trailing_silence_s(x: np.ndarray) -> float:
    """Seconds at the end of ``x`` whose frames are > 45 dB below its median active level."""
    db = _frames_db(x)
    active = db > SILENCE_DBFS
    if not active.any():
        return len(x) / SR
    floor = float(np.median(db[active])) - SETTINGS.silence_below_median_db
    loud = np.flatnonzero(db >= floor)
    return float((len(db) - 1 - loud[-1]) / GRID.frame_rate)


def measure(leader: np.ndarray, mix: np.ndarray, drums: np.ndarray | None, seam_s: float,
            crossfade_s: float, score: np.ndarray | None = None) -> dict:
    """Every metric of one joined clip (input + continuation); None where a metric is undefined.

    ``score``: the query's eighth-note score grid (:func:`score_grid`), the drum onset's main
    reference. The tracked references: the grid tracked on the *mix's* input part. On a bare melody
    the tracker's phase wanders by tens of ms (soft attacks, rubato-free but sparse onsets): in the
    validation a click track exactly on the score's beats measured a median 25 ms and up to 110 ms
    from the melody-tracked grid, so a 40 ms threshold on it would fail good continuations. With the
    input part's drums in the mix the grid sits on sharp onsets; the leader-only grid is kept as a
    second column (``drum_grid_error_leader_grid_ms``).
    """
    duration = len(leader) / SR
    grid = input_grid(mix, seam_s, crossfade_s, duration)
    leader_grid = input_grid(leader, seam_s, crossfade_s, duration)
    return {
        "seam_pitch_jump_cents": seam_pitch_jump(leader, seam_s, crossfade_s),
        "level_step_db": level_step_db(leader, seam_s, crossfade_s),
        "key_continuity": key_continuity(leader, seam_s, crossfade_s),
        "tempo_ratio": tempo_ratio(mix, seam_s, crossfade_s),
        "tempo_ratio_leader": tempo_ratio(leader, seam_s, crossfade_s),
        "drum_grid_error_ms": None if drums is None else drum_grid_error_ms(drums, seam_s, score),
        "drum_grid_error_mix_grid_ms": None if drums is None else drum_grid_error_ms(drums, seam_s, grid),
        "drum_grid_error_leader_grid_ms": None if drums is None else drum_grid_error_ms(drums, seam_s, leader_grid),
        "trailing_silence_leader_s": trailing_silence_s(leader),
        "trailing_silence_mix_s": trailing_silence_s(mix),
    }


# --------------------------------------------------------------------------------------------------
# validation: known good vs known bad continuations from the held-out _full files


# The validation's drum track sits this far below the melody (RMS): v1's Drums stem measured 10.7 dB
# under its Leader stem, so the mix's beat tracker hears the melody first, as it does in the systems.
CLICK_BELOW_MELODY_DB = 10.0


def _click_track(times_s: np.ndarray, n: int) -> np.ndarray:
    """[n] a short 1.5 kHz + noise click at each time (what a drum onset looks like to a detector)."""
    m = int(0.03 * SR)
    t = np.arange(m) / SR
    click = (0.6 * np.sin(2 * np.pi * 1500 * t) + 0.4 * np.random.default_rng(0).standard_normal(m))
    click *= np.exp(-t / 0.006)
    y = np.zeros(n, np.float32)
    for s in np.round(np.asarray(times_s) * SR).astype(int):
        if 0 <= s < n:
            y[s:s + m] += click[: n - s]
    return y


def _with_clicks(melody: np.ndarray, clicks: np.ndarray) -> np.ndarray:
    """The melody at -20 dBFS RMS plus the clicks :data:`CLICK_BELOW_MELODY_DB` under it."""
    return _norm(melody) + _norm(clicks, -20.0 - CLICK_BELOW_MELODY_DB)


def _norm(x: np.ndarray, dbfs: float = -20.0) -> np.ndarray:
    r = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return (x * (10 ** (dbfs / 20) / r)).astype(np.float32) if r > 0 else x


def _other_key(q: dict, queries: list[dict]) -> dict:
    """The query whose key is farthest from ``q``'s on the circle of fifths (ties: the next one)."""
    from ensemble.music import PC_NAMES

    def tonic(k: str) -> int:
        return PC_NAMES.index(k.split()[0])
    t = tonic(q["key"])
    best, dist = None, -1
    for o in queries:
        if o is q:
            continue
        steps = ((tonic(o["key"]) - t) * 7) % 12  # fifths between the tonics
        d = min(steps, 12 - steps)
        if d > dist:
            best, dist = o, d
    return best


VALIDATION_CASES = (
    # metric, bad case, pass rule (the acceptance threshold a good continuation should meet)
    ("key_continuity", "another query's continuation in another key", "r >= 0.8"),
    ("seam_pitch_jump_cents", "another query's continuation in another key", "AUC only"),
    ("level_step_db", "continuation +-10 dB", "|dB| <= 2"),
    ("tempo_ratio", "continuation time-stretched 1.25x (melody + click track)", "0.97..1.03"),
    ("tempo_ratio_leader", "continuation time-stretched 1.25x (melody only)", "0.97..1.03"),
    ("drum_grid_error_ms", "click track 100 ms late after the seam (score grid)", "<= 40 ms"),
    ("drum_grid_error_mix_grid_ms", "click track 100 ms late (grid tracked on melody + clicks)", "<= 40 ms"),
    ("drum_grid_error_leader_grid_ms", "click track 100 ms late (grid from the melody alone)", "<= 40 ms"),
    ("trailing_silence_leader_s", "2 s of silence appended", "<= 0.5 s"),
)


def _passes(metric: str, value: float | None) -> bool | None:
    if value is None:
        return False
    th = THRESHOLDS
    if metric == "key_continuity":
        return value >= th.key_continuity
    if metric == "level_step_db":
        return abs(value) <= th.level_step_db
    if metric.startswith("tempo_ratio"):
        return th.tempo_ratio[0] <= value <= th.tempo_ratio[1]
    if metric.startswith("drum_grid_error"):
        return value <= th.drum_ms
    if metric.startswith("trailing_silence"):
        return value <= th.trailing_silence_s
    return None  # no acceptance threshold (seam pitch jump)


def _badness(metric: str, value: float | None) -> float:
    """A number that grows as the continuation gets worse (for the AUC)."""
    if value is None:
        return math.inf
    if metric == "key_continuity":
        return -value
    if metric.startswith("tempo_ratio"):
        return abs(math.log(value))
    return abs(value)


def _auc(good: list[float], bad: list[float]) -> float:
    """P(a bad case is worse than a good one), ties counting half."""
    wins = sum((b > g) + 0.5 * (b == g) for g in good for b in bad)
    return wins / (len(good) * len(bad)) if good and bad else float("nan")


def validate(heldout, queries: list[dict]) -> dict:
    """Apply every metric to a known good and a known bad continuation of each query."""
    import librosa

    rows = {m: {"good": [], "bad": []} for m, _, _ in VALIDATION_CASES}
    fulls = {q["id"]: load_audio(heldout.path(q, "full"), sample_rate=SR).audio for q in queries}
    everyone = heldout.queries
    for i, q in enumerate(queries):
        full = fulls[q["id"]]
        seam = float(q["input_seconds"])
        s = int(round(seam * SR))
        n = len(full)
        clicks = _click_track(np.asarray(q["beat_times_s"]), n)
        good_mix = _with_clicks(full, clicks)
        good = measure(full, good_mix, clicks, seam, 0.0, score_grid(q))
        # another query, in the most distant key, as the continuation
        other = _other_key(q, everyone)
        o_full = fulls.get(other["id"])
        if o_full is None:
            o_full = load_audio(heldout.path(other, "full"), sample_rate=SR).audio
        swapped = np.concatenate([full[:s], o_full[s:n]])
        sign = 1.0 if i % 2 == 0 else -1.0
        stepped = np.concatenate([full[:s], full[s:] * 10 ** (sign * 10.0 / 20)])
        stretched = np.concatenate([full[:s], librosa.effects.time_stretch(full[s:], rate=1.25)])
        stretched_mix = np.concatenate([good_mix[:s], librosa.effects.time_stretch(good_mix[s:], rate=1.25)])
        late = np.asarray(q["beat_times_s"])
        late = np.where(late >= seam - 0.05, late + 0.100, late)  # every click from the seam on, 100 ms late
        late_clicks = _click_track(late, n)
        silent_end = np.concatenate([full, np.zeros(2 * SR, np.float32)])
        late_mix = _with_clicks(full, late_clicks)
        bad = {
            "key_continuity": key_continuity(swapped, seam, 0.0),
            "seam_pitch_jump_cents": seam_pitch_jump(swapped, seam, 0.0),
            "level_step_db": level_step_db(stepped, seam, 0.0),
            "tempo_ratio": tempo_ratio(stretched_mix, seam, 0.0),
            "tempo_ratio_leader": tempo_ratio(stretched, seam, 0.0),
            "drum_grid_error_ms": drum_grid_error_ms(late_clicks, seam, score_grid(q)),
            "drum_grid_error_mix_grid_ms": drum_grid_error_ms(late_clicks, seam,
                                                              input_grid(late_mix, seam, 0.0, n / SR)),
            "drum_grid_error_leader_grid_ms": drum_grid_error_ms(late_clicks, seam,
                                                                 input_grid(full, seam, 0.0, n / SR)),
            "trailing_silence_leader_s": trailing_silence_s(silent_end),
        }
        for m, _, _ in VALIDATION_CASES:
            rows[m]["good"].append(good[m])
            rows[m]["bad"].append(bad[m])
    out = {}
    for m, bad_case, rule in VALIDATION_CASES:
        g, b = rows[m]["good"], rows[m]["bad"]
        gp = [_passes(m, v) for v in g]
        bp = [_passes(m, v) for v in b]
        auc = _auc([_badness(m, v) for v in g], [_badness(m, v) for v in b])
        good_pass = None if gp[0] is None else sum(gp) / len(gp)
        bad_fail = None if bp[0] is None else sum(not x for x in bp) / len(bp)
        # "yes": the bad cases rank worse nearly always (AUC >= 0.9) and the acceptance threshold
        # passes >= 75 % of the good and fails >= 75 % of the bad; "weak": AUC 0.75-0.9.
        clear = good_pass is None or (good_pass >= 0.75 and bad_fail >= 0.75)
        separates = "yes" if auc >= 0.9 and clear else ("weak" if auc >= 0.75 and clear else "no")
        out[m] = {"bad_case": bad_case, "rule": rule, "good_median": _median(g, m), "bad_median": _median(b, m),
                  "good_pass": good_pass, "bad_fail": bad_fail, "auc": round(auc, 3), "separates": separates,
                  "good": [_round(v) for v in g], "bad": [_round(v) for v in b]}
    return out


def _median(values: list[float | None], metric: str = "") -> float | None:
    v = [abs(x) if metric in ("seam_pitch_jump_cents", "level_step_db") else x for x in values if x is not None]
    return _round(statistics.median(v)) if v else None


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def print_validation(val: dict) -> None:
    print("\nVALIDATION: each metric on the true continuation (good) vs a broken one (bad), per query")
    print(f"{'metric':<31} {'bad case':<55} {'rule':<11} {'good med':>9} {'bad med':>9} "
          f"{'good pass':>9} {'bad fail':>9} {'AUC':>6}  separates")
    for m, r in val.items():
        def pct(x):
            return "-" if x is None else f"{100 * x:.0f}%"

        def num(x):
            return "-" if x is None else f"{x:.3g}"
        print(f"{m:<31} {r['bad_case']:<55} {r['rule']:<11} {num(r['good_median']):>9} {num(r['bad_median']):>9} "
              f"{pct(r['good_pass']):>9} {pct(r['bad_fail']):>9} {r['auc']:>6.2f}  "
              f"{r['separates']}")
    print("(medians of |cents| and |dB| for the seam pitch jump and the level step; AUC = P(bad case "
          "measures worse than a good one); separates: yes = AUC >= 0.9 and the threshold passes >= 75 % of "
          "good and fails >= 75 % of bad, weak = AUC 0.75-0.9)")


# --------------------------------------------------------------------------------------------------
# systems


def _env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # each system imports the ``ensemble`` of its own folder (its cwd)
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    return env


def tree_state(cwd: Path) -> dict:
    """The commit and the modified tracked files of the tree at ``cwd`` (read-only git, no index lock).

    Recorded before and after the runs: a commit landing mid-run shows up as a difference.
    """
    def git(*a):
        done = subprocess.run(["git", "--no-optional-locks", *a], cwd=cwd, capture_output=True, text=True,
                              timeout=60)
        return done.stdout.strip() if done.returncode == 0 else None
    return {"head": git("rev-parse", "--short", "HEAD"),
            "modified": (git("status", "--porcelain", "--untracked-files=no") or "").splitlines()}


def cli_options(cwd: Path) -> str:
    """``python -m ensemble extend --help`` of the tree at ``cwd`` (to see which options exist)."""
    done = subprocess.run([sys.executable, "-m", "ensemble", "extend", "--help"], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)
    return done.stdout if done.returncode == 0 else ""


def run_extend(cwd: Path, query: Path, out: Path, options: list[str], *, k: int, seconds: float,
               timeout_s: float, seed: int = 0) -> tuple[float, str | None]:
    """Run one extend (``--seed seed``, the same for every system); returns (wall seconds, error or None)."""
    cmd = [sys.executable, "-m", "ensemble", "extend", str(query), "--seconds", f"{seconds:g}",
           "--top-k", str(k), "--seed", str(seed), "--out", str(out), "--quiet", *options]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - t0, f"timed out after {timeout_s:g} s"
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        return wall, f"exit {done.returncode}: {(done.stderr or done.stdout)[-800:].strip()}"
    return wall, None


def _find(d: dict, key: str):
    """The first value of ``key`` anywhere in nested dicts (top level first)."""
    if not isinstance(d, dict):
        return None
    if key in d:
        return d[key]
    for v in d.values():
        if isinstance(v, dict):
            found = _find(v, key)
            if found is not None:
                return found
    return None


def _seam(perform: dict, cand: dict, results: dict) -> tuple[float, float]:
    """(seam seconds, crossfade seconds) from perform.json, else results.json, else the input length."""
    xf = perform.get("crossfade_seconds", cand.get("crossfade_seconds", results.get("crossfade_seconds")))
    xf = 0.1 if xf is None else float(xf)
    for source in (perform, cand, results):
        s = source.get("seam_seconds")
        if s is not None:
            return float(s), xf
    s = _find(perform, "seam_seconds") or _find(results, "seam_seconds")
    if s is not None:
        return float(s), xf
    return float(results["input_seconds"]) - xf / 2, xf


def _load16(path: Path) -> np.ndarray:
    return load_audio(path, sample_rate=SR).audio


def _nested(d, key: str):
    """Every value of ``key`` anywhere in nested dicts and lists (with its path)."""
    if isinstance(d, dict):
        for k, v in d.items():
            if k == key:
                yield k, v
            for path, found in _nested(v, key):
                yield f"{k}.{path}", found
    elif isinstance(d, list):
        for i, v in enumerate(d):
            for path, found in _nested(v, key):
                yield f"[{i}].{path}", found


def one_band_problems(perform: dict, output_s: float) -> list[str]:
    """What keeps ``perform.json`` from describing one band over the whole output ([] = none).

    Required: ``one_band: true``; one ``key`` (a top-level key with a name; any key stored deeper,
    e.g. the input part's, names the same key); one beat grid: top-level ``beat_times_s``, strictly
    increasing, its first beat within one median inter-beat interval (+ 50 ms) of 0 and its last
    within one interval (+ 50 ms) of the output's end, no gap over 1.5 intervals (no break at the
    seam), and any grid stored deeper equal to it.
    """
    problems = []
    if perform.get("one_band") is not True:
        problems.append(f"one_band={perform.get('one_band')!r}")
    key = perform.get("key")
    name = key.get("name") if isinstance(key, dict) else key
    if not name:
        problems.append("no top-level key")
    else:
        other = {str(v.get("name") if isinstance(v, dict) else v) for path, v in _nested(perform, "key")
                 if path != "key" and v is not None}
        other.discard(str(name))
        if other:
            problems.append(f"other keys {sorted(other)}")
    beats = perform.get("beat_times_s")
    if not isinstance(beats, list) or len(beats) < 3:
        problems.append("no top-level beat_times_s")
    else:
        b = np.asarray(beats, dtype=np.float64)
        ibi = np.diff(b)
        med = float(np.median(ibi))
        if np.any(ibi <= 0):
            problems.append("beats not increasing")
        if b[0] > med + 0.05:
            problems.append(f"grid starts at {b[0]:.2f} s")
        if b[-1] < output_s - med - 0.05:
            problems.append(f"grid ends at {b[-1]:.2f} s of {output_s:.2f}")
        if ibi.max() > 1.5 * med:
            problems.append(f"gap of {ibi.max():.2f} s at {b[int(np.argmax(ibi))]:.2f} s")
        for path, v in _nested(perform, "beat_times_s"):
            if path != "beat_times_s" and v != beats:
                problems.append(f"another grid at {path}")
    return problems


def analyse_output(out: Path, query: dict | None = None) -> list[dict]:
    """One row per candidate of an extend output folder (see the module docstring).

    A metric that raises on one candidate leaves that candidate's metrics None (its ``error`` says
    why) instead of ending the run.
    """
    results = json.loads((out / "results.json").read_text())
    rows = []
    for cand in results["candidates"]:
        rank = int(cand["rank"])
        d = out / f"rank{rank:02d}"
        perform = json.loads((d / "perform.json").read_text()) if (d / "perform.json").is_file() else {}
        seam, xf = _seam(perform, cand, results)
        leader = _load16(d / "stems" / "Leader.wav")
        mix = _load16(d / "mix_16k.wav" if (d / "mix_16k.wav").is_file() else d / "mix.wav")
        drums = _load16(d / "stems" / "Drums.wav") if (d / "stems" / "Drums.wav").is_file() else None
        n = min(len(leader), len(mix))
        output_s = float(perform.get("seconds") or n / SR)
        problems = one_band_problems(perform, output_s)
        row = {"rank": rank, "fallback": bool(cand.get("fallback", False)), "seam_s": round(seam, 4),
               "crossfade_s": xf, "output_s": round(n / SR, 3), "one_band_ok": not problems,
               "one_band_problems": problems, "transpose": cand.get("transpose"), "stretch": cand.get("stretch")}
        try:
            row.update(measure(leader[:n], mix[:n], drums, seam, xf, None if query is None else score_grid(query)))
        except Exception as exc:  # noqa: BLE001 -- one bad candidate must not end a 40-minute run
            row.update({m: None for m in METRICS})  # None counts as a failure in every share and count
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append({k: _round(v) if isinstance(v, float) else v for k, v in row.items()})
    return rows


def _stats(values: list[float | None]) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"median": None, "p25": None, "p75": None, "n": 0}
    p25, med, p75 = np.percentile(v, [25, 50, 75])
    return {"median": _round(med), "p25": _round(p25), "p75": _round(p75), "n": int(v.size)}


METRICS = ("seam_pitch_jump_cents", "level_step_db", "key_continuity", "tempo_ratio", "tempo_ratio_leader",
           "drum_grid_error_ms", "drum_grid_error_mix_grid_ms", "drum_grid_error_leader_grid_ms",
           "trailing_silence_leader_s", "trailing_silence_mix_s")


def _over(value: float | None, limit: float) -> bool:
    """True when ``value`` exceeds ``limit`` or is undefined (a metric error counts against)."""
    return value is None or value > limit


def summarize(rows: list[dict], walls: list[float], inproc: list[float], random_median_abs_cents: float | None,
              n_queries: int, errors: dict) -> dict:
    """Medians, IQRs and acceptance shares of one system's candidates."""
    th = THRESHOLDS
    n = len(rows)
    s = {"queries_ok": n_queries - len(errors), "queries_failed": errors, "candidates": n}
    if n == 0:
        return s
    s["metrics"] = {m: _stats([r[m] for r in rows]) for m in METRICS}
    s["metrics"]["abs_seam_pitch_jump_cents"] = _stats(
        [None if r["seam_pitch_jump_cents"] is None else abs(r["seam_pitch_jump_cents"]) for r in rows])
    s["metrics"]["abs_level_step_db"] = _stats(
        [None if r["level_step_db"] is None else abs(r["level_step_db"]) for r in rows])
    fallback = sum(r["fallback"] for r in rows) / n
    top1 = [abs(r["seam_pitch_jump_cents"]) for r in rows if r["rank"] == 1 and r["seam_pitch_jump_cents"] is not None]
    top1_med = _round(statistics.median(top1)) if top1 else None
    key_med = s["metrics"]["key_continuity"]["median"]
    level_med = s["metrics"]["abs_level_step_db"]["median"]

    def share(pred):
        return _round(sum(1 for r in rows if pred(r)) / n, 3)
    s["acceptance"] = {
        "fallback_rate": _round(fallback, 3), "fallback_ok": fallback <= th.fallback_rate,
        "key_continuity_median": key_med, "key_continuity_ok": key_med is not None and key_med >= th.key_continuity,
        "key_continuity_share_ge_0_8": share(lambda r: r["key_continuity"] is not None
                                             and r["key_continuity"] >= th.key_continuity),
        "tempo_ratio_share_in_range": share(lambda r: r["tempo_ratio"] is not None
                                            and th.tempo_ratio[0] <= r["tempo_ratio"] <= th.tempo_ratio[1]),
        "tempo_ratio_leader_share_in_range": share(
            lambda r: r["tempo_ratio_leader"] is not None
            and th.tempo_ratio[0] <= r["tempo_ratio_leader"] <= th.tempo_ratio[1]),
        "tempo_ratio_undefined": sum(1 for r in rows if r["tempo_ratio"] is None),
        "level_step_median_abs_db": level_med, "level_step_ok": level_med is not None and level_med <= th.level_step_db,
        "level_step_share_le_2db": share(lambda r: r["level_step_db"] is not None
                                         and abs(r["level_step_db"]) <= th.level_step_db),
        "drum_within_40ms_share": share(lambda r: r["drum_grid_error_ms"] is not None
                                        and r["drum_grid_error_ms"] <= th.drum_ms),
        "drum_undefined": sum(1 for r in rows if r["drum_grid_error_ms"] is None),
        "drum_within_40ms_share_mix_grid": share(lambda r: r["drum_grid_error_mix_grid_ms"] is not None
                                                 and r["drum_grid_error_mix_grid_ms"] <= th.drum_ms),
        "drum_within_40ms_share_leader_grid": share(lambda r: r["drum_grid_error_leader_grid_ms"] is not None
                                                    and r["drum_grid_error_leader_grid_ms"] <= th.drum_ms),
        "top1_seam_pitch_jump_median_abs_cents": top1_med,
        "top1_vs_random_ratio": (_round(top1_med / random_median_abs_cents, 3)
                                 if top1_med is not None and random_median_abs_cents else None),
        "trailing_silence_leader_over_0_5s": sum(1 for r in rows
                                                 if _over(r["trailing_silence_leader_s"], th.trailing_silence_s)),
        "trailing_silence_mix_over_0_5s": sum(1 for r in rows
                                              if _over(r["trailing_silence_mix_s"], th.trailing_silence_s)),
        "one_band_share": share(lambda r: r.get("one_band_ok", False)),
        "candidates_with_metric_error": sum(1 for r in rows if r.get("error")),
    }
    s["extend_wall_s_median"] = _round(statistics.median(walls), 2) if walls else None
    s["extend_inprocess_s_median"] = _round(statistics.median(inproc), 2) if inproc else None
    return s


# Issue 13's acceptance criteria: (label, the summary's acceptance values -> (cell text, pass))
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def _num(x: float | None, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


def _top1_check(a: dict):
    med, ratio = a["top1_seam_pitch_jump_median_abs_cents"], a["top1_vs_random_ratio"]
    ok = med is not None and med <= 300 and ratio is not None and ratio <= 0.5
    return f"{_num(med, '.0f')} c, {_num(ratio, '.2f')}x", ok


ISSUE13 = (
    ("fallback rate <= 10 %", "fallback",
     lambda a: (_pct(a["fallback_rate"]), a["fallback_rate"] <= THRESHOLDS.fallback_rate)),
    ("key continuity median >= 0.8", "key",
     lambda a: (_num(a["key_continuity_median"]), bool(a["key_continuity_ok"]))),
    ("tempo ratio (mix) 0.97-1.03 for >= 90 %", "tempo",
     lambda a: (_pct(a["tempo_ratio_share_in_range"]), a["tempo_ratio_share_in_range"] >= 0.9)),
    ("leader level step median |dB| <= 2", "level",
     lambda a: (_num(a["level_step_median_abs_db"], ".2f"), bool(a["level_step_ok"]))),
    ("drum onset <= 40 ms off grid for >= 90 %", "drums",
     lambda a: (_pct(a["drum_within_40ms_share"]), a["drum_within_40ms_share"] >= 0.9)),
    ("(secondary) drum onset, grid tracked on mix", "drums_mix",
     lambda a: (_pct(a["drum_within_40ms_share_mix_grid"]), a["drum_within_40ms_share_mix_grid"] >= 0.9)),
    ("perform.json: one key + one grid, all", "one_band",
     lambda a: (_pct(a["one_band_share"]), a["one_band_share"] >= 1.0)),
    ("top-1 |pitch jump| <= 300 c, <= 0.5x random", "top1", _top1_check),
    ("no candidate > 0.5 s trailing silence", "silence",
     lambda a: (f"L{a['trailing_silence_leader_over_0_5s']} M{a['trailing_silence_mix_over_0_5s']}",
                a["trailing_silence_leader_over_0_5s"] == 0 and a["trailing_silence_mix_over_0_5s"] == 0)),
)


def issue13(summary: dict) -> dict:
    """{system: {criterion id: {"label", "value", "pass"}}} for every system with candidates."""
    out = {}
    for name, s in summary.items():
        if not s.get("candidates"):
            continue
        out[name] = {}
        for label, cid, fn in ISSUE13:
            text, ok = fn(s["acceptance"])
            out[name][cid] = {"label": label, "value": text, "pass": bool(ok)}
    return out


def print_issue13(checks: dict, title: str) -> None:
    names = sorted(checks, key=lambda n: (n != "v2", n != "v1", n != "random", n))
    if not names:
        return
    w = 24
    print(f"\nACCEPTANCE (issue 13), {title}")
    print(f"{'criterion':<44}" + "".join(f"{n:>{w}}" for n in names))
    for label, cid, _ in ISSUE13:
        cells = [f"{checks[n][cid]['value']} {'PASS' if checks[n][cid]['pass'] else 'FAIL'}" for n in names]
        print(f"{label:<44}" + "".join(f"{c:>{w}}" for c in cells))
    for n in names:
        ok = sum(c["pass"] for c in checks[n].values())
        print(f"{n}: {ok}/{len(checks[n])} PASS")
    print("(shares over all candidates, an undefined metric counting as a failure; top-1 ratio: the "
          "system's top-1 median |jump| over the median |jump| of all `random` candidates of the same "
          "queries; trailing silence: L = leader stem, M = mix, candidates over 0.5 s)")


def print_systems(summary: dict) -> None:
    names = [n for n, s in summary.items() if s.get("candidates")]
    if not names:
        print("no system produced candidates")
        return
    print("\nSYSTEMS: median [p25, p75] over all candidates (K per query)")
    w = 26
    print(f"{'metric':<30}" + "".join(f"{n:>{w}}" for n in names))
    for m in ("abs_seam_pitch_jump_cents", *METRICS[1:], "abs_level_step_db"):
        cells = []
        for n in names:
            st = summary[n]["metrics"][m]
            cells.append("-" if st["median"] is None else
                         f"{st['median']:.3g} [{st['p25']:.3g}, {st['p75']:.3g}]")
        print(f"{m:<30}" + "".join(f"{c:>{w}}" for c in cells))
    print(f"\n{'acceptance':<30}" + "".join(f"{n:>{w}}" for n in names))
    for key in summary[names[0]]["acceptance"]:
        cells = []
        for n in names:
            v = summary[n]["acceptance"].get(key)
            cells.append("-" if v is None else (("yes" if v else "NO") if isinstance(v, bool) else f"{v:g}"))
        print(f"{key:<30}" + "".join(f"{c:>{w}}" for c in cells))
    for label, key in (("extend wall s / query (median)", "extend_wall_s_median"),
                       ("  of it in-process (median)", "extend_inprocess_s_median")):
        print(f"{label:<30}" + "".join(f"{summary[n].get(key) or '-':>{w}}" for n in names))


# --------------------------------------------------------------------------------------------------


def _load_or_build(path: Path, n_build: int, seed: int):
    from ensemble.jobs.heldout import build_queries, load_queries

    try:
        qs = load_queries(path)
        if qs.manifest["config"]["seed"] == seed and len(qs.queries) >= n_build:
            return qs
        print(f"{path}: built with another seed or fewer queries; rebuilding")
    except EnsembleError as exc:
        if path.exists():
            print(f"{path}: {exc}; rebuilding")
    print(f"building {n_build} held-out queries into {path} ...")
    return build_queries(path, n_queries=n_build, seed=seed, overwrite=True,
                         command=f"python -m benchmarks.continuation (build_queries n={n_build} seed={seed})")


def main() -> None:
    parser = argparse.ArgumentParser(description="Continuations of held-out queries (20 s -> 30 s, K = 10) by v1, "
                                     "v2 and random baselines, measured on the audio each system wrote.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Systems run one after another (one extend process at a time).")
    parser.add_argument("--heldout", default=str(ROOT / "data" / "heldout"), help="held-out query folder")
    parser.add_argument("--build-n", type=int, default=24, help="queries to build when the folder is missing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out set")
    parser.add_argument("--queries", type=int, default=None, help="use the first N queries (default all)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {SYSTEMS}")
    parser.add_argument("--v1-dir", default="/tmp/ensemble_v1", help="worktree of the previous version")
    parser.add_argument("--work", default=str(ROOT / "data" / "continuation"), help="extend outputs go here")
    parser.add_argument("--reuse", action="store_true", help="analyse existing outputs instead of rerunning")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--extend-seed", type=int, default=0, help="--seed of every extend (all systems)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per extend before giving up")
    parser.add_argument("--preliminary", default="", help="systems to flag as preliminary, e.g. v2")
    val = parser.add_mutually_exclusive_group()
    val.add_argument("--no-validate", action="store_true", help="skip the metric validation")
    val.add_argument("--validate-only", action="store_true", help="only validate the metrics")
    parser.add_argument("--json-out", default=str(ROOT / "benchmarks" / "results" / "continuation.json"))
    args = parser.parse_args()

    t_start = time.perf_counter()
    heldout = _load_or_build(Path(args.heldout), args.build_n, args.seed)
    queries = heldout.queries[: args.queries] if args.queries else heldout.queries
    result = {"benchmark": "continuation", "heldout": str(heldout.out_dir), "queries": [q["id"] for q in queries],
              "k": args.k, "seconds": args.seconds, "thresholds": asdict(THRESHOLDS),
              "settings": asdict(SETTINGS), "notes": []}
    if not args.no_validate:
        t0 = time.perf_counter()
        result["validation"] = validate(heldout, queries)
        print_validation(result["validation"])
        print(f"validation: {time.perf_counter() - t0:.0f} s")

    summary, rows_by_system, checks = {}, {}, {}
    if not args.validate_only:
        wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
        unknown = sorted(set(wanted) - set(SYSTEMS))
        if unknown:
            parser.error(f"unknown systems {unknown}; allowed: {', '.join(SYSTEMS)}")
        here_help = cli_options(ROOT)
        runs = []
        for name in wanted:
            cwd = Path(args.v1_dir) if name == "v1" else ROOT
            if name == "v1" and not (cwd / "ensemble" / "cli").is_dir():
                result["notes"].append(f"v1 skipped: no worktree at {cwd} (git worktree add {cwd} 965042a)")
                continue
            missing = [o for o in SYSTEM_OPTIONS[name] if o.startswith("--") and o not in here_help]
            if missing:
                result["notes"].append(f"{name} skipped: this tree's extend has no {' '.join(missing)} yet")
                continue
            runs.append((name, cwd))
        for note in result["notes"]:
            print(f"note: {note}")
        result["trees"] = {"start": {"here": tree_state(ROOT), "v1": tree_state(Path(args.v1_dir))}}
        walls_by, inproc_by, errors_by = {}, {}, {}
        for name, cwd in runs:
            rows, walls, inproc, errors = [], [], [], {}
            t_sys = time.perf_counter()
            for q in queries:
                out = Path(args.work) / name / q["id"]
                if not (args.reuse and (out / "results.json").is_file()):
                    shutil.rmtree(out, ignore_errors=True)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    wall, err = run_extend(cwd, heldout.path(q).resolve(), out.resolve(), SYSTEM_OPTIONS[name],
                                           k=args.k, seconds=args.seconds, timeout_s=args.timeout,
                                           seed=args.extend_seed)
                    if err:
                        errors[q["id"]] = err
                        print(f"{name} {q['id']}: FAILED {err[-300:]}", flush=True)
                        continue
                    walls.append(wall)
                try:
                    res = json.loads((out / "results.json").read_text())
                    inproc.append(sum(res.get("timings_s", {}).values()))
                    cand_rows = analyse_output(out, q)
                except (OSError, ValueError, KeyError, EnsembleError) as exc:
                    errors[q["id"]] = f"unreadable output: {type(exc).__name__}: {exc}"
                    print(f"{name} {q['id']}: {errors[q['id']]}", flush=True)
                    continue
                req = res.get("request", {})
                for r in cand_rows:
                    r["query"] = q["id"]
                    r["request"] = {k: req.get(k) for k in ("seed", "ranking", "conform", "transpose")}
                    if r.get("error"):
                        print(f"{name} {q['id']} rank{r['rank']:02d}: metric error {r['error']}", flush=True)
                rows.extend(cand_rows)
                print(f"{name} {q['id']}: {len(cand_rows)} candidates"
                      + (f", extend {walls[-1]:.1f} s" if walls and not args.reuse else ""), flush=True)
            rows_by_system[name], walls_by[name], inproc_by[name], errors_by[name] = rows, walls, inproc, errors
            print(f"{name}: {time.perf_counter() - t_sys:.0f} s", flush=True)
            # keep what is done so far: a crash later does not lose it (--reuse re-measures it)
            write_json_atomic(args.json_out, {**result, "partial": True, "candidates": rows_by_system})

        ids = [q["id"] for q in queries]
        subsets = {"all": ids, UNTOUCHED_LABEL: [i for i in ids if i not in DEVELOPMENT_QUERIES]}
        for label, keep in subsets.items():
            keep = set(keep)
            rnd_rows = [r for r in rows_by_system.get("random", []) if r["query"] in keep]
            rnd = _stats([None if r["seam_pitch_jump_cents"] is None else abs(r["seam_pitch_jump_cents"])
                          for r in rnd_rows])["median"]
            summary[label] = {}
            for name in rows_by_system:
                rows = [r for r in rows_by_system[name] if r["query"] in keep]
                errors = {k: v for k, v in errors_by[name].items() if k in keep}
                summary[label][name] = summarize(rows, walls_by[name], inproc_by[name], rnd, len(keep), errors)
                if name in [p.strip() for p in args.preliminary.split(",")]:
                    summary[label][name]["preliminary"] = True
            checks[label] = issue13(summary[label])
        for label in subsets:
            n_q = len(subsets[label])
            print(f"\n===== {label}: {n_q} queries ({', '.join(subsets[label][:1] + ['..'] + subsets[label][-1:])}) "
                  f"=====")
            print_systems(summary[label])
            print_issue13(checks[label], f"{label} ({n_q} queries)")
    if "trees" in result:
        result["trees"]["end"] = {"here": tree_state(ROOT), "v1": tree_state(Path(args.v1_dir))}
        if result["trees"]["end"] != result["trees"]["start"]:
            note = (f"the trees changed during the run: {result['trees']['start']} -> {result['trees']['end']}; "
                    "systems that ran before the change measured the older code")
            result["notes"].append(note)
            print(f"note: {note}")
    result["systems"] = summary
    result["acceptance_issue13"] = checks
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    full = {**result, "candidates": rows_by_system}
    write_json_atomic(args.json_out, full)
    print(f"\nfull result (every candidate) written to {args.json_out}")
    print(f"wall: {result['wall_s']:.0f} s")
    compact = {k: v for k, v in result.items() if k not in ("validation", "systems")}
    compact["acceptance_issue13"] = {label: {name: {cid: [c["value"], "PASS" if c["pass"] else "FAIL"]
                                                    for cid, c in per.items()} for name, per in by.items()}
                                     for label, by in checks.items()}
    compact["systems"] = {label: {name: {"acceptance": s.get("acceptance"), "queries_ok": s.get("queries_ok"),
                                         "queries_failed": sorted(s.get("queries_failed", {})),
                                         "candidates": s.get("candidates"),
                                         "extend_wall_s_median": s.get("extend_wall_s_median")}
                                  for name, s in by.items()} for label, by in summary.items()}
    compact["validation_separates"] = {m: r["separates"] for m, r in result.get("validation", {}).items()}
    print(json.dumps(compact))


if __name__ == "__main__":
    main()
