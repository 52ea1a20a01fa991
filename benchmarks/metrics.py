"""Benchmark: report card of a 30 s clip, and metrics + comparison figure for 10 candidates.

Audio is a seeded synthetic melody (harmonic tone, notes of a major scale G3..G5 with vibrato,
note envelopes and phrase-level dynamics), the kind of lead line the app receives.

* report 30 s: pYIN analysis (no cache) + scores + report card rendered to PNG bytes.
* input analysis 20 s: pYIN analysis of the input, done once per input (no cache).
* candidates 10: 10 candidates = the 20 s input + a 10 s segment each, built from the input's
  analysis and the segments' stored features (f0, voicing, loudness, RMS computed beforehand with
  YIN, as a database stores them), + the comparison figure rendered to PNG bytes. The acceptance
  bound is <= 2 s.
* candidates 10 from audio: the same, but only f0/voicing are stored (as ``ensemble.rag`` does,
  with loudness) and RMS, loudness and the waveform envelope are computed from each segment's audio
  inside the timed section (``SegmentFeatures.from_audio``).

Timings are medians over ``--repeats`` after one warm-up. Prints a table and a final JSON line.

    python -m benchmarks.metrics [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ensemble import features, metrics
from ensemble.figures import report as report_figures

SR = 16000
MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])


def melody(seconds: float, seed: int) -> np.ndarray:
    """[n_samples] float32: a seeded harmonic melody with vibrato and phrase dynamics."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    scale = np.concatenate([55 + MAJOR + 12 * o for o in range(3)])  # G major from G3, 3 octaves
    scale = scale[scale <= 79]  # G3..G5
    durations = rng.choice([0.25, 0.5, 0.5, 0.75, 1.0], size=int(seconds * 4) + 4)
    starts = np.concatenate([[0.0], np.cumsum(durations)])
    starts = starts[starts < seconds]
    idx = [len(scale) // 2]
    for _ in range(len(starts) - 1):  # a random walk in scale steps, pulled back to the middle
        pull = int(np.sign(len(scale) // 2 - idx[-1])) if abs(len(scale) // 2 - idx[-1]) > 3 else 0
        idx.append(int(np.clip(idx[-1] + rng.integers(-2, 3) + pull, 0, len(scale) - 1)))
    idx = np.array(idx)
    note_of_sample = np.searchsorted(starts, np.arange(n) / SR, side="right") - 1  # [n]
    t = np.arange(n) / SR
    midi = scale[idx][note_of_sample] + 0.2 * np.sin(2 * np.pi * 5.5 * t)
    f0 = 440.0 * 2.0 ** ((midi - 69) / 12)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    tone = sum(np.sin(k * phase) / k for k in range(1, 7))
    since = t - starts[note_of_sample]
    envelope = np.minimum(since / 0.02, 1.0) * np.exp(-1.5 * since)  # attack 20 ms, decay
    phrase = 0.35 + 0.25 * np.sin(2 * np.pi * t / 7.0 + rng.uniform(0, 2 * np.pi))
    y = 0.6 * phrase * envelope * tone + 1e-3 * rng.standard_normal(n)
    return np.clip(y, -1, 1).astype(np.float32)


def timed(fn, repeats: int) -> tuple[list[float], object]:
    out = fn()  # warm-up (numba JIT, fonts, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--png-dir", type=Path, default=None,
                        help="also write the two figures here (for looking at them)")
    args = parser.parse_args()
    config = metrics.MetricsConfig()
    grid = config.features

    # --- report card of a 30 s clip ---------------------------------------------------------------
    clip30 = melody(30.0, seed=0)

    def analyse30():
        return metrics.analyze_clip(clip30, config=config, f0_method="pyin", cache=None)

    def card(analysis):
        return report_figures.figure_png(report_figures.report_card(analysis, config=config))

    t_an30, an30 = timed(analyse30, args.repeats)
    t_card30, png30 = timed(lambda: card(an30), args.repeats)
    report30 = [a + b for a, b in zip(t_an30, t_card30, strict=True)]

    # --- 10 candidates of one 20 s input ----------------------------------------------------------
    input20 = melody(20.0, seed=1)
    t_in20, inp = timed(lambda: metrics.analyze_clip(input20, config=config, f0_method="pyin",
                                                     cache=None), args.repeats)
    db_audio = melody(100.0, seed=2)  # a "database" cut into ten 10 s chunks
    segments, chunks = [], []
    for i in range(10):
        chunk = db_audio[i * 10 * SR:(i + 1) * 10 * SR]
        feats = features.analyze(chunk, config=grid, f0_method="yin", with_chroma=False,
                                 with_onset=False)
        segments.append(metrics.SegmentFeatures.from_features(
            feats, label=f"chunk {1000 + i}", f0_method="yin", duration_s=len(chunk) / SR))
        chunks.append(chunk)

    def candidates_metrics():
        return [metrics.candidate_analysis(inp, seg, crossfade_s=0.05, config=config)
                for seg in segments]

    def candidates_all():
        cands = candidates_metrics()
        return report_figures.figure_png(report_figures.compare_candidates(inp, cands))

    def candidates_from_audio():
        cands = [metrics.candidate_analysis(inp, metrics.SegmentFeatures.from_audio(
            chunk, f0_hz=seg.f0_hz, voiced=seg.voiced, config=grid, label=seg.label,
            f0_method="yin"), crossfade_s=0.05, config=config)
            for seg, chunk in zip(segments, chunks, strict=True)]
        return report_figures.figure_png(report_figures.compare_candidates(inp, cands))

    t_cm, cands = timed(candidates_metrics, args.repeats)
    t_c10, png10 = timed(candidates_all, args.repeats)
    t_c10a, _ = timed(candidates_from_audio, args.repeats)
    t_hit, _ = timed(lambda: metrics.analyze_clip(input20, config=config, f0_method="pyin"),
                     args.repeats)  # the first (warm-up) call fills the default cache

    if args.png_dir is not None:
        args.png_dir.mkdir(parents=True, exist_ok=True)
        (args.png_dir / "report_30s.png").write_bytes(png30)
        (args.png_dir / "candidates_10.png").write_bytes(png10)
        (args.png_dir / "candidate_1.png").write_bytes(card(cands[0]))

    med = statistics.median
    rows = [
        ("report 30 s: pYIN analysis", t_an30),
        ("report 30 s: card -> PNG", t_card30),
        ("report 30 s: total", report30),
        ("input 20 s: pYIN analysis", t_in20),
        ("input 20 s: cached analysis", t_hit),
        ("10 candidates: metrics", t_cm),
        ("10 candidates: metrics + figure", t_c10),
        ("10 candidates from audio: + figure", t_c10a),
    ]
    print(f"{args.repeats} repeats after a warm-up, {torch.get_num_threads()} threads; "
          f"PNG sizes {len(png30) // 1024} kB (report), {len(png10) // 1024} kB (10 candidates)")
    print(f"{'step':<34}{'median s':>10}{'min s':>10}")
    for name, times in rows:
        print(f"{name:<34}{med(times):>10.3f}{min(times):>10.3f}")
    jumps = [c.seam.pitch_jump_cents for c in cands]
    print("seam pitch jumps (cents):", ", ".join("n/a" if j is None else f"{j:+.0f}" for j in jumps))
    result = {
        "report_30s_s": round(med(report30), 3),
        "report_30s_analysis_s": round(med(t_an30), 3),
        "report_30s_figure_s": round(med(t_card30), 3),
        "input_analysis_20s_s": round(med(t_in20), 3),
        "input_analysis_20s_cached_s": round(med(t_hit), 4),
        "candidates10_metrics_s": round(med(t_cm), 4),
        "candidates10_s": round(med(t_c10), 3),
        "candidates10_from_audio_s": round(med(t_c10a), 3),
        "candidates10_within_2s": med(t_c10) <= 2.0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
