"""Benchmark: time to perform a 30 s leader clip with all followers (bass, drums, keys), by stage.

The clip is the Guitar stem of the first BabyBand test track that lasts 30 s (data/babyband), or a
synthetic guitar-range melody when the corpus is absent. The performer uses the shipped checkpoints
(checkpoints/) and drum database (assets/drums); a missing checkpoint is replaced by an untrained
model of the same size (same compute) and the JSON says so. One warm-up run, then ``--repeats``
timed runs; medians per stage (analysis, arranger, drums, harmony, bass, keys, mix) and of the
whole call. Prints a table and a final JSON line.

    python -m benchmarks.perform [--seconds 30] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ensemble.audio import load_audio
from ensemble.jobs.perform_eval import load_performer
from ensemble.perform import PerformConfig

SR = 16000
STAGES = ("analysis", "arranger", "drums", "harmony", "bass", "keys", "mix")


def leader_clip(data: Path, seconds: float) -> tuple[np.ndarray, str]:
    """[n] float32 leader and where it came from."""
    n = int(seconds * SR)
    for meta_path in sorted(data.glob("Track*/metadata.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("split") == "test" and meta.get("duration_s", 0) >= seconds:
            audio = load_audio(meta_path.parent / "stems" / "Guitar.flac", max_seconds=3600).audio
            return audio[:n], f"{meta_path.parent.name} Guitar stem (BabyBand test)"
    rng = np.random.default_rng(0)  # synthetic: plucked notes G3..A5, 4 per second
    t = np.arange(SR // 4) / SR
    notes = []
    for m in rng.integers(55, 82, size=int(seconds * 4) + 1):
        f = 440.0 * 2 ** ((m - 69) / 12)
        notes.append((np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t)) * np.exp(-t * 6))
    return (0.3 * np.concatenate(notes)[:n]).astype(np.float32), "synthetic melody"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the budget: 2 cores)")
    parser.add_argument("--data", default="data/babyband")
    parser.add_argument("--checkpoints", default="checkpoints")
    parser.add_argument("--drum-db", default="assets/drums")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = PerformConfig(checkpoints_dir=args.checkpoints, drum_db=args.drum_db)
    t0 = time.perf_counter()
    performer, untrained = load_performer(config, allow_untrained=True)
    load_s = time.perf_counter() - t0
    audio, source = leader_clip(Path(args.data), args.seconds)
    performer.perform(audio)  # warm-up
    walls, stages = [], {s: [] for s in STAGES}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        perf = performer.perform(audio)
        walls.append(time.perf_counter() - t0)
        for s in STAGES:
            stages[s].append(perf.info["timings_s"].get(s, 0.0))
    med = {s: statistics.median(v) for s, v in stages.items()}
    wall = statistics.median(walls)
    print(f"perform {len(audio) / SR:g} s ({source}), followers {','.join(config.followers)}, "
          f"{torch.get_num_threads()} torch threads, load avg {os.getloadavg()[0]:.2f}")
    print(f"models: {'trained' if not untrained else 'untrained stand-ins for ' + ', '.join(untrained)}"
          f"; load {load_s:.2f} s")
    print(f"{'stage':<10}{'median s':>10}{'share':>8}")
    for s in STAGES:
        print(f"{s:<10}{med[s]:>10.3f}{med[s] / wall:>8.0%}")
    print(f"{'total':<10}{wall:>10.3f}  (min {min(walls):.3f}, max {max(walls):.3f})")
    print(json.dumps({"benchmark": "perform", "seconds": round(len(audio) / SR, 3), "source": source,
                      "repeats": args.repeats, "threads": torch.get_num_threads(),
                      "stages_s_median": {s: round(v, 4) for s, v in med.items()},
                      "total_s_median": round(wall, 4), "total_s_min": round(min(walls), 4),
                      "realtime_factor": round(len(audio) / SR / wall, 1), "budget_s": 3.0,
                      "within_budget": wall <= 3.0, "untrained_stand_ins": untrained,
                      "load_s": round(load_s, 3), "load_avg_1min": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
