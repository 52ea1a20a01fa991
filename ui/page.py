"""The Gradio page: Generate, Listen & rate, Results; and the named API endpoints.

Each tab is built, with its handlers, by its own module; this one holds the page's configuration,
theme and CSS, and :func:`build_page`, which lays out the tabs and wires the events between them.
Events (UI-only events are private: not in the API docs, not callable by clients):

* Upload (private): the clip is read at once and the status line says what it is, or what is wrong
  with it (not audio, too short, too long, silent) before Generate is pressed.
* Generate (``/generate``, :mod:`ui.generate_tab`): read the upload, check the settings, show the
  input's report card as soon as it is analysed, run the round with a progress bar per stage, then
  fill the grid of candidate cards and switch to *Listen & rate* (:mod:`ui.listen_tab`). When it
  fails, a ``.failure`` event writes the reason into the status line, where it stays.
* Submit ranking (private, :mod:`ui.listen_tab`): an invalid submission is told why under the button
  and writes nothing; a valid one is appended under the log's lock, then the figures and scores are
  revealed and the Results tab (:mod:`ui.results_tab`) refreshed.
* Make the take (private): a candidate's take (mix, stems, MIDI) as a zip, once the round is rated
  or when it is not blind.
* ``/rate``, ``/summary``, ``/candidate_audio`` and ``/take``: endpoints for ``gradio_client`` (see
  the README's API section).

Errors (:mod:`ui.errors`): :class:`ensemble.EnsembleError` becomes a ``gr.Error`` with its message;
anything else is logged with its traceback on the server and shown as a short generic message.
Per-user data (the session id, the current round) lives in ``gr.State``; the rounds' files belong to
a :class:`ensemble.listening.store.RoundStore`. Every limit (clip length, target, K) comes from the
engine's :class:`ensemble.engine.Limits`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from ensemble.engine import Engine
from ensemble.listening.round import Foreground, new_session_id
from ensemble.listening.store import RoundStore
from ensemble.ratings.fit import ranking_line
from ensemble.ratings.log import sanitize_rater_id
from ui.config import ServerConfig
from ui.errors import LastErrors, make_show_failure
from ui.generate_tab import build_generate_tab, make_check_upload, make_generate
from ui.guard import RateLimiter
from ui.listen_tab import (
    build_listen_tab,
    make_candidate_audio_api,
    make_clear_round,
    make_rate_api,
    make_rate_ui,
    make_show_round,
    make_switch_audio,
    make_take_api,
    make_take_ui,
)
from ui.results_tab import build_results_tab, make_ratings_api, make_results, make_summary_api
from ui.study_tab import build_study_tab, wire_study_tab

__all__ = ["PageConfig", "build_page", "THEME", "CSS"]

THEME = gr.themes.Default(primary_hue="orange", secondary_hue="blue")
CSS = """
.card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px;
        max-width: calc(50% - var(--layout-gap)); }
#summary-text textarea { font-family: var(--font-mono); font-size: 12px; }
"""


@dataclass
class PageConfig:
    """Where the page reads and writes, and its defaults.

    Attributes:
        ratings_file: the ratings log (``ui.config.ratings_path()``).
        store: holds the rounds' files.
        examples: example clips shown under the upload.
        engine_lock: held while the engine renders (one request at a time on a small CPU, and the
            start-up warm-up).
        default_k, default_target_seconds: the Generate tab's starting values.
        foreground: the requests in progress; a round's background work gives way to them.
    """

    ratings_file: Path
    store: RoundStore
    examples: list[Path] = field(default_factory=list)
    engine_lock: threading.Lock = field(default_factory=threading.Lock)
    default_k: int = 4
    default_target_seconds: float = 30.0
    studies_root: Path | None = None  # prepared studies, served at ?study=NAME (ui.study_tab); None: none
    server: ServerConfig = field(default_factory=ServerConfig)  # caps and keys (ui.config.server_config)
    foreground: Foreground = field(default_factory=Foreground)


def on_load(request: gr.Request):
    """Page load: a new session id, and the rater id from ``?rater=NAME`` when given (sanitised).

    Named ``on_load``: Gradio names the (private) event after the function.
    """
    rater = request.query_params.get("rater") if request is not None else None
    return new_session_id(), (sanitize_rater_id(rater) if rater else gr.skip())


def build_page(engine: Engine, config: PageConfig, *, title: str = "ensemble") -> gr.Blocks:
    """The whole page, wired to ``engine``; see the module docstring for the events.

    Args:
        engine: the loaded engine; its limits bound the page's inputs (K cards at most).
        config: where the page reads and writes, and its defaults.
        title: the page's title and heading.

    Returns:
        The page, queued (at most 4 events at once, and one round rendering at a time).
    """
    store, ratings_file = config.store, config.ratings_file
    with gr.Blocks(title=title, analytics_enabled=_analytics_enabled(),
                   delete_cache=(1800, 6 * 3600)) as demo:
        session_state = gr.State(None)
        round_state = gr.State(None)
        gr.Markdown(
            f"# {title}\n"
            "Upload or record a short melody. The app retrieves **Top-K continuations** from an audio "
            "database (style relevance + seam coherence), has a band of neural instruments play along, "
            "and lets you audition and **rank** them side by side. Rankings go to a ratings log "
            "(Results tab).")
        with gr.Tabs(selected="generate") as tabs:
            gen = build_generate_tab(engine, examples=config.examples, default_k=config.default_k,
                                     default_target_seconds=config.default_target_seconds)
            listen = build_listen_tab(engine.config.limits.max_k)
            res = build_results_tab(config.studies_root)
            study = build_study_tab(config.studies_root) if config.studies_root is not None else None
        with gr.Accordion("About this app", open=False):
            gr.Markdown(
                f"Models `{engine.model_version}`, RAG database `{engine.db.version}` "
                f"({engine.db.n_chunks} segments). Audio is served as WAV at your recording's own "
                "sample rate and channels (your own audio in the input part; PCM-24 for a 24-bit or "
                "float upload, else PCM-16), never peak-normalised, so loudness differences are real; "
                "tick *Loudness-matched playback* to hear every candidate at your clip's loudness. "
                "API: see *Use via API* below.")

        # the events, in this order (it numbers them in the page's config)
        results_fn = make_results(ratings_file, exports_root=store.root,
                                  ranking=ranking_line(engine.weights, engine.weights_note),
                                  researcher_key=config.server.researcher_key, studies_root=config.studies_root)
        demo.load(on_load, None, [session_state, gen.rater], api_visibility="private")
        demo.load(results_fn, res.inputs, res.outputs, api_visibility="private")
        last_errors = LastErrors()  # a failed Generate's reason, kept in the status line
        limiter = RateLimiter(config.server.rate_limit)  # shared by /generate and /rate, per client
        generating = (
            gen.generate_btn
            .click(make_clear_round(listen), None, listen.clear_outputs(round_state),
                   api_visibility="private", queue=False)
            .then(make_generate(engine, store=store, engine_lock=config.engine_lock, last_errors=last_errors,
                                limiter=limiter, study_only=config.server.study_only,
                                foreground=config.foreground),
                  # the handler's parameters, in order; timbre came last, so that API clients passing
                  # the first twelve positionally keep working
                  [gen.audio_in, gen.target, gen.k_in, gen.alpha, gen.beta, gen.lookbacks, gen.followers,
                   gen.transpose, gen.seed, gen.blind, listen.matched, gen.rater, gen.timbre, session_state],
                  [gen.report, gen.status, gen.round_json, gen.files_out, round_state, session_state],
                  api_name="generate", concurrency_limit=1, concurrency_id="engine",
                  show_progress_on=[gen.status]))
        generating.then(make_show_round(listen), [round_state, listen.matched], listen.show_outputs(tabs),
                        api_visibility="private")
        generating.failure(make_show_failure(last_errors, heading="Not generated"), None, [gen.status],
                           api_visibility="private", show_progress="hidden")
        gen.audio_in.change(make_check_upload(engine), [gen.audio_in], [gen.status], api_visibility="private",
                            show_progress="hidden")
        listen.take_btn.click(make_take_ui(listen), [round_state, listen.take_pick], [listen.take_file],
                              api_visibility="private")
        listen.matched.change(make_switch_audio(listen), [round_state, listen.matched], listen.audios,
                              api_visibility="private")
        (listen.submit
         .click(make_rate_ui(listen, ratings_file=ratings_file, rater_salt=config.server.rater_salt),
                [round_state, gen.rater, listen.favourite, listen.comment, *listen.ranks],
                listen.rate_outputs(), api_visibility="private")
         .success(results_fn, res.inputs, res.outputs, api_visibility="private"))
        res.refresh.click(results_fn, res.inputs, res.outputs, api_visibility="private")
        res.key.submit(results_fn, res.inputs, res.outputs, api_visibility="private")
        res.tab.select(results_fn, res.inputs, res.outputs, api_visibility="private")
        res.source.input(results_fn, res.inputs, res.outputs, api_visibility="private")
        gr.api(make_rate_api(store, ratings_file=ratings_file, limiter=limiter,
                                 rater_salt=config.server.rater_salt), api_name="rate")
        reads = RateLimiter(config.server.read_rate_limit)  # the endpoints that only read, per client
        gr.api(make_candidate_audio_api(store, limiter=reads), api_name="candidate_audio")
        gr.api(make_take_api(store, limiter=reads), api_name="take")
        gr.api(make_summary_api(ratings_file, researcher_key=config.server.researcher_key, limiter=reads),
               api_name="summary")
        gr.api(make_ratings_api(ratings_file, exports_root=store.root, researcher_key=config.server.researcher_key,
                                limiter=reads), api_name="ratings")
        if study is not None:
            wire_study_tab(demo, study, tabs)
    demo.queue(default_concurrency_limit=4)
    return demo


def _analytics_enabled() -> bool:
    return os.environ.get("GRADIO_ANALYTICS_ENABLED", "False").strip().lower() in ("1", "true", "yes")
