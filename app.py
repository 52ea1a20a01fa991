"""The web app: upload a clip, audition Top-K band continuations side by side, rank them.

    pip install -r requirements.txt && python app.py        # http://127.0.0.1:7860

``build_demo(engine)`` builds the page (:mod:`ui.page`, one module per tab; request work in
:mod:`ensemble.listening`); the engine (decoders, arranger, RAG database, drum database) is loaded
once, here, from an :class:`ensemble.engine.EngineConfig` (which also declares every request limit),
and shared by every request. Library errors (:class:`ensemble.EnsembleError`) reach the user as a
``gr.Error`` with their message (``ui.errors.user_errors``); anything else is logged with its
traceback and shown as a short generic message.

Environment:
    GRADIO_SERVER_NAME, GRADIO_SERVER_PORT   where to serve (default 127.0.0.1:7860; Spaces sets them)
    GRADIO_ANALYTICS_ENABLED                 default False (Gradio would otherwise call outside hosts)
    ENSEMBLE_CHECKPOINTS                     default checkpoints/ (decoders and arranger)
    ENSEMBLE_DATABASE                        default assets/rag (the RAG database)
    ENSEMBLE_DRUMS                           default assets/drums (drum database, harmony model)
                                             (the three defaults are EngineConfig's)
    ENSEMBLE_WEIGHTS                         a weights file fitted to the ratings (`python -m ensemble
                                             ratings fit`) that ranks instead of the hand-set composite;
                                             if it cannot be used the app serves with the hand-set
                                             weights and says so (log, Results tab)
    RATINGS_DIR                              the ratings log's folder (ui.config.ratings_dir)
    STUDIES_DIR                              prepared studies, served at ?study=NAME (default: studies/ in
                                             the ratings folder; ui.study_tab.studies_root)
    ENSEMBLE_WARMUP                          1 (default): one tiny request right after start-up, so the
                                             first user does not pay the one-off compilation
    ENSEMBLE_MAX_UPLOAD_MB, ENSEMBLE_RATE_LIMIT, ENSEMBLE_READ_RATE_LIMIT, ENSEMBLE_DISK_CAP_MB
                                             caps: upload size, requests per minute per client (Generate
                                             and /rate; the endpoints that only read), the run folder's
                                             size (ui.config.ServerConfig)
    ENSEMBLE_RESEARCHER_KEY, ENSEMBLE_RATER_SALT
                                             who sees raters' data; rater ids logged as a salted hash
    ENSEMBLE_STUDY_ONLY                      1: free mode's /generate is off while a study runs
    ENSEMBLE_TRIM_SECONDS                    how often the allocator's free memory goes back to the
                                             system (default 20; 0: never)
    ENSEMBLE_ALLOCATOR                       auto (default: jemalloc when libjemalloc2 is installed,
                                             else glibc), jemalloc (required) or glibc
    MALLOC_ARENA_MAX, NUMPY_MADVISE_HUGEPAGE, GRADIO_TEMP_DIR
                                             set by prepare_process (2 and 0: ALLOCATOR; this run's own
                                             folder) unless set; MALLOC_MMAP_THRESHOLD_=131072 (not set
                                             by the app) trades speed for flat memory: see ALLOCATOR

Every file of a run (rounds, and Gradio's uploads and cached outputs) lives in one folder,
``$TMPDIR/ensemble-app-<pid>-<random>``, removed at shutdown; the next start removes what a killed run
left (``ensemble.listening.runs``).
"""

from __future__ import annotations

import os
import sys

# Before Gradio is imported: it reads this setting at import and when a Blocks is built.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# glibc's allocator, bounded (read only when the process starts):
ALLOCATOR = {
    # arenas: one per thread by default, and Gradio's threads each keep one
    "MALLOC_ARENA_MAX": "2",
    # numpy asks the kernel for transparent huge pages on every array of 4 MB or more
    # (madvise(MADV_HUGEPAGE)). The flag stays on the address range after the array is freed, so
    # when the allocator hands the pages back (purge, trim) the kernel's khugepaged fills 2 MB pages
    # there again, behind the allocator's back: measured in a 4-client soak, 84 such ranges held
    # 258 MB of the server's RSS (136 MB of it in huge pages) that no allocator counted, and that
    # part grew ~6 MB a minute. Without it the ranges stay released.
    "NUMPY_MADVISE_HUGEPAGE": "0",
}
# jemalloc, where the system has it (Debian/Ubuntu package libjemalloc2; on Hugging Face Spaces
# packages.txt installs it): preloaded by prepare_process unless ENSEMBLE_ALLOCATOR=glibc. Its arenas
# return freed pages to the system on their own (a background thread purges pages unused for ~10 s),
# where glibc's heap keeps a request's freed holes resident (measured: README, *Memory*).
ALLOCATORS = ("auto", "jemalloc", "glibc")
JEMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
                  "/usr/lib64/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2")
JEMALLOC_CONF = "background_thread:true"  # default decay (10 s); 1 s decay or 2 arenas: extend 3.0 -> 4.6 s
# Not set, measured (benchmarks/results/soak_allocator/, soak.json): MALLOC_MMAP_THRESHOLD_=131072 keeps
# the RSS flat (glibc otherwise raises its mmap threshold after each large free, up to 32 MiB, so a
# request's arrays move into the heap, whose freed holes stay resident: +18-36 % in a 4-client soak,
# +10.0 % in 30 minutes with the fixed threshold) but makes every torch temporary a fresh mapping:
# extend 3.5 s -> 8.4 s. 4 MiB is as fast as the default and grows as much (+31.8 %). A deployment
# that prefers flat memory to speed sets it in the environment; the app leaves it as set.


def prepare_process(env=os.environ, *, exec_=os.execv, paths=JEMALLOC_PATHS) -> None:
    """Before anything heavy is imported (``python app.py`` only): this run's own temporary folder,
    earlier runs' leftovers removed, and a bounded allocator.

    * Sweeps the run folders of servers that are gone (:func:`ensemble.listening.runs.sweep_earlier_runs`)
      and makes this run's, ``ENSEMBLE_RUN_DIR``; Gradio writes there too (``GRADIO_TEMP_DIR``, unless
      the user set it), so one folder holds every file of the run, deleted at shutdown.
    * The allocator: jemalloc preloaded where installed (:func:`jemalloc_preload`,
      ``ENSEMBLE_ALLOCATOR``), glibc's bounds and no huge pages for numpy's arrays (:data:`ALLOCATOR`:
      ``MALLOC_ARENA_MAX=2``, ``NUMPY_MADVISE_HUGEPAGE=0``, each unless
      set). Both are read only when the process starts, so the process re-executes itself once (same
      pid, same arguments) with them in the environment.
    """
    if env.get("ENSEMBLE_RUN_DIR"):
        return  # prepared already (this is the re-executed process)
    from ensemble.listening.runs import new_run_folder, sweep_earlier_runs

    removed = sweep_earlier_runs()
    run = new_run_folder()
    env["ENSEMBLE_RUN_DIR"] = str(run)
    env["ENSEMBLE_SWEPT"] = str(len(removed))
    if not env.get("GRADIO_TEMP_DIR", "").strip():
        env["GRADIO_TEMP_DIR"] = str(run)
    unset = [name for name in ALLOCATOR if not env.get(name, "").strip()]
    for name in unset:
        env[name] = ALLOCATOR[name]
    preload = jemalloc_preload(env, paths=paths)
    if preload:
        env["LD_PRELOAD"] = preload
        env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    if unset or preload:
        sys.stdout.flush()
        exec_(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def jemalloc_preload(env=os.environ, *, paths=JEMALLOC_PATHS) -> str | None:
    """The ``LD_PRELOAD`` that puts jemalloc under this process, or None (glibc stays: asked for
    with ``ENSEMBLE_ALLOCATOR=glibc``, not installed, or preloaded already).

    Raises:
        SystemExit: ``ENSEMBLE_ALLOCATOR`` is not one of :data:`ALLOCATORS`, or ``jemalloc`` is asked
            for and not installed (the message names the variable, the value and what is allowed).
    """
    choice = env.get("ENSEMBLE_ALLOCATOR", "auto").strip() or "auto"
    if choice not in ALLOCATORS:
        raise SystemExit(f"error: ENSEMBLE_ALLOCATOR={choice!r}; allowed: one of {', '.join(ALLOCATORS)}")
    if choice == "glibc":
        return None
    found = next((p for p in paths if os.path.isfile(p)), None)
    if found is None:
        if choice == "jemalloc":
            raise SystemExit("error: ENSEMBLE_ALLOCATOR='jemalloc' but no libjemalloc.so.2 is installed "
                             f"(looked in {', '.join(paths)}); install libjemalloc2 or set it to 'auto' or 'glibc'")
        return None
    current = env.get("LD_PRELOAD", "")
    if "libjemalloc" in current:
        return None
    return f"{found} {current}".strip()


if __name__ == "__main__":
    prepare_process()

import atexit  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from ensemble.audio import LoadedAudio  # noqa: E402
from ensemble.engine import Engine, EngineConfig  # noqa: E402
from ensemble.errors import EnsembleError  # noqa: E402
from ensemble.listening.round import make_round  # noqa: E402
from ensemble.listening.runs import memory_breakdown, object_counts, release_memory  # noqa: E402
from ensemble.listening.settings import Settings  # noqa: E402
from ensemble.listening.store import RoundStore  # noqa: E402
from ui.config import ServerConfig, ratings_path, server_config  # noqa: E402
from ui.page import CSS, THEME, PageConfig, build_page  # noqa: E402
from ui.study_tab import studies_root  # noqa: E402

ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "assets" / "examples"
TITLE = "ensemble: continue your melody with a band"
log = logging.getLogger("ensemble.app")


def build_demo(engine: Engine, *, ratings_file: str | os.PathLike | None = None,
               store: RoundStore | None = None, engine_lock: threading.Lock | None = None,
               server: ServerConfig | None = None) -> gr.Blocks:
    """The page, wired to a loaded engine.

    Args:
        engine: from :meth:`ensemble.engine.Engine.load`.
        ratings_file: the ratings log; default ``ui.config.ratings_path()`` (``$RATINGS_DIR``,
            Spaces' ``/data``, else ``ratings/`` in this checkout).
        store: owner of the rounds' temporary files (default: a fresh temporary folder).
        engine_lock: serialises rendering with the start-up warm-up.
        server: caps and keys (default: ``ui.config.server_config()``, from the environment).
    """
    config = PageConfig(
        ratings_file=Path(ratings_file) if ratings_file else ratings_path(ROOT / "ratings"),
        store=store if store is not None else RoundStore(), examples=sorted(EXAMPLES.glob("*.wav")),
        engine_lock=engine_lock if engine_lock is not None else threading.Lock(),
        studies_root=studies_root(ROOT / "ratings"),
        server=server if server is not None else server_config())
    return build_page(engine, config, title=TITLE)


def warm_up(engine: Engine, store: RoundStore, lock: threading.Lock) -> None:
    """One small round (a 4 s synthetic melody, K = 1) so numba/librosa compile before a user waits."""
    t = time.perf_counter()
    sr = engine.config.features.sample_rate
    notes = np.repeat(440.0 * 2.0 ** (np.array([0, 2, 4, 5, 7, 5, 4, 2]) / 12.0), sr // 2)
    audio = (0.3 * np.sin(2 * np.pi * np.cumsum(notes) / sr)).astype(np.float32)
    clip = LoadedAudio(audio, sample_rate=sr, source_sample_rate=sr, source_channels=1, silent=False)
    _, folder = store.new_folder()
    try:
        with lock:
            make_round(engine, clip, Settings(target_seconds=6.0, k=1, blind=False), folder=folder)
        log.info("warm-up done in %.1f s", time.perf_counter() - t)
        # what start-up and the warm-up made lives as long as the server: out of the cycle collector's
        # sight, so that its run after every round (_trim_heap_every) walks only what requests made
        gc.collect()
        gc.freeze()
    except Exception:
        log.exception("warm-up failed (the app still serves; the first request will be slower)")
    finally:
        store.discard_folder(folder)


def engine_config(env: Mapping[str, str] | None = None) -> EngineConfig:
    """The engine's configuration: ``EngineConfig``'s defaults, folders overridden by the environment.

    Args:
        env: where to read ``ENSEMBLE_CHECKPOINTS``, ``ENSEMBLE_DATABASE``, ``ENSEMBLE_DRUMS`` and
            ``ENSEMBLE_WEIGHTS``; ``None`` reads :data:`os.environ`.
    """
    env = os.environ if env is None else env
    default = EngineConfig()
    return EngineConfig(checkpoints_dir=env.get("ENSEMBLE_CHECKPOINTS", default.checkpoints_dir),
                        database_dir=env.get("ENSEMBLE_DATABASE", default.database_dir),
                        drums_dir=env.get("ENSEMBLE_DRUMS", default.drums_dir),
                        weights=env.get("ENSEMBLE_WEIGHTS") or None)


def _stop(signum, frame):  # SIGTERM -> the same clean shutdown as Ctrl-C (temporary files removed)
    raise KeyboardInterrupt


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    t0 = time.perf_counter()
    try:
        engine = Engine.load(engine_config(), bad_weights="hand-set")  # a bad weights file: hand-set, logged
    except EnsembleError as exc:
        print(f"error: cannot load the models and databases: {exc}", file=sys.stderr)
        return 2
    log.info("engine loaded in %.1f s since start (models %s, database %s, %d segments, weights %s)",
             time.perf_counter() - t0, engine.model_version, engine.db.version, engine.db.n_chunks,
             engine.weights)
    try:
        server = server_config()
    except EnsembleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # this run's folder (prepare_process): the rounds and, unless the user chose GRADIO_TEMP_DIR,
    # everything Gradio writes; deleted at shutdown
    run = os.environ.get("ENSEMBLE_RUN_DIR") or None
    wake = threading.Event()  # a stored round wakes the allocator trim (_trim_heap_every)
    store = RoundStore(run, max_bytes=int(server.disk_cap_mb * 1024 * 1024),
                       on_add=wake.set if server.trim_seconds > 0 else None)
    atexit.register(store.close)
    log.info("files of this run: %s (GRADIO_TEMP_DIR %s, disk cap %g MB; %s earlier run folders removed); "
             "allocator %s; MALLOC_ARENA_MAX=%s, MALLOC_MMAP_THRESHOLD_=%s", store.root,
             os.environ.get("GRADIO_TEMP_DIR"), server.disk_cap_mb, os.environ.get("ENSEMBLE_SWEPT", "0"),
             "jemalloc" if "libjemalloc" in os.environ.get("LD_PRELOAD", "") else "glibc",
             os.environ.get("MALLOC_ARENA_MAX", "unset"), os.environ.get("MALLOC_MMAP_THRESHOLD_", "unset"))
    signal.signal(signal.SIGTERM, _stop)
    try:
        _serve(engine, store, server, wake)
    except KeyboardInterrupt:  # SIGTERM or Ctrl-C before Gradio's own loop caught it: the same clean exit
        log.info("stopped before the server was up")
    return 0


def _trim_heap_every(seconds: float, wake: threading.Event, memory_log: str = "") -> None:
    """After every stored round (``wake``, set by the round store) and at least every ``seconds``:
    the requests' cyclic garbage collected and the allocator's free memory back to the system
    (:func:`ensemble.listening.runs.release_memory`), so the server's resident memory follows what it
    holds, not what the last requests freed. With ``memory_log`` (a diagnosis,
    ``ENSEMBLE_MEMORY_LOG``), each time one JSON line of where the memory is is appended to that file
    (:func:`ensemble.listening.runs.memory_breakdown`), and every 25th time the Python object types
    whose count changed most since the first (``object_growth``; :func:`ensemble.listening.runs.object_counts`)."""
    first_counts, readings = None, 0
    while True:
        wake.wait(seconds)
        wake.clear()
        released = release_memory()
        if not released["trimmed"]:
            log.info("the C library cannot trim its heap here; resident memory is not trimmed")
            return
        if memory_log:
            try:
                line = {"time": round(time.time(), 2), "gc_ms": released["gc_ms"],
                        "gc_collected": released["collected"], **memory_breakdown()}
                readings += 1
                if first_counts is None:
                    first_counts = object_counts()
                elif readings % 25 == 0:
                    now = object_counts()
                    change = {k: now.get(k, 0) - first_counts.get(k, 0) for k in set(now) | set(first_counts)}
                    line["object_growth"] = dict(sorted(change.items(), key=lambda kv: -abs(kv[1]))[:20])
                with open(memory_log, "a") as f:
                    f.write(json.dumps(line) + "\n")
            except OSError as e:
                log.warning("ENSEMBLE_MEMORY_LOG=%r cannot be written (%s); the memory log stops", memory_log, e)
                memory_log = ""


def _serve(engine: Engine, store: RoundStore, server, wake: threading.Event) -> None:
    """Build the page and serve it until Ctrl-C or SIGTERM (Gradio's loop closes the server)."""
    lock = threading.Lock()
    demo = build_demo(engine, store=store, engine_lock=lock, server=server)
    if os.environ.get("ENSEMBLE_WARMUP", "1").strip() not in ("0", "false", "False", ""):
        threading.Thread(target=warm_up, args=(engine, store, lock), name="warm-up", daemon=True).start()
    if server.trim_seconds > 0:
        threading.Thread(target=_trim_heap_every, name="heap-trim", daemon=True,
                         args=(server.trim_seconds, wake, os.environ.get("ENSEMBLE_MEMORY_LOG", "").strip())).start()
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                theme=THEME, css=CSS, allowed_paths=[str(EXAMPLES)],
                max_file_size=int(server.max_upload_mb * 1024 * 1024),
                # Gradio's own refusals (a path that was not uploaded) reach the client in words; every
                # handler turns its own errors into gr.Error already (ui.errors), so nothing else shows
                show_error=True)


if __name__ == "__main__":
    sys.exit(main())
