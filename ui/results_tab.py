"""The Results tab: everyone's ratings so far, and the ``/summary`` endpoint.

The tab shows the agreement between the system's composite ranking and the listeners'
(:func:`ensemble.ratings.stats.summarize`) as text and two charts (:mod:`ensemble.figures.ratings`),
the Kendall tau of each submission, the newest rows of the log and a CSV snapshot to download. It is
refreshed on page load, on Refresh, when the tab is selected and after each saved ranking.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image

from ensemble.figures.ratings import first_choice_figure, mean_rank_figure
from ensemble.figures.report import figure_png
from ensemble.ratings.fit import weights_summary_text
from ensemble.ratings.log import RATINGS_COLUMNS, read_ratings
from ensemble.ratings.stats import format_summary, summarize
from ui.errors import user_errors

__all__ = ["LOG_ROWS_SHOWN", "ResultsTab", "build_results_tab", "make_results", "make_summary_api"]

LOG_ROWS_SHOWN = 300


@dataclass
class ResultsTab:
    """The Results tab's components.

    Attributes:
        tab: the tab itself (selecting it refreshes it).
        refresh: the Refresh button.
        summary_text, first_fig, mean_fig, per_sub, log_table, csv_file: what :func:`make_results`'s
            handler fills, in that order (:attr:`outputs`).
    """

    tab: gr.Tab
    refresh: gr.Button
    summary_text: gr.Textbox
    first_fig: gr.Image
    mean_fig: gr.Image
    per_sub: gr.Dataframe
    log_table: gr.Dataframe
    csv_file: gr.File

    @property
    def outputs(self) -> list:
        """Outputs of :func:`make_results`'s handler."""
        return [self.summary_text, self.first_fig, self.mean_fig, self.per_sub, self.log_table,
                self.csv_file]


def build_results_tab() -> ResultsTab:
    """Lay out the Results tab (inside the page's ``gr.Tabs``); it is filled by :func:`make_results`.

    Returns:
        The tab's components.
    """
    with gr.Tab("3. Results", id="results") as tab:
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
    return ResultsTab(tab, refresh, summary_text, first_fig, mean_fig, per_sub, log_table, csv_file)


def make_results(ratings_file: Path, *, exports_root: Path, ranking: str = "") -> Callable[[], tuple]:
    """The handler that fills the Results tab (``ResultsTab.outputs``) from the ratings log.

    Args:
        ratings_file: the ratings log (a missing log reads as empty).
        exports_root: where the CSV snapshots are written, one folder per request (the round store's
            root, removed with it).
        ranking: what ranks the rounds (``ensemble.ratings.fit.ranking_line``), shown with the
            learned weights below the summary.

    Returns:
        The handler, with :func:`ui.errors.user_errors` applied.
    """

    @user_errors("Reading the ratings log")
    def results():
        frame = read_ratings(ratings_file, missing_ok=True)
        summary = summarize(frame)
        per_sub = [[p["submission_id"][:8], p["timestamp_utc"], p["rater_id"], p["k"],
                    None if p["tau"] is None else round(p["tau"], 3), p["first_choice_composite_rank"]]
                   for p in summary["per_submission"]]
        shown = frame.iloc[::-1].head(LOG_ROWS_SHOWN)
        csv_copy = None
        if ratings_file.exists():  # a snapshot to download, in a folder of its own per request
            export = Path(tempfile.mkdtemp(prefix="export-", dir=exports_root))
            csv_copy = str(export / "ratings.csv")
            Path(csv_copy).write_bytes(ratings_file.read_bytes())
            _prune_exports(exports_root, keep=export)
        label = (f"Ratings log: {len(frame)} rows, newest first"
                 + (f" (showing {LOG_ROWS_SHOWN})" if len(frame) > LOG_ROWS_SHOWN else ""))
        text = (format_summary(summary) + _undefined_note(summary) + "\n\n"
                + weights_summary_text(frame, ranking=ranking))
        return (text, _image(first_choice_figure(summary)),
                _image(mean_rank_figure(summary)),
                gr.update(value=per_sub or None), gr.update(value=shown if len(shown) else None, label=label),
                csv_copy)

    return results


def make_summary_api(ratings_file: Path) -> Callable[[], dict]:
    """The ``/summary`` endpoint (its docstring is the API's documentation)."""

    @user_errors("Summarising the ratings")
    def summary() -> dict:
        """Statistics of the ratings log (ensemble.ratings.stats.summarize): Kendall tau per submission
        and its mean with a 95% bootstrap CI, first choices and mean human rank per composite rank."""
        return summarize(read_ratings(ratings_file, missing_ok=True))

    return summary


def _undefined_note(summary: dict) -> str:
    """A line saying why an interval reads ``[-, -]`` (empty when none does)."""
    tau = summary["kendall_tau"]
    if summary.get("n_submissions", 0) == 0:
        return ""
    pct = f"{100 * tau['confidence']:g}%"
    if tau.get("n", 0) == 1:
        return (f"\nThe {pct} CI of Kendall tau is undefined with 1 submission (shown as [-, -]): a "
                "bootstrap interval needs at least 2.")
    if any(m.get("n", 0) == 1 for m in summary["mean_human_rank"]):
        return f"\nA {pct} CI shown as [-, -] is undefined: it rests on 1 rating (at least 2 are needed)."
    return ""


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
