"""The Gradio page: Generate, Listen & rate, Results; and the named API endpoints.

Events and what they do (UI-only events are private: not in the API docs, not callable by clients):

* Generate (``/generate``): read the upload, check the settings, show the input's report card as
  soon as it is analysed, run the round (:func:`ui.rounds.make_round`) with a progress bar per
  stage, then fill the grid of candidate cards and switch to *Listen & rate*.
* Submit ranking (private): the rater's distinct ranks 1..K, favourite and comment are checked by
  :func:`ensemble.ratings.validate_submission`; an invalid submission gets a ``gr.Warning`` and
  writes nothing; a valid one is appended under the log's lock, then the scores are revealed and the
  Results tab refreshed.
* ``/rate`` and ``/summary``: JSON endpoints for ``gradio_client`` (see the README's API section).

Errors: :class:`ensemble.EnsembleError` becomes a ``gr.Error`` with its message; anything else is
logged with its traceback on the server and shown as a short generic message. Per-user data (the
session id, the current round) lives in ``gr.State``; the rounds' files belong to a
:class:`ui.rounds.RoundStore`.
"""

from __future__ import annotations

import functools
import html
import inspect
import io
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from ensemble.errors import EnsembleError
from ensemble.extend import Engine
from ensemble.metrics import figure_png, report_card
from ensemble.perform import FOLLOWERS
from ensemble.ratings import (
    RATINGS_COLUMNS,
    append_submission,
    first_choice_figure,
    format_summary,
    mean_rank_figure,
    read_ratings,
    sanitize_rater_id,
    summarize,
)
from ui.rounds import (
    MAX_INPUT_SECONDS,
    MIN_INPUT_SECONDS,
    Round,
    RoundStore,
    analyse_input,
    check_settings,
    make_round,
    new_session_id,
    read_clip,
    write_figure,
)

__all__ = ["MAX_CANDIDATES", "PageConfig", "build_page", "THEME", "CSS"]

log = logging.getLogger("ensemble.app")

MAX_CANDIDATES = 10
CARDS_PER_ROW = 2
LOG_ROWS_SHOWN = 300
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
        ratings_file: the ratings log (``ensemble.ratings.ratings_path()``).
        store: holds the rounds' files.
        examples: example clips shown under the upload.
        engine_lock: held while the engine renders (one request at a time on a small CPU, and the
            start-up warm-up).
        default_k, default_target_seconds: the Generate tab's starting values.
    """

    ratings_file: Path
    store: RoundStore
    examples: list[Path] = field(default_factory=list)
    engine_lock: threading.Lock = field(default_factory=threading.Lock)
    default_k: int = 4
    default_target_seconds: float = 30.0


# ------------------------------------------------------------------------------------------ errors


def _message(exc: BaseException) -> str:
    # gr.Error renders its message as HTML; user text (file names) must not become markup
    return html.escape(str(exc), quote=False)


def _internal(what: str, exc: BaseException) -> gr.Error:
    ref = f"{time.strftime('%Y%m%d-%H%M%S')}-{id(exc) % 10000:04d}"
    log.error("%s failed (ref %s)", what, ref, exc_info=exc)
    return gr.Error(f"{what} failed because of a problem on the server (ref {ref}); it has been "
                    "logged. Please try again.", print_exception=False)


def user_errors(what: str) -> Callable:
    """Decorator: EnsembleError -> gr.Error(message); other exceptions -> logged + generic gr.Error.

    Works on plain functions and generators (Gradio streams a generator's yields), keeping the
    signature Gradio inspects (``gr.Progress`` defaults, ``gr.Request`` hints).
    """

    def decorate(fn: Callable) -> Callable:
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except gr.Error:
                    raise
                except EnsembleError as exc:
                    raise gr.Error(_message(exc), print_exception=False) from None
                except Exception as exc:
                    raise _internal(what, exc) from None
            return gen

        @functools.wraps(fn)
        def plain(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except EnsembleError as exc:
                raise gr.Error(_message(exc), print_exception=False) from None
            except Exception as exc:
                raise _internal(what, exc) from None
        return plain

    return decorate


# ------------------------------------------------------------------------------------------ text


def _fmt(x: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:{spec}}{unit}"


def _scores_md(rnd: Round, i: int) -> str:
    s = rnd.shown[i].scores()
    seam = rnd.shown[i].seam
    lines = [
        f"**Composite rank {s['composite_rank']} of {rnd.k}**"
        + (" (fallback pass)" if s["fallback"] else ""),
        f"composite **{s['composite']:.3f}** = {rnd.alpha:g} x relevance {s['relevance']:.3f} "
        f"+ {rnd.beta:g} x coherence {s['coherence']:.3f}",
        f"lookback {s['lookback_s']:g} s, transpose {s['transpose']:+d} st; from {s['track']} at "
        f"{s['start_seconds']:.1f} s (chunk {s['db_chunk_idx']})",
    ]
    if seam is not None:
        lines.append(f"seam: pitch jump {_fmt(seam.pitch_jump_cents, '+.0f', ' cents')}, loudness jump "
                     f"{seam.loudness_jump_db:+.1f} dB")
    return "  \n".join(lines)


def _round_status(rnd: Round) -> str:
    total = rnd.timings.get("total", sum(rnd.timings.values()))
    parts = [f"**{rnd.k} candidate{'s' if rnd.k != 1 else ''}** of {rnd.target_seconds:g} s for your "
             f"{rnd.input_seconds:.1f} s clip (alpha {rnd.alpha:g}, beta {rnd.beta:g}), "
             f"made in {total:.0f} s."]
    if rnd.blind:
        parts.append("Blind mode: shown in shuffled order"
                     + ("; your ranking is saved and the scores are revealed on each card."
                        if rnd.submission_id else ", scores hidden until you submit."))
    else:
        parts.append("Shown in composite-score order (1 = the system's best).")
    parts += [f"Note: {n}" for n in rnd.notes]
    if rnd.submission_id is None:
        parts.append("Listen to every candidate, give each a distinct rank (1 = best), then submit.")
    return "  \n".join(parts)


# ------------------------------------------------------------------------------------------ page


def build_page(engine: Engine, config: PageConfig, *, title: str = "ensemble") -> gr.Blocks:
    """The whole page, wired to ``engine``; see the module docstring for the events."""
    store = config.store
    db_cfg = engine.db.config
    lookback_choices = [(f"{x:g} s", float(x)) for x in db_cfg.lookbacks]

    # ----------------------------------------------------------------- handlers (closures)

    def on_load(request: gr.Request):
        rater = request.query_params.get("rater") if request is not None else None
        return new_session_id(), (sanitize_rater_id(rater) if rater else gr.skip())

    @user_errors("Generating")
    def generate(audio, target_seconds, k, alpha, beta, lookbacks, followers, transpose, seed, blind,
                 loudness_matched, rater_id, session_id, progress=gr.Progress()):
        started = time.perf_counter()
        session_id = session_id or new_session_id()
        progress(0.0, desc="reading your clip")
        clip = read_clip(audio)
        settings = check_settings(target_seconds=target_seconds, k=k, alpha=alpha, beta=beta,
                                  lookbacks=lookbacks, followers=followers, transpose=transpose,
                                  seed=seed, blind=blind, input_seconds=clip.seconds)
        round_id, folder = store.new_folder()
        try:
            progress(0.02, desc="analysing your clip")
            folder.mkdir(parents=True)
            analysis = analyse_input(clip.audio)
            png = write_figure(report_card(analysis, title=f"Your clip ({clip.seconds:.1f} s)"),
                               folder / "input_report.png")
            report_s = time.perf_counter() - started
            yield (png, f"Analysed your {clip.seconds:.1f} s clip; retrieving and performing "
                        f"{settings.k} candidates...", gr.skip(), gr.skip(), gr.skip(), session_id)
            if not config.engine_lock.acquire(blocking=False):
                progress(0.05, desc="waiting for the engine (warming up or busy)")
                config.engine_lock.acquire()
            try:
                rnd = make_round(engine, clip, settings, folder=folder, input_analysis=analysis,
                                 report_png=png, rater_id=rater_id or "", session_id=session_id,
                                 round_id=round_id,
                                 progress=lambda f, m: progress(0.05 + 0.95 * f, desc=m))
            finally:
                config.engine_lock.release()
        except BaseException:
            store.discard_folder(folder)  # a failed (or abandoned) request leaves nothing behind
            raise
        rnd.timings["input_report"] = report_s  # read, analysed and drawn before the round began
        rnd.timings["total"] = time.perf_counter() - started
        store.add(rnd)
        log.info("round %s: K=%d, %.1f s input -> %.1f s, %.1f s", round_id, rnd.k, rnd.input_seconds,
                 rnd.target_seconds, rnd.timings["total"])
        yield (png, _round_status(rnd), rnd.public(), rnd.audio_files(bool(loudness_matched)), rnd,
               session_id)

    def clear_round():
        hidden = [gr.update(visible=False)] * (len(rows) + MAX_CANDIDATES)
        return (None, gr.update(value=None, visible=False), "Generating... (see the Generate tab)",
                gr.update(interactive=False), "", *hidden)

    def show_round(rnd: Round | None, matched: bool):
        if rnd is None:  # the request failed (its error is shown on the Generate tab)
            return [gr.skip(), "Nothing to rate yet: generate candidates first.",
                    *[gr.skip()] * (len(show_outputs) - 2)]
        files = rnd.audio_files(bool(matched))
        out: list = [gr.Tabs(selected="listen"), _round_status(rnd),
                     gr.update(value=str(rnd.overview), visible=True)]
        out += [gr.update(visible=r * CARDS_PER_ROW < rnd.k) for r in range(len(rows))]
        for i in range(MAX_CANDIDATES):
            if i < rnd.k:
                out += [gr.update(visible=True),
                        gr.update(value=files[i], buttons=[] if rnd.blind else ["download"]),
                        gr.update(value=str(rnd.shown[i].figure)),
                        gr.update(value=_scores_md(rnd, i), visible=not rnd.blind),
                        gr.update(choices=list(range(1, rnd.k + 1)), value=None, interactive=True)]
            else:
                out += [gr.update(visible=False), gr.update(value=None), gr.update(value=None),
                        gr.update(value="", visible=False), gr.update(choices=[], value=None)]
        out += [gr.update(choices=[("none", 0)] + [(str(p), p) for p in range(1, rnd.k + 1)], value=0,
                          interactive=True),
                gr.update(value="", interactive=True), gr.update(interactive=True), ""]
        return out

    def switch_audio(rnd: Round | None, matched: bool):
        if rnd is None:
            return [gr.skip()] * MAX_CANDIDATES
        files = rnd.audio_files(bool(matched))
        return [gr.update(value=files[i]) if i < rnd.k else gr.skip() for i in range(MAX_CANDIDATES)]

    def _submit(rnd: Round, ranks, favourite, comment, rater_id) -> str:
        submission = rnd.submission(ranks, favourite=favourite, comment=comment or "", rater_id=rater_id)
        with rnd.lock:
            if rnd.submission_id is not None:
                raise EnsembleError(f"this round was already rated (submission {rnd.submission_id[:8]}); "
                                    "generate a new round to rate again")
            rnd.submission_id = append_submission(config.ratings_file, submission)
        log.info("submission %s: %d rows -> %s", rnd.submission_id, rnd.k, config.ratings_file)
        return rnd.submission_id

    @user_errors("Saving your ranking")
    def rate_ui(rnd: Round | None, rater_id, favourite, comment, *ranks):
        skip = [gr.skip()] * len(rate_outputs)
        if rnd is None:
            gr.Warning("Nothing to rate yet: generate candidates first.")
            return skip
        try:
            sid = _submit(rnd, list(ranks[:rnd.k]), favourite, comment, rater_id)
        except EnsembleError as exc:
            gr.Warning(f"Not saved: {_message(exc)}")
            return skip
        out: list = []
        for i in range(MAX_CANDIDATES):
            if i < rnd.k:
                out += [gr.update(value=_scores_md(rnd, i), visible=True), gr.update(interactive=False)]
            else:
                out += [gr.skip(), gr.skip()]
        out += [gr.update(interactive=False), gr.update(interactive=False), gr.update(interactive=False),
                f"Saved: submission `{sid[:8]}` ({rnd.k} rows). The scores are shown on each card; "
                "see the Results tab for everyone's ratings.",
                _round_status(rnd)]
        return out

    def results():
        frame = read_ratings(config.ratings_file, missing_ok=True)
        summary = summarize(frame)
        per_sub = [[p["submission_id"][:8], p["timestamp_utc"], p["rater_id"], p["k"],
                    None if p["tau"] is None else round(p["tau"], 3), p["first_choice_composite_rank"]]
                   for p in summary["per_submission"]]
        shown = frame.iloc[::-1].head(LOG_ROWS_SHOWN)
        csv_copy = None
        if config.ratings_file.exists():  # a snapshot to download, in a folder of its own per request
            export = Path(tempfile.mkdtemp(prefix="export-", dir=store.root))
            csv_copy = str(export / "ratings.csv")
            Path(csv_copy).write_bytes(config.ratings_file.read_bytes())
            _prune_exports(store.root, keep=export)
        label = (f"Ratings log: {len(frame)} rows, newest first"
                 + (f" (showing {LOG_ROWS_SHOWN})" if len(frame) > LOG_ROWS_SHOWN else ""))
        return (format_summary(summary), _image(first_choice_figure(summary)),
                _image(mean_rank_figure(summary)),
                gr.update(value=per_sub or None), gr.update(value=shown if len(shown) else None, label=label),
                csv_copy)

    @user_errors("Rating")
    def rate(round_id: str, ranks: list[int], favourite: int | None = None, comment: str = "",
             rater_id: str = "") -> dict:
        """Rank the candidates of a round (from /generate): ranks[i] is the rank (1 = best) of the
        candidate shown at position i + 1; favourite is a shown position or None. Writes K rows to
        the ratings log and returns the submission id and the revealed scores."""
        rnd = store.get(round_id)
        sid = _submit(rnd, list(ranks or []), favourite, comment, rater_id)
        return {"submission_id": sid, "rows": rnd.k, "round": rnd.public(reveal=True)}

    @user_errors("Summarising the ratings")
    def summary() -> dict:
        """Statistics of the ratings log (ensemble.ratings.summarize): Kendall tau per submission and
        its mean with a 95% bootstrap CI, first choices and mean human rank per composite rank."""
        return summarize(read_ratings(config.ratings_file, missing_ok=True))

    # ----------------------------------------------------------------- layout

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
            with gr.Tab("1. Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=5):
                        audio_in = gr.Audio(
                            sources=["upload", "microphone"], type="filepath", elem_id="input-audio",
                            label=f"Your clip ({MIN_INPUT_SECONDS:g} s to {MAX_INPUT_SECONDS / 60:g} min; "
                                  "WAV, FLAC, OGG, MP3)")
                        if config.examples:
                            gr.Examples([[str(p)] for p in config.examples], inputs=[audio_in],
                                        label="Examples (melodies from BabyBand's test split)",
                                        example_labels=[p.stem for p in config.examples])
                    with gr.Column(scale=4):
                        target = gr.Slider(4, 600, value=config.default_target_seconds, step=0.5,
                                           label="Target length (s): input + continuation",
                                           elem_id="target-seconds")
                        k_in = gr.Slider(1, MAX_CANDIDATES, value=config.default_k, step=1,
                                         label="K: candidates to compare", elem_id="k")
                        with gr.Row():
                            alpha = gr.Slider(0, 2, value=db_cfg.alpha, step=0.05,
                                              label="alpha (relevance weight)")
                            beta = gr.Slider(0, 2, value=db_cfg.beta, step=0.05,
                                             label="beta (coherence weight)")
                        followers = gr.CheckboxGroup(list(FOLLOWERS), value=list(FOLLOWERS),
                                                     label="Followers (the band)")
                        with gr.Accordion("More settings", open=False):
                            lookbacks = gr.CheckboxGroup(
                                lookback_choices, value=[v for _, v in lookback_choices],
                                label="Lookbacks: seconds of your clip the search compares")
                            transpose = gr.Checkbox(False, label="Transpose: also try segments shifted "
                                                                 "-6..+6 semitones (re-synthesised)")
                            seed = gr.Number(0, precision=0, label="Seed (instrument noise)")
                        blind = gr.Checkbox(True, label="Blind mode (for studies): shuffled order, scores "
                                                        "hidden until you submit, no downloads",
                                            elem_id="blind")
                        rater = gr.Textbox(label="Rater id (or open the page with ?rater=NAME)",
                                           value="", placeholder="anonymous", max_length=64, elem_id="rater")
                        generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                # the progress bar runs here, so the report card stays visible once it is drawn
                status = gr.Markdown(label="Round status", elem_id="generate-status", min_height=90,
                                     container=True, padding=True)
                report = gr.Image(label="Report card of your clip", show_label=False, type="filepath",
                                  interactive=False,
                                  buttons=["download", "fullscreen"], elem_id="report-card")
                round_json = gr.JSON(label="round", visible=False)
                files_out = gr.File(label="candidates (shown order)", file_count="multiple", visible=False)

            with gr.Tab("2. Listen & rate", id="listen"):
                listen_status = gr.Markdown("Nothing to rate yet: generate candidates first.",
                                            elem_id="listen-status")
                matched = gr.Checkbox(False, label="Loudness-matched playback: every candidate at your "
                                                   "clip's loudness", elem_id="matched")
                overview = gr.Image(label="All candidates: melody and loudness, seam marked",
                                    show_label=False, type="filepath", interactive=False, visible=False,
                                    elem_id="overview", buttons=["fullscreen"])
                rows, cols, audios, figures, scores, ranks = [], [], [], [], [], []
                n_rows = -(-MAX_CANDIDATES // CARDS_PER_ROW)
                for r in range(n_rows):
                    with gr.Row(visible=False, equal_height=False) as row:
                        rows.append(row)
                        for j in range(CARDS_PER_ROW):
                            i = r * CARDS_PER_ROW + j
                            with gr.Column(visible=False, elem_id=f"card-{i + 1}", elem_classes="card",
                                           min_width=320) as col:
                                gr.Markdown(f"### Candidate {i + 1}")
                                audios.append(gr.Audio(type="filepath", interactive=False, buttons=[],
                                                       label=f"Candidate {i + 1}", elem_id=f"audio-{i + 1}"))
                                figures.append(gr.Image(type="filepath", interactive=False, show_label=False,
                                                        buttons=["fullscreen"], elem_id=f"figure-{i + 1}"))
                                scores.append(gr.Markdown(visible=False, elem_id=f"scores-{i + 1}"))
                                ranks.append(gr.Radio([], label="Your rank (1 = best)",
                                                      elem_id=f"rank-{i + 1}"))
                            cols.append(col)
                favourite = gr.Radio([("none", 0)], value=0, label="Favourite (optional)",
                                     elem_id="favourite")
                comment = gr.Textbox(label="Comment (optional)", lines=2, max_length=2000, elem_id="comment")
                submit = gr.Button("Submit ranking", variant="primary", interactive=False,
                                   elem_id="submit-btn")
                submit_status = gr.Markdown(elem_id="submit-status")

            with gr.Tab("3. Results", id="results") as results_tab:
                refresh = gr.Button("Refresh", elem_id="refresh-btn")
                summary_text = gr.Textbox(label="Summary: composite rank vs listeners' rank", lines=10,
                                          interactive=False, elem_id="summary-text")
                with gr.Row():
                    first_fig = gr.Image(label="Which composite rank listeners put first", show_label=False,
                                         interactive=False, type="pil", buttons=["download", "fullscreen"],
                                         elem_id="first-choice")
                    mean_fig = gr.Image(label="Mean human rank per composite rank", show_label=False,
                                        interactive=False, type="pil", buttons=["download", "fullscreen"],
                                        elem_id="mean-rank")
                per_sub = gr.Dataframe(headers=["submission", "timestamp_utc", "rater", "k", "kendall tau",
                                                "first choice (composite rank)"],
                                       label="Per submission: Kendall tau (composite vs human rank)",
                                       interactive=False, elem_id="per-submission")
                log_table = gr.Dataframe(headers=list(RATINGS_COLUMNS), label="Ratings log",
                                         interactive=False, elem_id="ratings-table", max_height=500)
                csv_file = gr.File(label="Download ratings.csv", interactive=False, elem_id="ratings-csv")

        with gr.Accordion("About this app", open=False):
            gr.Markdown(
                f"Models `{engine.model_version}`, RAG database `{engine.db.version}` "
                f"({engine.db.n_chunks} segments). Audio is served as PCM-16 WAV, never "
                "peak-normalised, so loudness differences are real; tick *Loudness-matched playback* to "
                "hear every candidate at your clip's loudness. API: see *Use via API* below.")

        # ----------------------------------------------------------------- events
        card_outputs = []
        for i in range(MAX_CANDIDATES):
            card_outputs += [cols[i], audios[i], figures[i], scores[i], ranks[i]]
        show_outputs = [tabs, listen_status, overview, *rows, *card_outputs, favourite, comment, submit,
                        submit_status]
        rate_outputs = []
        for i in range(MAX_CANDIDATES):
            rate_outputs += [scores[i], ranks[i]]
        rate_outputs += [submit, favourite, comment, submit_status, listen_status]
        results_outputs = [summary_text, first_fig, mean_fig, per_sub, log_table, csv_file]
        results_fn = user_errors("Reading the ratings log")(results)

        demo.load(on_load, None, [session_state, rater], api_visibility="private")
        demo.load(results_fn, None, results_outputs, api_visibility="private")
        (generate_btn
         .click(clear_round, None,
                [round_state, overview, listen_status, submit, submit_status, *rows, *cols],
                api_visibility="private", queue=False)
         .then(generate,
               [audio_in, target, k_in, alpha, beta, lookbacks, followers, transpose, seed, blind, matched,
                rater, session_state],
               [report, status, round_json, files_out, round_state, session_state],
               api_name="generate", concurrency_limit=1, concurrency_id="engine", show_progress_on=[status])
         .then(show_round, [round_state, matched], show_outputs, api_visibility="private"))
        matched.change(switch_audio, [round_state, matched], audios, api_visibility="private")
        (submit
         .click(rate_ui, [round_state, rater, favourite, comment, *ranks], rate_outputs,
                api_visibility="private")
         .success(results_fn, None, results_outputs, api_visibility="private"))
        refresh.click(results_fn, None, results_outputs, api_visibility="private")
        results_tab.select(results_fn, None, results_outputs, api_visibility="private")
        gr.api(rate, api_name="rate")
        gr.api(summary, api_name="summary")
    demo.queue(default_concurrency_limit=4)
    return demo


def _image(fig) -> Image.Image:
    """A results figure as a PIL image (gr.Image caches it; no file of ours to clean up).

    Drawn wider than ensemble.ratings makes it (6 in), so the long titles fit beside the image's
    corner buttons.
    """
    fig.set_size_inches(8.0, 4.2)
    return Image.open(io.BytesIO(figure_png(fig)))


def _prune_exports(root: Path, *, keep: Path, max_age_s: float = 600.0) -> None:
    """Delete CSV snapshots older than ``max_age_s`` (Gradio has served its own copy by then)."""
    now = time.time()
    for folder in root.glob("export-*"):
        try:
            if folder != keep and now - folder.stat().st_mtime > max_age_s:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass


def _analytics_enabled() -> bool:
    return os.environ.get("GRADIO_ANALYTICS_ENABLED", "False").strip().lower() in ("1", "true", "yes")
