"""Benchmark: the full ``extend`` (20 s -> 30 s, K = 10, performed) under one allocator setting.

glibc reads its settings only when a process starts, so each setting is its own run:

    MALLOC_ARENA_MAX=2 TAG=default python -m benchmarks.allocator
    MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 TAG=mmap128k python -m benchmarks.allocator

Loads the shipped engine, extends the 20 s example once to warm up, then three times; prints the
median and each run and a final JSON line. The results quoted in the README's *Memory* are in
``benchmarks/results/soak_allocator/extend_times.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed extends after the warm-up")
    args = parser.parse_args()
    from app import engine_config
    from ensemble.engine import Engine
    from ensemble.extend import extend
    from ensemble.listening.settings import check_settings, read_clip

    os.chdir(ROOT)
    eng = Engine.load(engine_config())
    clip = read_clip(str(ROOT / "assets" / "examples" / "babyband_track00031_20s.wav"),
                     limits=eng.config.limits, features=eng.config.features)
    st = check_settings(target_seconds=30.0, k=10, alpha=0.8, beta=0.6, lookbacks=[7.0, 7.5, 8.0, 8.5],
                        followers=["Bass", "Drums", "Keys"], transpose=False, seed=0, blind=True, timbre=None,
                        input_seconds=clip.seconds, limits=eng.config.limits, timbres=eng.timbres,
                        lookback_choices=eng.db.config.lookbacks)
    extend(eng, clip.audio, st.request())
    runs = []
    for _ in range(args.runs):
        t = time.perf_counter()
        ext = extend(eng, clip.audio, st.request())
        runs.append(time.perf_counter() - t)
    tag = os.environ.get("TAG", "")
    print(tag, "median", round(statistics.median(runs), 2), [round(x, 2) for x in runs], "perform",
          round(ext.timings["perform"], 2), flush=True)
    print(json.dumps({"benchmark": "allocator", "tag": tag, "median_s": round(statistics.median(runs), 3),
                      "runs_s": [round(x, 3) for x in runs],
                      "env": {k: os.environ[k] for k in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_",
                                                         "MALLOC_TRIM_THRESHOLD_") if k in os.environ}}))


if __name__ == "__main__":
    main()
