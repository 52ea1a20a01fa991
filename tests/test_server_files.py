"""Issue 16, files: every file of a run lives in the app's own folder, and goes with its round or run.

The real app (``python app.py``) driven from ``gradio_client``; each test failed on the code before
issue 16's fix:

* Gradio's files (uploads, the candidates it serves) live under the app's run folder
  (``GRADIO_TEMP_DIR`` set by the app), not in a ``gradio`` folder of their own;
* a refused upload is deleted at once;
* with a disk cap (``ENSEMBLE_DISK_CAP_MB``) the run folder stays within it, oldest rounds first, and
  the page's own files (its examples) stay;
* a server killed with SIGKILL leaves its folder, and the next start deletes it (a live server's
  folder is left alone); SIGTERM leaves nothing (``tests/test_app.py``).
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from test_app import generate, running_app, shortest_example

CAP_MB = 12


def _files(folder):
    return [p for p in folder.rglob("*") if p.is_file()]


def _size(folder) -> int:
    return sum(p.stat().st_size for p in _files(folder))


def test_files_live_in_the_run_folder_capped_and_swept_after_a_kill(tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    work = tmp_path / "work"
    env = {"ENSEMBLE_DISK_CAP_MB": str(CAP_MB), "ENSEMBLE_WARMUP": "0"}
    with running_app(work, env=env) as app:
        client = Client(app.url, verbose=False, download_files=str(tmp_path / "downloads"))
        runs = list(app.tmp.glob("ensemble-app-*"))
        assert len(runs) == 1
        run = runs[0]
        assert re.fullmatch(r"ensemble-app-\d+-\w+", run.name)

        startup = [p for p in run.iterdir() if not re.fullmatch(r"[0-9a-f]{32}", p.name)]
        assert startup  # the page's examples, served from the run folder

        # a refused upload: deleted at once
        junk = tmp_path / "junk.wav"
        junk.write_bytes(b"RIFF" + bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
        with pytest.raises(AppError, match="not a readable audio file"):
            generate(client, junk)
        assert not [p for p in _files(app.tmp) if p.name == "junk.wav"]

        # rounds: every file under the run folder; the folder within the cap
        sizes = []
        for _ in range(4):
            generate(client, shortest_example(), target=12.0, k=3, blind=False)
            time.sleep(3.0)  # the takes' stems and MIDI are written just after the round is answered
            sizes.append(_size(run))
        assert not (app.tmp / "gradio").exists()
        assert {p.parent for p in _files(app.tmp)} and all(run in p.parents for p in _files(app.tmp))
        assert max(sizes) <= CAP_MB * 1024 * 1024, sizes
        assert len(app.round_folders()) < 4  # the oldest went to keep within the cap
        assert all(p.exists() for p in startup)  # the page's own files (its examples) stay

        app.process.send_signal(signal.SIGKILL)  # no clean-up: its folder stays ...
        app.process.wait(timeout=30)
        assert run.exists()

    (work / "app.log").rename(work / "first.log")
    with running_app(work, env=env) as app2:  # ... until the next start sweeps it
        assert not run.exists()
        assert len(list(app2.tmp.glob("ensemble-app-*"))) == 1
        assert app2.stop() == 0
    assert not _files(work / "tmp")


_TRIM_PROBE = """
import os, sys
from ensemble.listening.runs import trim_heap
def rss_mb():
    for line in open(f"/proc/{os.getpid()}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
blocks = [bytearray(60_000) for _ in range(4000)]  # ~240 MB in heap blocks (below mmap's threshold)
for b in blocks:
    b[::4096] = b"x" * len(b[::4096])  # touch every page
keep = blocks[-1]  # the top of the heap stays in use, so free() alone cannot shrink it
del blocks
before = rss_mb()
ran = trim_heap()
print(ran, before, rss_mb())
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_trim_heap_hands_freed_memory_back_to_the_system():
    """What a request freed stays resident until the allocator is asked to trim: ~240 MB of freed
    heap blocks under one live block stay in RSS; ``trim_heap`` returns them (glibc)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _TRIM_PROBE], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    ran, before, after = out[0] == "True", float(out[1]), float(out[2])
    if not ran:
        pytest.skip("this C library has no malloc_trim")
    assert before - after > 150.0, (before, after)


def test_server_caps_are_read_from_the_environment_and_bad_ones_are_named():
    from ensemble.errors import EnsembleError
    from ui.config import ServerConfig, server_config

    assert server_config({}) == ServerConfig()
    cfg = server_config({"ENSEMBLE_TRIM_SECONDS": "0", "ENSEMBLE_DISK_CAP_MB": "64", "ENSEMBLE_RATE_LIMIT": "5"})
    assert (cfg.trim_seconds, cfg.disk_cap_mb, cfg.rate_limit) == (0.0, 64.0, 5)
    with pytest.raises(EnsembleError, match=r"ENSEMBLE_TRIM_SECONDS='-1'; allowed: a finite number >= 0"):
        server_config({"ENSEMBLE_TRIM_SECONDS": "-1"})
    with pytest.raises(EnsembleError, match=r"ENSEMBLE_TRIM_SECONDS='often' is not a number"):
        server_config({"ENSEMBLE_TRIM_SECONDS": "often"})


def test_the_app_bounds_the_allocator_before_anything_is_imported(tmp_path, monkeypatch):
    """``prepare_process`` sets each allocator bound the user has not set and re-executes once (glibc
    reads them at start-up); with every bound set it does not re-execute, and what the user set
    stays."""
    import app

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    calls = []
    env = {"MALLOC_MMAP_THRESHOLD_": "131072"}
    app.prepare_process(env, exec_=lambda *a: calls.append(a), paths=())  # no jemalloc installed
    assert env["MALLOC_ARENA_MAX"] == app.ALLOCATOR["MALLOC_ARENA_MAX"] == "2"
    assert env["NUMPY_MADVISE_HUGEPAGE"] == app.ALLOCATOR["NUMPY_MADVISE_HUGEPAGE"] == "0"
    assert env["MALLOC_MMAP_THRESHOLD_"] == "131072"  # the user's own setting stays
    assert "LD_PRELOAD" not in env
    assert len(calls) == 1 and Path(env["ENSEMBLE_RUN_DIR"]).is_dir()
    calls.clear()
    env = {"MALLOC_ARENA_MAX": "4", "NUMPY_MADVISE_HUGEPAGE": "1"}
    app.prepare_process(env, exec_=lambda *a: calls.append(a), paths=())
    assert calls == [] and env["MALLOC_ARENA_MAX"] == "4" and env["NUMPY_MADVISE_HUGEPAGE"] == "1"


_HUGEPAGE_PROBE = """
import re
import numpy as np
x = np.ones(64 * 2**20 // 8)  # 64 MiB: numpy asks for huge pages from 4 MiB up, unless told not to
inside = x.ctypes.data + 2**20  # past the first, partial page (numpy advises from the next page boundary)
flags = None
for line in open("/proc/self/smaps"):
    m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
    if m:
        here = int(m.group(1), 16) <= inside < int(m.group(2), 16)
    elif here and line.startswith("VmFlags:"):
        flags = line.split()[1:]
print("hg" in flags)
"""


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads the mappings' flags from /proc")
def test_the_apps_setting_keeps_numpy_arrays_off_huge_pages():
    """What the app sets (ALLOCATOR's NUMPY_MADVISE_HUGEPAGE=0) leaves a 64 MiB array's memory without
    the huge-page advice (VmFlags 'hg' in /proc/self/smaps), which numpy's default gives it: pages
    so advised are refilled by the kernel's khugepaged after the allocator releases them, memory no
    allocator counts (README, *Memory*)."""
    import os
    import subprocess
    import sys

    import app

    def advised(setting: str | None) -> bool:
        env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
        if setting is not None:
            env["NUMPY_MADVISE_HUGEPAGE"] = setting
        out = subprocess.run([sys.executable, "-c", _HUGEPAGE_PROBE], capture_output=True, text=True, check=True,
                             env=env).stdout
        return out.strip() == "True"

    if not advised(None):
        pytest.skip("this kernel or numpy gives no huge-page advice at all: nothing to turn off")
    assert advised(app.ALLOCATOR["NUMPY_MADVISE_HUGEPAGE"]) is False


def test_the_app_preloads_jemalloc_where_it_is_installed(tmp_path, monkeypatch):
    """With a libjemalloc.so.2 on the search path (auto) the process re-executes with it preloaded
    (before what the user preloads) and the app's jemalloc settings unless the user set their own;
    ENSEMBLE_ALLOCATOR=glibc keeps glibc; 'jemalloc' without the library, or an unknown value, stops
    with a message naming the variable, the value and what is allowed."""
    import app

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    calls = []
    env = {"MALLOC_ARENA_MAX": "2", "LD_PRELOAD": "/opt/other.so"}
    app.prepare_process(env, exec_=lambda *a: calls.append(a), paths=(str(tmp_path / "missing.so"), str(lib)))
    assert env["LD_PRELOAD"] == f"{lib} /opt/other.so" and env["MALLOC_CONF"] == app.JEMALLOC_CONF
    assert len(calls) == 1
    env = {"MALLOC_CONF": "narenas:1", "LD_PRELOAD": str(lib)}  # preloaded already: kept as it is
    assert app.jemalloc_preload(env, paths=(str(lib),)) is None
    assert app.jemalloc_preload({"ENSEMBLE_ALLOCATOR": "glibc"}, paths=(str(lib),)) is None
    with pytest.raises(SystemExit, match=r"ENSEMBLE_ALLOCATOR='jemalloc' but no libjemalloc.so.2 is installed"):
        app.jemalloc_preload({"ENSEMBLE_ALLOCATOR": "jemalloc"}, paths=(str(tmp_path / "missing.so"),))
    with pytest.raises(SystemExit, match=r"ENSEMBLE_ALLOCATOR='tcmalloc'; allowed: one of auto, jemalloc, glibc"):
        app.jemalloc_preload({"ENSEMBLE_ALLOCATOR": "tcmalloc"}, paths=(str(lib),))


def _jemalloc() -> str | None:
    import app

    return next((p for p in app.JEMALLOC_PATHS if Path(p).is_file()), None)


@pytest.mark.skipif(_jemalloc() is None or not Path("/proc/self/status").exists(),
                    reason="needs libjemalloc2 installed (packages.txt) and /proc")
def test_trim_heap_purges_jemallocs_dirty_pages_at_once():
    """Under jemalloc (as the app preloads it) part of ~240 MB freed by a request stays resident as
    dirty pages until jemalloc's decay returns them (here set to 60 s; the app's default is 10 s):
    measured ~94 MB of the 247 MB peak; ``trim_heap`` purges them now (to ~18 MB)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "LD_PRELOAD": _jemalloc(), "MALLOC_CONF": "dirty_decay_ms:60000"}
    out = subprocess.run([sys.executable, "-c", _TRIM_PROBE], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1], env=env).stdout.split()
    ran, before, after = out[0] == "True", float(out[1]), float(out[2])
    assert ran
    assert before - after > 50.0 and after < before / 2, (before, after)




def _run_probe(script: str, allocator: str):
    """Run ``script`` in a fresh interpreter under glibc or jemalloc (skipped where jemalloc is not
    installed) and return the JSON it prints."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    if allocator == "jemalloc":
        if _jemalloc() is None:
            pytest.skip("needs libjemalloc2 installed (packages.txt)")
        env["LD_PRELOAD"] = _jemalloc()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    return json.loads(out)

_BREAKDOWN_PROBE = """
import json
import numpy as np
from ensemble.listening.runs import memory_breakdown, object_counts


class Probe:
    pass


a = memory_breakdown()
x = np.ones(100 * 2**20 // 8)  # 100 MiB, every page touched
b = memory_breakdown()
n0 = object_counts().get("__main__.Probe", 0)
junk = [[Probe()] for _ in range(200_000)]  # 200k small lists, each holding an object of its own class
c = memory_breakdown()
print(json.dumps([a, b, c, object_counts().get("__main__.Probe", 0) - n0, object_counts().get("builtins.list", 0)]))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
@pytest.mark.parametrize("allocator", ["glibc", "jemalloc"])
def test_memory_breakdown_says_where_a_known_allocation_went(allocator):
    """A 100 MiB array shows as +100 MiB of RSS (+-10), all of it anonymous memory, and under jemalloc
    as +100 to +125 MiB allocated and resident in jemalloc (its size class); 200k small lists as >= 190k
    more Python blocks and collector-tracked objects, and object_counts finds exactly the 200k
    instances of the probe's class (ENSEMBLE_MEMORY_LOG's diagnosis of a soak)."""
    a, b, c, probes, lists = _run_probe(_BREAKDOWN_PROBE, allocator)
    assert b["rss_mb"] - a["rss_mb"] == pytest.approx(100.0, abs=10.0)
    assert b["rss_anon_mb"] - a["rss_anon_mb"] == pytest.approx(100.0, abs=10.0)
    assert abs(b["rss_file_mb"] - a["rss_file_mb"]) < 5.0
    assert probes == 200_000 and lists >= 200_000
    assert c["python_blocks"] - b["python_blocks"] >= 190_000 and c["gc_objects"] - b["gc_objects"] >= 190_000
    if allocator == "jemalloc":
        for key in ("allocated_mb", "resident_mb"):  # a large block is rounded up to its size class (112 MiB)
            assert 95.0 <= b[key] - a[key] <= 125.0, (key, a[key], b[key])
        assert a["arenas"] >= 1
    else:
        assert "allocated_mb" not in a


_RELEASE_PROBE = """
import gc, json, os
import numpy as np
from ensemble.listening.runs import memory_breakdown, release_memory


class Node:  # a figure in miniature: objects that refer to each other, one holding a large buffer
    pass


gc.disable()  # the collector's own thresholds would free the cycles at some point: only release_memory may
before = memory_breakdown()["rss_mb"]
for _ in range(20):
    a, b = Node(), Node()
    a.other, b.other, a.buffer = b, a, np.ones(10 * 2**20 // 8)  # 10 MiB, every page touched
del a, b
held = memory_breakdown()["rss_mb"]
released = release_memory()
print(json.dumps([before, held, memory_breakdown()["rss_mb"], released]))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
@pytest.mark.parametrize("allocator", ["glibc", "jemalloc"])
def test_release_memory_frees_what_only_the_cycle_collector_can(allocator):
    """20 unreachable pairs of objects that refer to each other, each holding 10 MiB, stay resident
    (200 MiB) while the collector is off; release_memory (what the app runs after every round) finds
    the 40 objects and the RSS drops by 200 MiB (+-20) -- under glibc and under jemalloc."""
    before, held, after, released = _run_probe(_RELEASE_PROBE, allocator)
    assert held - before == pytest.approx(200.0, abs=20.0)
    assert held - after == pytest.approx(200.0, abs=20.0)
    assert released["collected"] >= 40 and released["trimmed"] is True and released["gc_ms"] >= 0.0
