"""Benchmark: real-time factor of the project's DDSP synth vs the reference design's naive synth.

30 s at 16 kHz, 100 frames/s, 100 harmonics + 65 noise bands, batch 1, CPU, inference mode.
The control signal is a guitar-range melody (G3..A5, 196-880 Hz, with vibrato) and smoothly
varying harmonic/noise spectra, the kind of controls the Guitar decoder produces. Both synths get
the same masked controls. Prints a table and a final JSON line.

    python -m benchmarks.synth [--seconds 30] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch

from ensemble import dsp

SR, HOP, K, M = 16000, 160, 100, 65


def make_controls(seconds: float, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    T = int(seconds * SR / HOP)
    notes = rng.integers(55, 82, size=T // 25 + 1)  # MIDI G3..A5, a note every 0.25 s
    midi = np.repeat(notes, 25)[:T] + 0.3 * np.sin(2 * np.pi * 5.5 * np.arange(T) / 100)
    f0 = torch.tensor(440.0 * 2 ** ((midi - 69) / 12), dtype=torch.float32).reshape(1, T, 1)
    k = np.arange(1, K + 1)
    tilt = rng.uniform(0.5, 2.0, size=(T // 50 + 2, 1))
    dist = np.repeat(k[None, :] ** -tilt, 50, axis=0)[:T]  # spectra that change every 0.5 s
    harm = dsp.HarmonicSynth(SR, HOP, K, scale_fn=False).get_controls(
        torch.full((1, T, 1), 0.3), torch.tensor(dist, dtype=torch.float32)[None], f0)
    mags = torch.tensor(np.exp(-np.linspace(0, 4, M))[None, None] * 0.05
                        * rng.uniform(0.5, 1.5, size=(1, T, 1)), dtype=torch.float32)
    return {"f0_hz": f0, "harmonic_amplitudes": harm["harmonic_amplitudes"], "noise": mags}


def project_synth(c: dict[str, torch.Tensor]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    harmonic = dsp.harmonic_synthesis(c["f0_hz"], c["harmonic_amplitudes"], sample_rate=SR,
                                      hop_length=HOP)
    return harmonic + dsp.filtered_noise(c["noise"], hop_length=HOP, generator=gen)


def naive_synth(c: dict[str, torch.Tensor]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    harmonic = dsp.naive_harmonic_synthesis(c["f0_hz"], c["harmonic_amplitudes"], sample_rate=SR,
                                            hop_length=HOP)
    return harmonic + dsp.filtered_noise(c["noise"], hop_length=HOP, generator=gen)


def timeit(fn, arg, repeats: int) -> list[float]:
    fn(arg)  # warm-up (allocator, thread pool)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    controls = make_controls(args.seconds)
    with torch.inference_mode():
        ours = timeit(project_synth, controls, args.repeats)
        naive = timeit(naive_synth, controls, max(3, args.repeats // 2))
        # the naive float32 phase cumsum drifts over 30 s, so compare the first second
        diff = float((project_synth(controls) - naive_synth(controls))[:, :SR].abs().max())
    med_ours, med_naive = statistics.median(ours), statistics.median(naive)
    rows = [("project synth", med_ours, min(ours)), ("naive reference", med_naive, min(naive))]
    print(f"{args.seconds:g} s audio, {K} harmonics + {M} noise bands, batch 1, "
          f"{torch.get_num_threads()} threads")
    print(f"{'synth':<18}{'median s':>10}{'min s':>10}{'RTF (median)':>14}")
    for name, med, best in rows:
        print(f"{name:<18}{med:>10.4f}{best:>10.4f}{args.seconds / med:>14.1f}")
    print(f"max |project - naive| over the first 1 s = {diff:.2e}")
    result = {"synth_rtf": round(args.seconds / med_ours, 1),
              "naive_rtf": round(args.seconds / med_naive, 1),
              "speedup": round(med_naive / med_ours, 1)}
    assert math.isfinite(diff)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
