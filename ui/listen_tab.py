"""The Listen & rate tab: the grid of candidate cards, the ranking form, and their handlers.

* :func:`make_clear_round` empties the tab when Generate is pressed; :func:`make_show_round` fills
  one card per candidate once the round is made and switches to this tab;
  :func:`make_switch_audio` swaps every player between plain and loudness-matched files.
* Submit ranking (:func:`make_rate_ui`, private): the rater's distinct ranks 1..K, favourite and
  comment are checked by :func:`ensemble.ratings.log.validate_submission`; an invalid submission gets
  a ``gr.Warning`` and writes nothing; a valid one is appended under the log's lock and the scores are
  revealed.
* ``/rate`` (:func:`make_rate_api`): the same for ``gradio_client``, by round id.

Each handler returns its values in the order of the matching ``ListenTab.*_outputs`` list, kept
next to it here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ensemble.errors import EnsembleError
from ensemble.listening.round import Round
from ensemble.listening.store import RoundStore
from ensemble.ratings.log import MAX_COMMENT_CHARS, append_submission
from ui.errors import user_errors, user_message
from ui.round_text import round_status, scores_markdown

__all__ = ["CARDS_PER_ROW", "ListenTab", "build_listen_tab", "make_clear_round", "make_show_round",
           "make_switch_audio", "submit_ranking", "make_rate_ui", "make_rate_api"]

log = logging.getLogger("ensemble.app")

CARDS_PER_ROW = 2
NOTHING_TO_RATE = "Nothing to rate yet: generate candidates first."


@dataclass
class ListenTab:
    """The Listen & rate tab's components; per-card lists are indexed by shown position - 1.

    Attributes:
        status: the round's status line on this tab.
        matched: loudness-matched playback on/off.
        overview: all candidates' melody and loudness in one figure.
        rows: the grid's rows (``CARDS_PER_ROW`` cards each).
        cols, audios, figures, scores, ranks: each card, its player, figure, scores and rank radio.
        favourite, comment, submit, submit_status: the ranking form.
    """

    status: gr.Markdown
    matched: gr.Checkbox
    overview: gr.Image
    rows: list[gr.Row]
    cols: list[gr.Column]
    audios: list[gr.Audio]
    figures: list[gr.Image]
    scores: list[gr.Markdown]
    ranks: list[gr.Radio]
    favourite: gr.Radio
    comment: gr.Textbox
    submit: gr.Button
    submit_status: gr.Markdown

    @property
    def n_cards(self) -> int:
        """How many cards the grid holds (the engine's ``max_k``)."""
        return len(self.cols)

    def clear_outputs(self, round_state: gr.State) -> list:
        """Outputs of :func:`make_clear_round`'s handler."""
        return [round_state, self.overview, self.status, self.submit, self.submit_status, *self.rows,
                *self.cols]

    def show_outputs(self, tabs: gr.Tabs) -> list:
        """Outputs of :func:`make_show_round`'s handler (``tabs``: the page's tabs, to switch here)."""
        return [tabs, *self._shown()]

    def _shown(self) -> list:
        cards = []
        for i in range(self.n_cards):
            cards += [self.cols[i], self.audios[i], self.figures[i], self.scores[i], self.ranks[i]]
        return [self.status, self.overview, *self.rows, *cards, self.favourite, self.comment, self.submit,
                self.submit_status]

    def rate_outputs(self) -> list:
        """Outputs of :func:`make_rate_ui`'s handler."""
        out = []
        for i in range(self.n_cards):
            out += [self.scores[i], self.ranks[i]]
        return out + [self.submit, self.favourite, self.comment, self.submit_status, self.status]


def build_listen_tab(n_cards: int) -> ListenTab:
    """Lay out the Listen & rate tab (inside the page's ``gr.Tabs``), every card hidden.

    Args:
        n_cards: the most candidates a round can have (``engine.config.limits.max_k``).

    Returns:
        The tab's components.
    """
    with gr.Tab("2. Listen & rate", id="listen"):
        status = gr.Markdown(NOTHING_TO_RATE, elem_id="listen-status")
        matched = gr.Checkbox(False, label="Loudness-matched playback: every candidate at your "
                                           "clip's loudness", elem_id="matched")
        overview = gr.Image(label="All candidates: melody and loudness, seam marked",
                            show_label=False, type="filepath", interactive=False, visible=False,
                            elem_id="overview", buttons=["fullscreen"])
        rows, cols, audios, figures, scores, ranks = [], [], [], [], [], []
        for r in range(-(-n_cards // CARDS_PER_ROW)):
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
                        ranks.append(gr.Radio([], label="Your rank (1 = best)", elem_id=f"rank-{i + 1}"))
                    cols.append(col)
        favourite = gr.Radio([("none", 0)], value=0, label="Favourite (optional)", elem_id="favourite")
        comment = gr.Textbox(label="Comment (optional)", lines=2, max_length=MAX_COMMENT_CHARS,
                             elem_id="comment")
        submit = gr.Button("Submit ranking", variant="primary", interactive=False, elem_id="submit-btn")
        submit_status = gr.Markdown(elem_id="submit-status")
    return ListenTab(status, matched, overview, rows, cols, audios, figures, scores, ranks, favourite,
                     comment, submit, submit_status)


def make_clear_round(tab: ListenTab) -> Callable[[], tuple]:
    """The handler that empties the tab while a round is generated (see ``tab.clear_outputs``)."""

    def clear_round():
        hidden = [gr.update(visible=False)] * (len(tab.rows) + tab.n_cards)
        return (None, gr.update(value=None, visible=False), "Generating... (see the Generate tab)",
                gr.update(interactive=False), "", *hidden)

    return clear_round


def make_show_round(tab: ListenTab) -> Callable[[Round | None, bool], list]:
    """The handler that fills the cards of a finished round (see ``tab.show_outputs``)."""
    n_outputs = 1 + len(tab._shown())  # the page's tabs, then this tab's components

    def show_round(rnd: Round | None, matched: bool):
        if rnd is None:  # the request failed (its error is shown on the Generate tab)
            return [gr.skip(), NOTHING_TO_RATE, *[gr.skip()] * (n_outputs - 2)]
        files = rnd.audio_files(bool(matched))
        out: list = [gr.Tabs(selected="listen"), round_status(rnd),
                     gr.update(value=str(rnd.overview), visible=True)]
        out += [gr.update(visible=r * CARDS_PER_ROW < rnd.k) for r in range(len(tab.rows))]
        for i in range(tab.n_cards):
            if i < rnd.k:
                out += [gr.update(visible=True),
                        gr.update(value=files[i], buttons=[] if rnd.blind else ["download"]),
                        gr.update(value=str(rnd.shown[i].figure)),
                        gr.update(value=scores_markdown(rnd, i), visible=not rnd.blind),
                        gr.update(choices=list(range(1, rnd.k + 1)), value=None, interactive=True)]
            else:
                out += [gr.update(visible=False), gr.update(value=None), gr.update(value=None),
                        gr.update(value="", visible=False), gr.update(choices=[], value=None)]
        out += [gr.update(choices=[("none", 0)] + [(str(p), p) for p in range(1, rnd.k + 1)], value=0,
                          interactive=True),
                gr.update(value="", interactive=True), gr.update(interactive=True), ""]
        return out

    return show_round


def make_switch_audio(tab: ListenTab) -> Callable[[Round | None, bool], list]:
    """The handler that swaps the players between plain and loudness-matched files (``tab.audios``)."""

    def switch_audio(rnd: Round | None, matched: bool):
        if rnd is None:
            return [gr.skip()] * tab.n_cards
        files = rnd.audio_files(bool(matched))
        return [gr.update(value=files[i]) if i < rnd.k else gr.skip() for i in range(tab.n_cards)]

    return switch_audio


def submit_ranking(rnd: Round, ranks: list, favourite: object, comment: str | None, rater_id: str, *,
                   ratings_file: Path) -> str:
    """Append a rater's ranking of ``rnd`` to the log, once per round.

    Args:
        rnd: the round rated.
        ranks: ``ranks[i]`` is the rank (1 = best) of the candidate shown at position ``i + 1``.
        favourite: a shown position, or 0/None for none.
        comment, rater_id: free text and who rated (sanitised by the log).
        ratings_file: the ratings log.

    Returns:
        The submission id.

    Raises:
        EnsembleError: an invalid ranking, or a round already rated; nothing is written.
    """
    submission = rnd.submission(ranks, favourite=favourite, comment=comment or "", rater_id=rater_id)
    with rnd.lock:
        if rnd.submission_id is not None:
            raise EnsembleError(f"this round was already rated (submission {rnd.submission_id[:8]}); "
                                "generate a new round to rate again")
        rnd.submission_id = append_submission(ratings_file, submission)
    log.info("submission %s: %d rows -> %s", rnd.submission_id, rnd.k, ratings_file)
    return rnd.submission_id


def make_rate_ui(tab: ListenTab, *, ratings_file: Path) -> Callable[..., list]:
    """The Submit ranking handler: a warning for an invalid ranking, else save and reveal the scores.

    Its inputs are ``(round, rater_id, favourite, comment, *ranks)``; its outputs ``tab.rate_outputs()``.
    """
    n_outputs = len(tab.rate_outputs())

    @user_errors("Saving your ranking")
    def rate_ui(rnd: Round | None, rater_id, favourite, comment, *ranks):
        skip = [gr.skip()] * n_outputs
        if rnd is None:
            gr.Warning(NOTHING_TO_RATE)
            return skip
        try:
            sid = submit_ranking(rnd, list(ranks[:rnd.k]), favourite, comment, rater_id,
                                 ratings_file=ratings_file)
        except EnsembleError as exc:
            gr.Warning(f"Not saved: {user_message(exc)}")
            return skip
        out: list = []
        for i in range(tab.n_cards):
            if i < rnd.k:
                out += [gr.update(value=scores_markdown(rnd, i), visible=True), gr.update(interactive=False)]
            else:
                out += [gr.skip(), gr.skip()]
        out += [gr.update(interactive=False), gr.update(interactive=False), gr.update(interactive=False),
                f"Saved: submission `{sid[:8]}` ({rnd.k} rows). The scores are shown on each card; "
                "see the Results tab for everyone's ratings.",
                round_status(rnd)]
        return out

    return rate_ui


def make_rate_api(store: RoundStore, *, ratings_file: Path) -> Callable[..., dict]:
    """The ``/rate`` endpoint (its signature and docstring are the API's documentation)."""

    @user_errors("Rating")
    def rate(round_id: str, ranks: list[int], favourite: int | None = None, comment: str = "",
             rater_id: str = "") -> dict:
        """Rank the candidates of a round (from /generate): ranks[i] is the rank (1 = best) of the
        candidate shown at position i + 1; favourite is a shown position or None. Writes K rows to
        the ratings log and returns the submission id and the revealed scores."""
        rnd = store.get(round_id)
        sid = submit_ranking(rnd, list(ranks or []), favourite, comment, rater_id, ratings_file=ratings_file)
        return {"submission_id": sid, "rows": rnd.k, "round": rnd.public(reveal=True)}

    return rate
