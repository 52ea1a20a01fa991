"""The Generate tab: the upload and the round's settings, and the ``/generate`` handler.

The handler reads the upload and checks the settings against the engine's limits
(:mod:`ensemble.listening.settings`), shows the input's report card as soon as it is analysed, then
runs the round (:func:`ensemble.listening.round.make_round`) under the engine lock with a progress bar
per stage. A failed (or abandoned) request leaves no files behind, and its reason stays in the
status line (``ui.errors.LastErrors``: the page's ``.failure`` event writes it there).

The upload is checked as soon as it arrives (:func:`make_check_upload`): a file that is not audio,
too short, too long or silent is reported at once in the status line, not only after Generate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ensemble.engine import Engine
from ensemble.errors import EnsembleError
from ensemble.figures.report import report_card, write_figure
from ensemble.listening.round import Foreground, analyse_input, make_round, new_session_id
from ensemble.listening.settings import check_settings, read_clip
from ensemble.listening.store import RoundStore
from ensemble.perform import FOLLOWERS
from ensemble.timbre import AUTO, GUITAR
from ui.errors import LastErrors, user_errors, user_message
from ui.guard import RateLimiter, app_checked, check_text, discard_upload
from ui.round_text import round_status

__all__ = ["GenerateTab", "build_generate_tab", "make_check_upload", "make_generate", "timbre_choices"]

log = logging.getLogger("ensemble.app")


@dataclass
class GenerateTab:
    """The Generate tab's components (the ``/generate`` inputs, in the API's order, then its outputs).

    Attributes:
        audio_in, target, k_in, alpha, beta, lookbacks, followers, transpose, seed, blind, rater,
            timbre: the clip and the round's settings (the API takes ``timbre`` last, after
            ``loudness_matched`` and ``rater_id``).
        generate_btn: starts the round.
        status: the round's status line (the progress bar runs here).
        report: the input's report card.
        round_json, files_out: hidden; the round as JSON and its audio files, for API clients.
    """

    audio_in: gr.Audio
    target: gr.Slider
    k_in: gr.Slider
    alpha: gr.Slider
    beta: gr.Slider
    lookbacks: gr.CheckboxGroup
    followers: gr.CheckboxGroup
    transpose: gr.Checkbox
    seed: gr.Number
    blind: gr.Checkbox
    rater: gr.Textbox
    timbre: gr.Dropdown
    generate_btn: gr.Button
    status: gr.Markdown
    report: gr.Image
    round_json: gr.JSON
    files_out: gr.File


def build_generate_tab(engine: Engine, *, examples: list[Path], default_k: int,
                       default_target_seconds: float) -> GenerateTab:
    """Lay out the Generate tab (inside the page's ``gr.Tabs``).

    Args:
        engine: the loaded engine; its limits bound the sliders, its database's weights and lookbacks
            are the defaults.
        examples: example clips shown under the upload.
        default_k, default_target_seconds: the sliders' starting values.

    Returns:
        The tab's components.
    """
    limits = engine.config.limits
    db_cfg = engine.db.config
    lookback_choices = [(f"{x:g} s", float(x)) for x in db_cfg.lookbacks]
    with gr.Tab("1. Generate", id="generate"):
        with gr.Row():
            with gr.Column(scale=5):
                audio_in = gr.Audio(
                    sources=["upload", "microphone"], type="filepath", elem_id="input-audio",
                    label=f"Your clip ({limits.min_input_seconds:g} s to "
                          f"{limits.max_input_seconds / 60:g} min; WAV, FLAC, OGG, MP3)")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[audio_in],
                                label="Examples (melodies from BabyBand's test split)",
                                example_labels=[p.stem for p in examples])
            with gr.Column(scale=4):
                # app_checked: an API client's out-of-range value reaches check_settings, whose
                # message names the field (Gradio's own check would not)
                target = app_checked(gr.Slider(4, _plain(limits.max_target_seconds), value=default_target_seconds,
                                               step=0.5, label="Target length (s): input + continuation",
                                               elem_id="target-seconds"))
                k_in = app_checked(gr.Slider(1, limits.max_k, value=default_k, step=1,
                                             label="K: candidates to compare", elem_id="k"))
                with gr.Row():
                    # the range check_settings allows, declared once in Limits
                    alpha = app_checked(gr.Slider(0, _plain(limits.max_weight), value=db_cfg.alpha, step=0.05,
                                                  label="alpha (relevance weight)"))
                    beta = app_checked(gr.Slider(0, _plain(limits.max_weight), value=db_cfg.beta, step=0.05,
                                                 label="beta (coherence weight)"))
                followers = app_checked(gr.CheckboxGroup(list(FOLLOWERS), value=list(FOLLOWERS),
                                                         label="Followers (the band)"))
                # custom values pass through to check_settings, whose message names the field and
                # the allowed values (Gradio's own check would not name the field)
                timbre = gr.Dropdown(timbre_choices(engine.timbres), value=AUTO, allow_custom_value=True,
                                     label="Instrument sound of the continuations", elem_id="timbre")
                with gr.Accordion("More settings", open=False):
                    lookbacks = app_checked(gr.CheckboxGroup(
                        lookback_choices, value=[v for _, v in lookback_choices],
                        label="Lookbacks: seconds of your clip the search compares"))
                    transpose = gr.Checkbox(False, label="Transpose: also try segments shifted "
                                                         "-6..+6 semitones (re-synthesised)")
                    seed = gr.Number(0, precision=0, label="Seed (instrument noise)")
                blind = gr.Checkbox(True, label="Blind mode (for studies): shuffled order, figures and "
                                                "scores hidden until you submit, no downloads", elem_id="blind")
                rater = gr.Textbox(label="Rater id (or open the page with ?rater=NAME)",
                                   value="", placeholder="anonymous", max_length=64, elem_id="rater")
                generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
        # the progress bar runs here, so the report card stays visible once it is drawn
        status = gr.Markdown(label="Round status", elem_id="generate-status", min_height=90,
                             container=True, padding=True)
        report = gr.Image(label="Report card of your clip", show_label=False, type="filepath",
                          interactive=False, buttons=["download", "fullscreen"], elem_id="report-card")
        round_json = gr.JSON(label="round", visible=False)
        files_out = gr.File(label="candidates (shown order)", file_count="multiple", visible=False)
    return GenerateTab(audio_in, target, k_in, alpha, beta, lookbacks, followers, transpose, seed, blind,
                       rater, timbre, generate_btn, status, report, round_json, files_out)


def timbre_choices(timbres: tuple[str, ...]) -> list[tuple[str, str]]:
    """The instrument-sound dropdown's (label, value) pairs: automatic, BabyBand's guitar, then each
    installed timbre (``engine.timbres``)."""
    return [("Automatic (from your clip)", AUTO), ("BabyBand guitar", GUITAR),
            *((name[:1].upper() + name[1:], name) for name in timbres)]


def _plain(x: float) -> float | int:
    # a whole number as an int, so the API docs say "between 4 and 600", not "600.0"
    return int(x) if float(x).is_integer() else x


def make_check_upload(engine: Engine) -> Callable[[str | None], str]:
    """The handler that reads an upload as soon as it arrives: its status line (Markdown), or what is
    wrong with it (also as a warning toast); nothing is kept."""
    limits, features = engine.config.limits, engine.config.features

    @user_errors("Reading your clip")
    def check_upload(audio: str | None) -> str:
        if audio is None or not str(audio).strip():
            return ""
        try:
            # the same checks as Generate's; the recording as uploaded is not kept (Generate reads it)
            clip = read_clip(audio, limits=limits, features=features, keep_original=False)
        except EnsembleError as exc:
            discard_upload(audio)  # refused: not kept on the server
            message = user_message(exc)
            gr.Warning(message)
            return f"**This clip cannot be used:** {message}"
        channels = "mono" if clip.source_channels == 1 else f"{clip.source_channels} channels"
        return (f"Your clip: {clip.seconds:.1f} s, {clip.source_sample_rate} Hz, {channels}. Choose the "
                "settings and press Generate.")

    return check_upload


def make_generate(engine: Engine, *, store: RoundStore, engine_lock: threading.Lock,
                  last_errors: LastErrors | None = None,
                  limiter: RateLimiter | None = None, study_only: bool = False,
                  foreground: Foreground | None = None) -> Callable[..., Iterator]:
    """The ``/generate`` handler, bound to the engine and the page's round store.

    Args:
        engine: the loaded engine (its limits and frame grid check and read the upload).
        store: receives each finished round; owns its folder.
        engine_lock: held while the engine renders (shared with the start-up warm-up).
        last_errors: where a failure's message is remembered for the session (the page shows it in
            the status line once the toast has faded).
        limiter: the per-client request cap (None: none).
        study_only: refuse every request (``ENSEMBLE_STUDY_ONLY``: a study's clips must not be
            generated again with their scores shown).
        foreground: the server's requests in progress (:class:`ensemble.listening.round.Foreground`):
            each request is one, and its round's background work gives way to later ones.

    Returns:
        A generator function for Gradio: its parameter names are the API's. It yields twice,
        ``(report_png, status, round_json, files, round, session_id)``: once with the report card (the
        rest skipped), once with the finished round.
    """
    limits, features = engine.config.limits, engine.config.features

    @user_errors("Generating", last=last_errors)
    def generate(audio, target_seconds, k, alpha, beta, lookbacks, followers, transpose, seed, blind,
                 loudness_matched, rater_id, timbre, session_id, progress=gr.Progress(),
                 request: gr.Request = None):
        started = time.perf_counter()
        # the round's background work (a blind round's figures, the takes) gives way to requests
        with foreground.request() if foreground is not None else nullcontext():
            if study_only:
                raise EnsembleError("free mode is off on this server while a listening study runs "
                                    "(ENSEMBLE_STUDY_ONLY=1): a study's clips must not be generated again "
                                    "with their scores shown. Open the study's link (?study=NAME) instead")
            if limiter is not None:
                limiter.check(request)
            rater_id = check_text("rater_id", rater_id)
            session_id = session_id or new_session_id()
            progress(0.0, desc="reading your clip")
            try:
                clip = read_clip(audio, limits=limits, features=features)
            except EnsembleError:
                discard_upload(audio)  # refused: not kept on the server
                raise
            settings = check_settings(target_seconds=target_seconds, k=k, alpha=alpha, beta=beta,
                                      lookbacks=lookbacks, followers=followers, transpose=transpose,
                                      seed=seed, blind=blind, timbre=timbre, input_seconds=clip.seconds,
                                      limits=limits, timbres=engine.timbres,
                                      lookback_choices=engine.db.config.lookbacks)
            round_id, folder = store.new_folder()
            try:
                progress(0.02, desc="analysing your clip")
                folder.mkdir(parents=True)
                analysis = analyse_input(clip.audio, features=features)
                png = write_figure(report_card(analysis, title=f"Your clip ({clip.seconds:.1f} s)"),
                                   folder / "input_report.png")
                report_s = time.perf_counter() - started
                yield (png, f"Analysed your {clip.seconds:.1f} s clip; retrieving and performing "
                            f"{settings.k} candidates...", gr.skip(), gr.skip(), gr.skip(), session_id)
                if not engine_lock.acquire(blocking=False):
                    progress(0.05, desc="waiting for the engine (warming up or busy)")
                    engine_lock.acquire()
                try:
                    rnd = make_round(engine, clip, settings, folder=folder, input_analysis=analysis,
                                     report_png=png, rater_id=rater_id or "", session_id=session_id,
                                     round_id=round_id, foreground=foreground,
                                     progress=lambda f, m: progress(0.05 + 0.95 * f, desc=m))
                finally:
                    engine_lock.release()
            except BaseException:
                store.discard_folder(folder)  # a failed (or abandoned) request leaves nothing behind
                raise
            rnd.timings["input_report"] = report_s  # read, analysed and drawn before the round began
            rnd.timings["total"] = time.perf_counter() - started
            rnd.played(bool(loudness_matched))  # how the players start; the Listen tab records switches
            store.add(rnd)
            log.info("round %s: K=%d, %.1f s input -> %.1f s, %.1f s", round_id, rnd.k, rnd.input_seconds,
                     rnd.target_seconds, rnd.timings["total"])
            yield (png, round_status(rnd), rnd.public(), rnd.audio_files(bool(loudness_matched)), rnd,
                   session_id)

    return generate
