"""The Results tab: everyone's ratings so far, and the ``/summary`` endpoint.

The tab shows the agreement between the system's composite ranking and the listeners'
(:func:`ensemble.ratings.stats.summarize`) as text and two charts (:mod:`ensemble.figures.ratings`),
the Kendall tau of each submission, the newest rows of the log and a CSV snapshot to download. It is
refreshed on page load, on Refresh, when the tab is selected and after each saved ranking.

A prepared study (``?study=NAME``, :mod:`ui.study_tab`) is chosen in the tab's *Ratings of* menu: the
tab then shows that study's results -- the report text, its tables (screening, Plackett-Luce
strengths, Kendall's W per round, tau against the human ceiling, listening by the server's clock) and
its figures -- drawn from the study's released logs by the functions ``python -m ensemble study
report`` uses (:func:`ensemble.study.store.report_of` -> :func:`ensemble.study.analysis.report_from_logs`,
:func:`~ensemble.study.analysis.report_tables`, :mod:`ensemble.figures.study`); they name raters, so
they need the researcher key.

Raters' data is the researcher's: without the researcher key (``ENSEMBLE_RESEARCHER_KEY``, typed into
the tab's *Researcher key* box, or ``/summary``'s and ``/ratings``' ``researcher_key``) a visitor sees
aggregates only -- the summary and charts, per-submission Kendall tau without rater ids, no rows of the
log (which hold rater ids and comments) and no CSV. With the key: the log, the rater ids and the CSV.
"""

from __future__ import annotations

import hmac
import io
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image

from ensemble.errors import EnsembleError
from ensemble.figures.ratings import first_choice_figure, mean_rank_figure
from ensemble.figures.report import figure_png
from ensemble.ratings.fit import weights_summary_text
from ensemble.ratings.log import RATINGS_COLUMNS, read_ratings
from ensemble.ratings.stats import format_summary, summarize
from ensemble.study.analysis import format_report, report_tables
from ensemble.study.store import MANIFEST, open_study, report_of
from ui.errors import user_errors
from ui.guard import RateLimiter

__all__ = ["LOG_ROWS_SHOWN", "ResultsTab", "build_results_tab", "make_results", "make_summary_api",
           "make_ratings_api", "key_matches", "public_summary", "FREE_MODE", "STUDY_TABLES", "study_choices"]

LOG_ROWS_SHOWN = 300
HIDDEN = "(hidden)"  # what a visitor without the researcher key sees instead of a rater id
FREE_MODE = "free mode (ratings log)"  # the *Ratings of* choice that is not a study
STUDY_PREFIX = "study: "
STUDY_TABLES = ("screening", "strengths", "agreement", "tau", "listening")  # report_tables' keys, shown in order


def study_choices(studies_root: Path | None) -> list[str]:
    """The *Ratings of* menu: free mode, then ``study: NAME`` for every prepared study under the root."""
    if studies_root is None or not Path(studies_root).is_dir():
        return [FREE_MODE]
    names = sorted(d.name for d in Path(studies_root).iterdir() if (d / MANIFEST).is_file())
    return [FREE_MODE, *(STUDY_PREFIX + n for n in names)]


def key_matches(given: object, key: str) -> bool:
    """True when ``given`` is the configured researcher key (never when none is configured)."""
    return bool(key) and isinstance(given, str) and hmac.compare_digest(given.encode(), key.encode())


def public_summary(summary: dict) -> dict:
    """:func:`summarize`'s result without per-rater data: every per-submission rater id removed."""
    out = dict(summary)
    out["per_submission"] = [{k: v for k, v in p.items() if k != "rater_id"} for p in summary["per_submission"]]
    return out


@dataclass
class ResultsTab:
    """The Results tab's components.

    Attributes:
        tab: the tab itself (selecting it refreshes it).
        key: the researcher key box; source: the *Ratings of* menu (free mode or a study).
        refresh: the Refresh button.
        summary_text, first_fig, mean_fig, per_sub, log_table, csv_file: free mode's view.
        free, study: the two views' columns (one visible at a time).
        study_text, study_tables (:data:`STUDY_TABLES` in order), strengths_fig, screening_fig: a
            study's view.
    """

    tab: gr.Tab
    key: gr.Textbox
    source: gr.Dropdown
    refresh: gr.Button
    summary_text: gr.Textbox
    first_fig: gr.Image
    mean_fig: gr.Image
    per_sub: gr.Dataframe
    log_table: gr.Dataframe
    csv_file: gr.File
    free: gr.Column
    study: gr.Column
    study_text: gr.Textbox
    study_tables: list[gr.Dataframe]
    strengths_fig: gr.Image
    screening_fig: gr.Image

    @property
    def inputs(self) -> list:
        """Inputs of :func:`make_results`'s handler."""
        return [self.key, self.source]

    @property
    def outputs(self) -> list:
        """Outputs of :func:`make_results`'s handler."""
        return [self.summary_text, self.first_fig, self.mean_fig, self.per_sub, self.log_table,
                self.csv_file, self.source, self.free, self.study, self.study_text, *self.study_tables,
                self.strengths_fig, self.screening_fig]


def build_results_tab(studies_root: Path | None = None) -> ResultsTab:
    """Lay out the Results tab (inside the page's ``gr.Tabs``); it is filled by :func:`make_results`.

    Args:
        studies_root: where prepared studies live (their results are offered in *Ratings of*); None:
            free mode only.

    Returns:
        The tab's components.
    """
    choices = study_choices(studies_root)
    with gr.Tab("3. Results", id="results") as tab:
        with gr.Row():
            key = gr.Textbox(label="Researcher key (shows the log, rater ids, the CSV and studies' results)",
                             type="password", value="", max_length=256, elem_id="researcher-key", scale=4)
            source = gr.Dropdown(choices, value=FREE_MODE, label="Ratings of", elem_id="results-source",
                                 visible=studies_root is not None, scale=2)
            refresh = gr.Button("Refresh", elem_id="refresh-btn", scale=1)
        with gr.Column(elem_id="results-free") as free:
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
        with gr.Column(visible=False, elem_id="results-study") as study:
            study_text = gr.Textbox(label="Study report (as `python -m ensemble study report` prints it)", lines=18,
                                    interactive=False, elem_id="study-report-text")
            titles = {"screening": "Post-screening: anchor ranked above the reference, per rater",
                      "strengths": "Plackett-Luce strengths per condition",
                      "agreement": "Kendall's W per round", "tau": "Composite vs listeners (Kendall tau)",
                      "listening": "Listening, by the server's clock"}
            study_tables = [gr.Dataframe(label=titles[name], interactive=False, wrap=True,
                                         elem_id=f"study-table-{name}") for name in STUDY_TABLES]
            with gr.Row():
                strengths_fig = gr.Image(label="Condition strengths", show_label=False, interactive=False,
                                         type="pil", buttons=["download", "fullscreen"], elem_id="study-strengths")
                screening_fig = gr.Image(label="Post-screening", show_label=False, interactive=False, type="pil",
                                         buttons=["download", "fullscreen"], elem_id="study-screening")
    return ResultsTab(tab, key, source, refresh, summary_text, first_fig, mean_fig, per_sub, log_table, csv_file,
                      free, study, study_text, study_tables, strengths_fig, screening_fig)


def study_view(studies_root: Path, name: str, *, researcher: bool) -> tuple[str, list[pd.DataFrame], object, object]:
    """A study's results as the tab shows them: (report text, one frame per :data:`STUDY_TABLES`,
    strengths figure, screening figure), from its released logs (the figures None without the key).

    Raises:
        EnsembleError: an unknown study, or a log that lacks the columns the report needs.
    """
    from ensemble.figures.study import screening_figure, strengths_figure

    if not researcher:
        return ("A study's results name its raters: type the researcher key (ENSEMBLE_RESEARCHER_KEY) to see "
                "them.", [pd.DataFrame() for _ in STUDY_TABLES], None, None)
    report = report_of(open_study(studies_root, name))
    tables = report_tables(report)
    frames = [pd.DataFrame(tables[n][1], columns=list(tables[n][0]), dtype=str) for n in STUDY_TABLES]
    return format_report(report), frames, _image(strengths_figure(report)), _image(screening_figure(report))


def make_results(ratings_file: Path, *, exports_root: Path, ranking: str = "",
                 researcher_key: str = "", studies_root: Path | None = None) -> Callable[..., tuple]:
    """The handler that fills the Results tab (``ResultsTab.outputs``) from the ratings log.

    Args:
        ratings_file: the ratings log (a missing log reads as empty).
        exports_root: where the CSV snapshots are written, one folder per request (the round store's
            root, removed with it).
        ranking: what ranks the rounds (``ensemble.ratings.fit.ranking_line``), shown with the
            learned weights below the summary.
        researcher_key: the key that shows the log's rows, rater ids, the CSV and studies' results
            ("" : nobody).
        studies_root: the prepared studies offered in *Ratings of* (None: free mode only).

    Returns:
        The handler, with :func:`ui.errors.user_errors` applied.
    """

    @user_errors("Reading the ratings log")
    def results(key: str = "", source: str | None = FREE_MODE):
        researcher = key_matches(key, researcher_key)
        choices = study_choices(studies_root)
        source = source if source in choices else FREE_MODE
        menu = gr.update(choices=choices, value=source)
        if source != FREE_MODE:
            text, frames, strengths, screening = study_view(studies_root, source[len(STUDY_PREFIX):],
                                                            researcher=researcher)
            return (*(gr.skip() for _ in range(6)), menu, gr.update(visible=False), gr.update(visible=True),
                    text, *frames, strengths, screening)
        free = _free_results(researcher)
        return (*free, menu, gr.update(visible=True), gr.update(visible=False),
                *(gr.skip() for _ in range(3 + len(STUDY_TABLES))))

    def _free_results(researcher: bool) -> tuple:
        frame = read_ratings(ratings_file, missing_ok=True)
        summary = summarize(frame)
        if not researcher:  # aggregates only: no rater ids in the text or the table
            summary = {**summary, "per_submission": [{**p, "rater_id": HIDDEN} for p in summary["per_submission"]]}
        per_sub = [[p["submission_id"][:8], p["timestamp_utc"], p["rater_id"], p["k"],
                    None if p["tau"] is None else round(p["tau"], 3), p["first_choice_composite_rank"]]
                   for p in summary["per_submission"]]
        shown = frame.iloc[::-1].head(LOG_ROWS_SHOWN) if researcher else frame.iloc[:0]
        csv_copy = None
        if researcher and ratings_file.exists():  # a snapshot to download, in a folder of its own per request
            export = Path(tempfile.mkdtemp(prefix="export-", dir=exports_root))
            csv_copy = str(export / "ratings.csv")
            Path(csv_copy).write_bytes(ratings_file.read_bytes())
            _prune_exports(exports_root, keep=export)
        label = (f"Ratings log: {len(frame)} rows, newest first"
                 + (f" (showing {LOG_ROWS_SHOWN})" if len(frame) > LOG_ROWS_SHOWN else ""))
        if not researcher:
            label = (f"Ratings log: {len(frame)} rows (rater ids and comments: researchers only, with the "
                     "researcher key)")
        text = (format_summary(summary) + "\n\n"
                + weights_summary_text(frame, ranking=ranking))
        return (text, _image(first_choice_figure(summary)),
                _image(mean_rank_figure(summary)),
                gr.update(value=per_sub or None), gr.update(value=shown if len(shown) else None, label=label),
                csv_copy)

    return results


def _check_key(given: object, researcher_key: str) -> bool:
    """True with the right key, False with none; a wrong key (or one not text) is refused in words."""
    if given is None or given == "":
        return False
    if not isinstance(given, str):
        raise EnsembleError(f"researcher_key of type {type(given).__name__}; allowed: text")
    if not key_matches(given, researcher_key):
        raise EnsembleError("researcher_key does not match the server's ENSEMBLE_RESEARCHER_KEY"
                            + ("" if researcher_key else " (none is set on this server)")
                            + "; leave it empty for the public, aggregate summary")
    return True


def make_summary_api(ratings_file: Path, *, researcher_key: str = "",
                     limiter: RateLimiter | None = None) -> Callable[..., dict]:
    """The ``/summary`` endpoint (its docstring is the API's documentation); ``limiter`` caps each
    client's requests."""
    configured = researcher_key

    @user_errors("Summarising the ratings")
    def summary(researcher_key: str = "", request: gr.Request = None) -> dict:
        """Statistics of the ratings log (ensemble.ratings.stats.summarize): Kendall tau per submission
        and its mean with a 95% bootstrap CI, first choices and mean human rank per composite rank.
        Aggregates only (no rater ids) unless the researcher key is given."""
        if limiter is not None:
            limiter.check(request)
        full = _check_key(researcher_key, configured)
        result = summarize(read_ratings(ratings_file, missing_ok=True))
        return result if full else public_summary(result)

    return summary


def make_ratings_api(ratings_file: Path, *, exports_root: Path, researcher_key: str = "",
                     limiter: RateLimiter | None = None) -> Callable[..., gr.FileData]:
    """The ``/ratings`` endpoint: the full log as CSV, for the researcher key only; ``limiter`` caps
    each client's requests (a wrong key counts too)."""
    configured = researcher_key

    @user_errors("Downloading the ratings")
    def ratings(researcher_key: str, request: gr.Request = None) -> gr.FileData:
        """The whole ratings log (ratings.csv: rater ids, comments, every row); needs the researcher key
        (ENSEMBLE_RESEARCHER_KEY)."""
        if limiter is not None:
            limiter.check(request)
        if not _check_key(researcher_key, configured):
            raise EnsembleError("the full ratings log needs researcher_key (the server's "
                                "ENSEMBLE_RESEARCHER_KEY); /summary gives the aggregates without it")
        export = Path(tempfile.mkdtemp(prefix="export-", dir=exports_root))
        copy = export / "ratings.csv"
        copy.write_bytes(ratings_file.read_bytes() if ratings_file.exists() else b"")
        _prune_exports(exports_root, keep=export)
        return gr.FileData(path=str(copy), orig_name="ratings.csv")

    return ratings


def _image(fig) -> Image.Image:
    """A results figure as a PIL image (gr.Image caches it; no file of ours to clean up).

    Drawn wider than ensemble.figures.ratings makes it (6 in), so the long titles fit beside the
    image's corner buttons.
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
