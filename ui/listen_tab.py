"""The Listen & rate tab: the grid of candidate cards, the ranking form, and their handlers.

* :func:`make_clear_round` empties the tab when Generate is pressed; :func:`make_show_round` fills
  one card per candidate once the round is made and switches to this tab (a blind round's figures and
  scores stay hidden until it is rated: a figure's legend holds the seam numbers, and its shape hints
  at the composite); :func:`make_switch_audio` swaps every player between plain and loudness-matched
  files, and the round records each way it was played (the ratings log's ``loudness_matched``).
* Submit ranking (:func:`make_rate_ui`, private): the rater's distinct ranks 1..K, favourite and
  comment are checked by :func:`ensemble.ratings.log.validate_submission`; an invalid submission is
  told why under the button (replaced by the next outcome, so "Not saved" never stays beside "Saved")
  and writes nothing; a valid one is appended under the log's lock and the figures and scores are
  revealed.
* Takes (:func:`make_take_ui`, private): once a round is rated, or when it is not blind, a musician
  downloads a candidate as a take (:meth:`ensemble.listening.round.Round.take`: the mix at the
  upload's rate and channels, every stem, the band's parts as MIDI, in one zip).
* ``/rate`` (:func:`make_rate_api`): the same for ``gradio_client``, by round id;
  ``/candidate_audio`` (:func:`make_candidate_audio_api`) fetches a candidate's WAV, plain or
  loudness-matched; ``/take`` (:func:`make_take_api`) its take.

Each handler returns its values in the order of the matching ``ListenTab.*_outputs`` list, kept
next to it here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ensemble.errors import EnsembleError
from ensemble.listening.round import Round
from ensemble.listening.store import RoundStore
from ensemble.ratings.log import MAX_COMMENT_CHARS, append_submission, pseudonymize_rater_id
from ui.errors import user_errors, user_message
from ui.guard import RateLimiter, check_ranks, check_text
from ui.round_text import round_status, scores_markdown

__all__ = ["CARDS_PER_ROW", "ListenTab", "build_listen_tab", "make_clear_round", "make_show_round",
           "make_switch_audio", "submit_ranking", "make_rate_ui", "make_rate_api", "make_take_ui",
           "make_take_api", "make_candidate_audio_api"]

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
        take_box, take_pick, take_btn, take_file: download a candidate as a take (shown once the
            round is rated, or at once when it is not blind).
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
    take_box: gr.Column
    take_pick: gr.Radio
    take_btn: gr.Button
    take_file: gr.File

    @property
    def n_cards(self) -> int:
        """How many cards the grid holds (the engine's ``max_k``)."""
        return len(self.cols)

    def clear_outputs(self, round_state: gr.State) -> list:
        """Outputs of :func:`make_clear_round`'s handler."""
        return [round_state, self.overview, self.status, self.submit, self.submit_status, self.take_box,
                *self.rows, *self.cols]

    def show_outputs(self, tabs: gr.Tabs) -> list:
        """Outputs of :func:`make_show_round`'s handler (``tabs``: the page's tabs, to switch here)."""
        return [tabs, *self._shown()]

    def _shown(self) -> list:
        cards = []
        for i in range(self.n_cards):
            cards += [self.cols[i], self.audios[i], self.figures[i], self.scores[i], self.ranks[i]]
        return [self.status, self.overview, *self.rows, *cards, self.favourite, self.comment, self.submit,
                self.submit_status, *self._takes()]

    def _takes(self) -> list:
        return [self.take_box, self.take_pick, self.take_file]

    def rate_outputs(self) -> list:
        """Outputs of :func:`make_rate_ui`'s handler."""
        out = []
        for i in range(self.n_cards):
            out += [self.scores[i], self.ranks[i], self.figures[i]]
        return out + [self.submit, self.favourite, self.comment, self.submit_status, self.status,
                      self.overview, *self._takes()]


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
        with gr.Column(visible=False, elem_id="take-box") as take_box:
            gr.Markdown("### Download a take\nThe mix at your recording's own sample rate and channels, "
                        "every stem, and the band's parts (bass, keys, drums) as MIDI, in one zip.")
            with gr.Row():
                take_pick = gr.Radio([], label="Candidate", elem_id="take-pick")
                take_btn = gr.Button("Make the take (.zip)", elem_id="take-btn")
            take_file = gr.File(label="Take", interactive=False, elem_id="take-file")
    return ListenTab(status, matched, overview, rows, cols, audios, figures, scores, ranks, favourite,
                     comment, submit, submit_status, take_box, take_pick, take_btn, take_file)


def make_clear_round(tab: ListenTab) -> Callable[[], tuple]:
    """The handler that empties the tab while a round is generated (see ``tab.clear_outputs``)."""

    def clear_round():
        hidden = [gr.update(visible=False)] * (len(tab.rows) + tab.n_cards)
        return (None, gr.update(value=None, visible=False), "Generating... (see the Generate tab)",
                gr.update(interactive=False), "", gr.update(visible=False), *hidden)

    return clear_round


def make_show_round(tab: ListenTab) -> Callable[[Round | None, bool], list]:
    """The handler that fills the cards of a finished round (see ``tab.show_outputs``)."""
    n_outputs = 1 + len(tab._shown())  # the page's tabs, then this tab's components

    def show_round(rnd: Round | None, matched: bool):
        if rnd is None:  # the request failed (its error is shown on the Generate tab)
            return [gr.skip(), NOTHING_TO_RATE, *[gr.skip()] * (n_outputs - 2)]
        files = rnd.audio_files(bool(matched))
        hidden = rnd.blind and rnd.submission_id is None  # figures and scores wait for the ranking
        # a hidden figure is not sent at all (its legend holds the seam numbers; a blind round's are
        # still being drawn): the reveal sends it
        out: list = [gr.Tabs(selected="listen"), round_status(rnd),
                     gr.update(value=None if hidden else str(rnd.overview), visible=not hidden)]
        out += [gr.update(visible=r * CARDS_PER_ROW < rnd.k) for r in range(len(tab.rows))]
        for i in range(tab.n_cards):
            if i < rnd.k:
                out += [gr.update(visible=True),
                        gr.update(value=files[i], buttons=[] if rnd.blind else ["download"]),
                        gr.update(value=None if hidden else str(rnd.shown[i].figure), visible=not hidden),
                        gr.update(value=scores_markdown(rnd, i), visible=not hidden),
                        gr.update(choices=list(range(1, rnd.k + 1)), value=None, interactive=True)]
            else:
                out += [gr.update(visible=False), gr.update(value=None), gr.update(value=None),
                        gr.update(value="", visible=False), gr.update(choices=[], value=None)]
        out += [gr.update(choices=[("none", 0)] + [(str(p), p) for p in range(1, rnd.k + 1)], value=0,
                          interactive=True),
                gr.update(value="", interactive=True), gr.update(interactive=True), ""]
        return out + _take_updates(rnd, visible=not hidden)

    return show_round


def _take_updates(rnd: Round, *, visible: bool) -> list:
    """``tab._takes()``: the take box shown (or not), its choices the round's positions, no file yet."""
    return [gr.update(visible=visible),
            gr.update(choices=[(f"Candidate {p}", p) for p in range(1, rnd.k + 1)], value=1),
            gr.update(value=None)]


def make_switch_audio(tab: ListenTab) -> Callable[[Round | None, bool], list]:
    """The handler that swaps the players between plain and loudness-matched files (``tab.audios``)."""

    def switch_audio(rnd: Round | None, matched: bool):
        if rnd is None:
            return [gr.skip()] * tab.n_cards
        rnd.played(bool(matched))
        files = rnd.audio_files(bool(matched))
        return [gr.update(value=files[i]) if i < rnd.k else gr.skip() for i in range(tab.n_cards)]

    return switch_audio


def submit_ranking(rnd: Round, ranks: list, favourite: object, comment: str | None, rater_id: str, *,
                   ratings_file: Path, rater_salt: str = "") -> str:
    """Append a rater's ranking of ``rnd`` to the log, once per round.

    Args:
        rnd: the round rated.
        ranks: ``ranks[i]`` is the rank (1 = best) of the candidate shown at position ``i + 1``.
        favourite: a shown position, or 0/None for none.
        comment, rater_id: free text and who rated (sanitised by the log).
        ratings_file: the ratings log.
        rater_salt: when set, the rater id is logged as its salted hash
            (:func:`ensemble.ratings.log.pseudonymize_rater_id`).

    Returns:
        The submission id.

    Raises:
        EnsembleError: an invalid ranking, or a round already rated; nothing is written.
    """
    submission = rnd.submission(ranks, favourite=favourite, comment=comment or "", rater_id=rater_id)
    if rater_salt:
        submission = dataclasses.replace(submission,
                                         rater_id=pseudonymize_rater_id(submission.rater_id, rater_salt))
    with rnd.lock:
        if rnd.submission_id is not None:
            raise EnsembleError(f"this round was already rated (submission {rnd.submission_id[:8]}); "
                                "generate a new round to rate again")
        rnd.submission_id = append_submission(ratings_file, submission)
    log.info("submission %s: %d rows -> %s", rnd.submission_id, rnd.k, ratings_file)
    return rnd.submission_id


def make_rate_ui(tab: ListenTab, *, ratings_file: Path, rater_salt: str = "") -> Callable[..., list]:
    """The Submit ranking handler: the reason under the button for an invalid ranking, else save and
    reveal the figures and scores.

    Its inputs are ``(round, rater_id, favourite, comment, *ranks)``; its outputs ``tab.rate_outputs()``.
    Every outcome is written into ``tab.submit_status``, replacing the last one (a toast would stay on
    screen beside the next outcome), and it raises nothing: the form's outputs never show Gradio's
    bare "Error".
    """
    n_outputs = len(tab.rate_outputs())
    at_status = tab.rate_outputs().index(tab.submit_status)

    def only_status(text: str) -> list:
        out = [gr.skip()] * n_outputs
        out[at_status] = text
        return out

    @user_errors("Saving your ranking")
    def rate_ui(rnd: Round | None, rater_id, favourite, comment, *ranks):
        if rnd is None:
            return only_status(f"**Not saved:** {NOTHING_TO_RATE}")
        try:
            sid = submit_ranking(rnd, list(ranks[:rnd.k]), favourite, comment, rater_id,
                                 ratings_file=ratings_file, rater_salt=rater_salt)
        except EnsembleError as exc:
            return only_status(f"**Not saved:** {user_message(exc)}")
        try:
            rnd.figures_ready()  # a blind round's figures are drawn while the rater listens
            shown = True
        except EnsembleError as exc:
            log.warning("round %s: %s", rnd.round_id, exc)
            shown = False
        out: list = []
        for i in range(tab.n_cards):
            if i < rnd.k:
                out += [gr.update(value=scores_markdown(rnd, i), visible=True), gr.update(interactive=False),
                        gr.update(value=str(rnd.shown[i].figure), visible=True) if shown else gr.skip()]
            else:
                out += [gr.skip(), gr.skip(), gr.skip()]
        out += [gr.update(interactive=False), gr.update(interactive=False), gr.update(interactive=False),
                f"Saved: submission `{sid[:8]}` ({rnd.k} rows). The figures and scores are shown on each "
                "card; see the Results tab for everyone's ratings.",
                round_status(rnd), gr.update(value=str(rnd.overview), visible=True) if shown else gr.skip(),
                *_take_updates(rnd, visible=True)]
        return out

    return rate_ui


def make_rate_api(store: RoundStore, *, ratings_file: Path, limiter: RateLimiter | None = None,
                  rater_salt: str = "") -> Callable[..., dict]:
    """The ``/rate`` endpoint (its signature and docstring are the API's documentation).

    Every parameter is checked for its type first (``ui.guard``): ranks that are not a list of whole
    numbers, a favourite that is not a number, a comment or rater id that is not text are refused,
    naming the field, and nothing is written.
    """

    @user_errors("Rating")
    def rate(round_id: str, ranks: list[int], favourite: int | None = None, comment: str = "",
             rater_id: str = "", request: gr.Request = None) -> dict:
        """Rank the candidates of a round (from /generate): ranks[i] is the rank (1 = best) of the
        candidate shown at position i + 1; favourite is a shown position or None. Writes K rows to
        the ratings log and returns the submission id and the revealed scores."""
        if limiter is not None:
            limiter.check(request)
        round_id = check_text("round_id", round_id, optional=False)
        ranks_list = check_ranks(ranks)
        if favourite is not None and (isinstance(favourite, bool) or not isinstance(favourite, (int, float))):
            raise EnsembleError(f"favourite {favourite!r}; allowed: a shown position 1..K, or None")
        comment = check_text("comment", comment)
        rater_id = check_text("rater_id", rater_id)
        rnd = store.get(round_id)
        sid = submit_ranking(rnd, ranks_list, favourite, comment, rater_id, ratings_file=ratings_file,
                             rater_salt=rater_salt)
        return {"submission_id": sid, "rows": rnd.k, "round": rnd.public(reveal=True)}

    return rate


def make_take_ui(tab: ListenTab) -> Callable[[Round | None, object], object]:
    """The Make the take handler: inputs ``(round, position)``, output ``tab.take_file``."""

    @user_errors("Making the take")
    def take_ui(rnd: Round | None, position):
        if rnd is None:
            raise EnsembleError(NOTHING_TO_RATE)
        return gr.update(value=str(rnd.take(position)))

    return take_ui


def make_take_api(store: RoundStore, *, limiter: RateLimiter | None = None) -> Callable[..., gr.FileData]:
    """The ``/take`` endpoint (its signature and docstring are the API's documentation); ``limiter``
    caps each client's requests."""

    @user_errors("Making the take")
    def take(round_id: str, position: int, request: gr.Request = None) -> gr.FileData:
        """A candidate of a round as a take: one zip with the mix (the upload's own sample rate and
        channels), every stem and the band's parts as MIDI (band.mid), plus take.json. position is the
        shown position 1..K; a blind round's takes are available once it is rated (/rate)."""
        if limiter is not None:
            limiter.check(request)
        path = store.get(round_id).take(position)
        return gr.FileData(path=str(path), orig_name=path.name)

    return take


def make_candidate_audio_api(store: RoundStore, *, limiter: RateLimiter | None = None
                             ) -> Callable[..., gr.FileData]:
    """The ``/candidate_audio`` endpoint (its signature and docstring are the API's documentation);
    ``limiter`` caps each client's requests."""

    @user_errors("Fetching the audio")
    def candidate_audio(round_id: str, position: int, loudness_matched: bool = False,
                        request: gr.Request = None) -> gr.FileData:
        """The WAV of the candidate shown at position 1..K of a round (from /generate): as rendered,
        or loudness-matched (the file the round's JSON names as file_matched). The round records that
        it was played that way (the ratings log's loudness_matched)."""
        if limiter is not None:
            limiter.check(request)
        rnd = store.get(round_id)
        pos = _position(position, rnd.k)
        shown = rnd.shown[pos - 1]
        rnd.played(bool(loudness_matched))
        path = shown.audio_matched if loudness_matched else shown.audio
        return gr.FileData(path=str(path), orig_name=path.name)

    return candidate_audio


def _position(value: object, k: int) -> int:
    """A shown position 1..k from an API value, or an EnsembleError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
            or not 1 <= int(value) <= k:
        raise EnsembleError(f"position {value!r}; allowed: a shown position 1..{k}")
    return int(value)
