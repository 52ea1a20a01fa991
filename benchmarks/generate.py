"""Benchmark: ``/generate`` end to end, as a user of the app gets it, through ``gradio_client``.

Starts ``python app.py`` on a free port (the shipped checkpoints and databases; its files and ratings
log in a temporary folder), waits for its start-up warm-up, then calls ``/generate`` ``--runs`` times
with a shipped example (default the 20 s one) to ``--target`` seconds with K = ``--k``: the same
request each time, blind, figures and WAVs included. Reports the wall time of each call as the client
sees it and the round's own stage timings (``round["timings_s"]``: the input's report card, the
extend stages, ``figures_and_audio``), their medians, the machine's load average and the share of
CPU time the host took from this virtual machine meanwhile (steal: a "idle" machine whose host is
busy is not idle); prints a table
and a final JSON line (also written to ``--json-out``).

Rounds are blind by default (the app's default: the candidates' figures stay hidden until the rater
submits, so they are drawn after the round is answered); ``--open`` asks for open rounds, whose
figures are drawn beside the band and are part of the answer.

    python -m benchmarks.generate [--runs 3] [--k 10] [--target 30] [--open] [--clip assets/examples/...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = ROOT / "assets" / "examples" / "babyband_track00031_20s.wav"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(workdir: Path, timeout_s: float = 240.0) -> tuple[subprocess.Popen, str, Path]:
    """``python app.py`` serving on a free port, its files under ``workdir`` -> (process, url, log)."""
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "RATINGS_DIR": str(workdir / "ratings"),
           "TMPDIR": str(workdir), "GRADIO_TEMP_DIR": str(workdir / "gradio"), "PYTHONUNBUFFERED": "1"}
    log = workdir / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        if time.monotonic() - t0 > timeout_s:
            proc.kill()
            raise RuntimeError(f"app.py did not serve within {timeout_s:g} s")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    # the warm-up request runs in the background after start: wait for it (it holds the engine)
    while "warm-up" not in log.read_text() and time.monotonic() - t0 < timeout_s:
        time.sleep(0.5)
    return proc, url, log


def cpu_times() -> tuple[int, int] | None:
    """(steal, total) CPU jiffies of the whole machine since boot (Linux /proc/stat), or None: steal is
    time a virtual machine's CPUs were ready to run but the host ran something else."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of the CPU time between two :func:`cpu_times` that the host took (steal), %."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100.0 * (after[0] - before[0]) / (after[1] - before[1]), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--target", type=float, default=30.0, help="target length, s")
    parser.add_argument("--clip", default=str(DEFAULT_CLIP), help="the upload (default: the 20 s example)")
    parser.add_argument("--open", action="store_true",
                        help="open rounds (scores and figures shown at once) instead of blind ones")
    parser.add_argument("--json-out", help="also write the JSON result here")
    args = parser.parse_args()

    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        proc, url, _ = start_app(Path(tmp))
        try:
            client = Client(url, verbose=False, download_files=str(Path(tmp) / "downloads"))
            runs = []
            for i in range(args.runs):
                load = os.getloadavg()[0]
                cpu = cpu_times()
                t = time.perf_counter()
                _, _, rnd, files = client.predict(
                    handle_file(args.clip), args.target, args.k, 0.8, 0.6, [7.0, 7.5, 8.0, 8.5],
                    ["Bass", "Drums", "Keys"], False, 0, not args.open, False, "bench", api_name="/generate")
                wall = time.perf_counter() - t
                runs.append({"wall_s": round(wall, 3), "load_avg_1min": round(load, 2),
                             "steal_pct": steal_pct(cpu, cpu_times()),
                             "k": rnd["k"], "files": len(files), "timings_s": rnd["timings_s"]})
                stages = ", ".join(f"{k} {v:.2f}" for k, v in rnd["timings_s"].items())
                print(f"run {i + 1}: {wall:.2f} s (load {load:.1f}, steal {runs[-1]['steal_pct']} %): {stages}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    keys = sorted({k for r in runs for k in r["timings_s"]})
    medians = {k: round(statistics.median(r["timings_s"].get(k, 0.0) for r in runs), 3) for k in keys}
    result = {"clip": Path(args.clip).name, "target_s": args.target, "k": args.k, "blind": not args.open,
              "runs": runs,
              "median_wall_s": round(statistics.median(r["wall_s"] for r in runs), 3),
              "median_timings_s": medians, "cpus": os.cpu_count()}
    print(f"median /generate: {result['median_wall_s']:.2f} s; figures and WAVs "
          f"{medians.get('figures_and_audio', float('nan')):.2f} s")
    line = json.dumps(result)
    print(line)
    if args.json_out:
        Path(args.json_out).write_text(line + "\n")


if __name__ == "__main__":
    main()
