"""Soak test of the real server: memory, failures, latency and disk under steady use.

    python -m benchmarks.soak --clients 4 --minutes 30          # the issue's acceptance run
    python -m benchmarks.soak --clients 2 --minutes 5           # a short one

Starts ``python app.py`` (as deployed: it bounds glibc's allocator, ``app.ALLOCATOR``, and makes its own
temporary folder)
on a free port with its ratings log and temporary files in a fresh folder, then drives it from N
``gradio_client`` clients, each alternating ``/generate`` (K = 3, a 12 s target, a shipped example,
blind) and ``/rate`` (a random ranking) until the time is up. Every ``--interval`` seconds it prints the
server's RSS, the requests done and failed, and the disk used by the app's run folder and Gradio's
temporary folder (the same folder unless ``GRADIO_TEMP_DIR`` is set). At the end: latency percentiles
per endpoint, RSS growth from the first completed request to the end (busy: a request is in flight at
both reads), the median RSS of each fifth of the run, the idle server's RSS (``--settle`` s after its
warm-up, before any client, and after the clients stopped), the largest disk use seen, what SIGTERM
left behind, and one JSON line (also written to ``--out``, default
``benchmarks/results/soak.json``). The per-client request cap is off (``ENSEMBLE_RATE_LIMIT=0``): the
clients share one address.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB (psutil when installed, else /proc), or None when gone."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - the process is gone
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def disk_mb(folder: Path) -> float:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total / 2**20


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {"n": len(values), "p50": round(float(np.percentile(a, 50)), 3),
            "p90": round(float(np.percentile(a, 90)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--target", type=float, default=12.0)
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between samples")
    parser.add_argument("--disk-cap-mb", type=float, default=None,
                        help="ENSEMBLE_DISK_CAP_MB for the server (default: the app's)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds the idle server is left before its idle RSS is read, after its warm-up "
                             "and after the clients stop (jemalloc returns freed pages ~10 s after they were freed)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.minutes <= 0:
        parser.error(f"--clients {args.clients} and --minutes {args.minutes:g}; allowed: >= 1 and > 0")

    from gradio_client import Client, handle_file

    work = Path(tempfile.mkdtemp(prefix="ensemble-soak-"))
    (work / "tmp").mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_TEMP_DIR", "ENSEMBLE_RUN_DIR")}
    env.update({"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                "GRADIO_ANALYTICS_ENABLED": "False", "RATINGS_DIR": str(work / "ratings"),
                "TMPDIR": str(work / "tmp"), "ENSEMBLE_RATE_LIMIT": "0", "PYTHONUNBUFFERED": "1"})
    if args.disk_cap_mb is not None:
        env["ENSEMBLE_DISK_CAP_MB"] = f"{args.disk_cap_mb:g}"
    memory_log = work / "memory.jsonl"  # where the server says its memory is (app.py, ENSEMBLE_MEMORY_LOG)
    env["ENSEMBLE_MEMORY_LOG"] = str(memory_log)
    url = f"http://127.0.0.1:{port}/"
    log_file = open(work / "app.log", "w")  # noqa: SIM115 - open for the server's whole life
    server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log_file,
                              stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while True:
        if server.poll() is not None:
            print(f"error: app.py exited with {server.returncode}; see {work / 'app.log'}", file=sys.stderr)
            return 2
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
        if time.monotonic() - t0 > 300:
            print("error: app.py did not serve within 300 s", file=sys.stderr)
            server.kill()
            return 2
    print(f"serving after {time.monotonic() - t0:.1f} s (pid {server.pid}, files under {work})", flush=True)

    # the idle server after its warm-up request: what it holds before any client came
    t_warm = time.monotonic()
    while "warm-up done" not in (work / "app.log").read_text(errors="replace") and time.monotonic() - t_warm < 120:
        time.sleep(0.5)
    time.sleep(args.settle)
    idle_start = rss_mb(server.pid)

    # clips shorter than the target (the shipped 8 s example for the default 12 s)
    import soundfile as sf

    examples = [p for p in sorted((ROOT / "assets" / "examples").glob("*.wav"))
                if sf.info(str(p)).duration < args.target - 1.0]
    if not examples:
        print(f"error: no shipped example is shorter than --target {args.target:g} s", file=sys.stderr)
        server.kill()
        return 2
    lock = threading.Lock()
    latencies: dict[str, list[float]] = {"generate": [], "rate": []}
    failures: list[str] = []
    first_done: list[float] = []  # RSS at the first completed request
    first_done_wall: list[float] = []  # and when (epoch s)
    deadline = time.monotonic() + 60.0 * args.minutes
    stop = threading.Event()

    def client_loop(index: int) -> None:
        rng = random.Random(args.seed + index)
        client = Client(url, verbose=False, download_files=str(work / f"downloads-{index}"))
        n = 0
        while time.monotonic() < deadline and not stop.is_set():
            clip = examples[n % len(examples)]
            n += 1
            try:
                t = time.perf_counter()
                _, _, rnd, _ = client.predict(
                    handle_file(str(clip)), args.target, args.k, 0.8, 0.6, [7.0, 7.5, 8.0, 8.5],
                    ["Bass", "Drums", "Keys"], False, n, True, False, f"soak-{index}", api_name="/generate")
                dt = time.perf_counter() - t
                with lock:
                    latencies["generate"].append(dt)
                    if not first_done:
                        first_done.append(rss_mb(server.pid) or float("nan"))
                        first_done_wall.append(time.time())
                ranks = list(range(1, rnd["k"] + 1))
                rng.shuffle(ranks)
                t = time.perf_counter()
                client.predict(rnd["round_id"], ranks, None, "", f"soak-{index}", api_name="/rate")
                with lock:
                    latencies["rate"].append(time.perf_counter() - t)
            except Exception as exc:  # noqa: BLE001 - counted and reported, the soak goes on
                with lock:
                    failures.append(f"client {index}: {type(exc).__name__}: {str(exc)[:200]}")

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(args.clients)]
    for th in threads:
        th.start()
    samples = []
    started = time.monotonic()
    gradio_dir = work / "tmp" / "gradio"  # only when the app's own folder is not Gradio's
    while any(th.is_alive() for th in threads):
        time.sleep(min(args.interval, max(0.5, deadline - time.monotonic() + 1)))
        runs = list((work / "tmp").glob("ensemble-app-*"))
        with lock:
            sample = {"t_s": round(time.monotonic() - started, 1), "rss_mb": rss_mb(server.pid),
                      "generate": len(latencies["generate"]), "rate": len(latencies["rate"]),
                      "failures": len(failures),
                      "app_temp_mb": round(sum(disk_mb(r) for r in runs), 1),
                      "gradio_temp_mb": round(disk_mb(gradio_dir), 1) if gradio_dir.exists() else 0.0}
        samples.append(sample)
        print(json.dumps(sample), flush=True)
    for th in threads:
        th.join(timeout=120)

    end_rss = rss_mb(server.pid)
    time.sleep(args.settle)
    idle_end = rss_mb(server.pid)
    runs = list((work / "tmp").glob("ensemble-app-*"))
    server.send_signal(signal.SIGTERM)
    try:
        rc = server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        rc = server.wait()
    log_file.close()
    left = [str(p) for p in (work / "tmp").rglob("*") if p.is_file()]
    said = re.search(r"; allocator (\w+);", (work / "app.log").read_text(errors="replace"))
    start_rss = first_done[0] if first_done else None
    growth = (100.0 * (end_rss - start_rss) / start_rss) if start_rss and end_rss else None
    result = {
        "clients": args.clients, "minutes": args.minutes, "k": args.k, "target_s": args.target,
        "rounds": len(latencies["generate"]), "ratings": len(latencies["rate"]), "failures": len(failures),
        "failure_examples": failures[:5],
        "rss_first_request_mb": None if start_rss is None else round(start_rss, 1),
        "rss_end_mb": None if end_rss is None else round(end_rss, 1),
        "rss_growth_pct": None if growth is None else round(growth, 1),
        "rss_max_mb": round(max((s["rss_mb"] or 0) for s in samples), 1) if samples else None,
        # the same server idle (``--settle`` s after its warm-up, and after the clients stopped): what
        # it holds between requests, without the request in flight the busy samples catch
        "rss_idle_start_mb": None if idle_start is None else round(idle_start, 1),
        "rss_idle_end_mb": None if idle_end is None else round(idle_end, 1),
        "rss_idle_growth_pct": round(100.0 * (idle_end - idle_start) / idle_start, 1)
        if idle_start and idle_end else None,
        # the busy samples' median in each fifth of the run: growth that goes on shows as a rising row
        "rss_median_by_fifth_mb": _fifths(samples),
        "app_temp_max_mb": max((s["app_temp_mb"] for s in samples), default=0.0),
        "gradio_temp_max_mb": max((s["gradio_temp_mb"] for s in samples), default=0.0),
        "disk_cap_mb": args.disk_cap_mb, "run_folders": len(runs),
        "latency_s": {name: _percentiles(v) for name, v in latencies.items()},
        "sigterm_rc": rc, "files_left_after_sigterm": len(left),
        "allocator": {name: (os.environ[name] if name in os.environ else "set by app.py")
                      for name in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")},
        "trim_seconds": os.environ.get("ENSEMBLE_TRIM_SECONDS", "app default"),
        "server_allocator": said.group(1) if said else None,  # what app.py logged it runs on
        # where the memory is (the server's own reading after each trim): the first reading after the
        # first completed request, the last, and their difference per field
        "memory_breakdown": _breakdown(memory_log, first_done_wall[0] if first_done_wall else None),
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}), flush=True)
    return 0 if not failures and rc == 0 and not left else 1


def _breakdown(path: Path, since: float | None) -> dict | None:
    """First (at or after ``since``, epoch s) and last lines of the server's memory log, their
    difference per field, and each field's median per fifth of the log (None without a log)."""
    try:
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    except (OSError, ValueError):
        return None
    if since is not None:
        lines = [x for x in lines if x.get("time", 0) >= since] or lines[-1:]
    if not lines:
        return None
    first, last = lines[0], lines[-1]
    keys = [k for k in first if k != "time" and isinstance(first[k], int | float)]
    fifths = {}
    for k in keys:
        n = len(lines)
        fifths[k] = [statistics.median([x[k] for x in lines[i * n // 5:max((i + 1) * n // 5, i * n // 5 + 1)]
                                        if k in x]) for i in range(5)] if n >= 5 else None
    return {"readings": len(lines), "first": first, "last": last,
            "change": {k: round(last[k] - first[k], 1) for k in keys if k in last}, "median_by_fifth": fifths}


def _fifths(samples: list[dict]) -> list[float]:
    """Median RSS (MB) of the samples in each fifth of the run's time."""
    xs = [(s["t_s"], s["rss_mb"]) for s in samples if s.get("rss_mb")]
    if not xs:
        return []
    end = max(t for t, _ in xs) or 1.0
    out = []
    for i in range(5):
        part = [r for t, r in xs if i * end / 5 <= t < (i + 1) * end / 5 or (i == 4 and t == end)]
        out.append(round(statistics.median(part), 1) if part else None)
    return out


if __name__ == "__main__":
    sys.exit(main())
