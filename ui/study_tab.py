"""The Study tab: a prepared listening study served at ``?study=NAME`` (hidden otherwise).

A rater gives an id (``?rater=NAME`` fills it), reads the instructions and consent, and starts; the
server (:class:`ensemble.study.store.Study`) gives them their next round -- the first after a reload or
a server restart is the first they have not submitted. Each round shows every candidate as an
ordinary blind player (the hidden reference and the low anchor among them), loudness-matched (fixed
in a study), no figures and no scores until the round is submitted.

The players are one ``gr.HTML`` with its own JavaScript (:data:`PLAYER_JS`): each starts
``preroll_seconds`` before the seam (the whole clip stays reachable), a *switch here* button moves to
another candidate at the same playhead, and every play, pause, seek and heard stretch is sent to the
server (a server function of the component, :func:`make_log_listening`) and written to the study's
listening log. The rank controls stay locked until the server, reading that log, finds every
candidate heard for ``min_heard_seconds`` across the seam; the submit handler checks the same again
and refuses a ranking otherwise, naming what is missing.

A study's results are shown by the main Results tab (:mod:`ui.results_tab`, a study chosen there,
for the researcher key), drawn from the released logs by the same function ``python -m ensemble study
report`` uses.
"""

from __future__ import annotations

import html
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ensemble.errors import EnsembleError
from ensemble.listening.round import new_session_id
from ensemble.study.spec import MAX_SHOWN
from ensemble.study.store import Study, open_study
from ui.config import ratings_dir
from ui.errors import user_errors, user_message

__all__ = ["StudyTab", "studies_root", "build_study_tab", "MAX_SHOWN", "PLAYER_JS"]



def studies_root(default_ratings: str | os.PathLike = "ratings", *, env: Mapping[str, str] | None = None) -> Path:
    """Where prepared studies live: ``$STUDIES_DIR``, else ``studies/`` in the ratings folder
    (:func:`ui.config.ratings_dir`: ``$RATINGS_DIR``, Spaces' ``/data/ratings``, or ``default_ratings``)."""
    env = os.environ if env is None else env
    if env.get("STUDIES_DIR", "").strip():
        return Path(env["STUDIES_DIR"].strip())
    return ratings_dir(default_ratings, env=env) / "studies"


PLAYER_JS = r"""
const pending = [];
let flushing = false;
let active = null;
const unlockedRounds = new Set();
function ctx() { const r = element.querySelector('.study-round'); return r ? r.dataset : null; }
function send(ev) {
  ev.client_ms = Date.now();
  pending.push(ev);
  flush();
}
async function flush() {
  if (flushing || !pending.length) return;
  const d = ctx();
  if (!d) { pending.length = 0; return; }
  flushing = true;
  const events = pending.splice(0, pending.length);
  try {
    const res = await server.log_listening({study: d.study, rater: d.rater, session: d.session,
                                            round: d.round, events: events});
    show(res, d.round);
  } catch (e) { console.error('listening log', e); }
  flushing = false;
  if (pending.length) flush();
}
function show(res, round) {
  if (!res) return;
  const note = element.querySelector('.study-listen-note');
  if (res.error) { if (note) note.textContent = res.error; return; }
  for (const [pos, h] of Object.entries(res.heard || {})) {
    const el = element.querySelector('#study-heard-' + pos);
    if (el) el.textContent = 'heard ' + h.seconds.toFixed(1) + ' s' + (h.seam ? ', seam heard' : ', seam not yet');
  }
  if (note) {
    note.textContent = res.unlocked ? 'Every candidate heard: ranking unlocked.'
      : [...(res.missing || []), ...(res.clamped || [])].join('; ');
  }
  if (res.unlocked && !unlockedRounds.has(round)) { unlockedRounds.add(round); trigger('click'); }
}
function bind() {
  element.querySelectorAll('audio.study-player').forEach((a) => {
    if (a.dataset.bound) return;
    a.dataset.bound = '1';
    const pos = Number(a.dataset.position);
    let from = null;
    let last = 0;
    const ev = (kind, f, t) => send({position: pos, event: kind, from: f, to: t, rate: a.playbackRate});
    const toStart = () => {
      if (a.dataset.started) return;
      a.dataset.started = '1';
      a.currentTime = Number(a.dataset.start);
      last = a.currentTime;
    };
    if (a.readyState >= 1) toStart(); else a.addEventListener('loadedmetadata', toStart);
    a.addEventListener('play', () => {
      element.querySelectorAll('audio.study-player').forEach((o) => { if (o !== a && !o.paused) o.pause(); });
      active = a;
      from = a.currentTime; last = from;
      ev('play', from, from);
    });
    a.addEventListener('timeupdate', () => {
      if (a.paused || a.seeking || from === null) return;
      const t = a.currentTime;
      if (t < last) return;
      last = t;
      if (t - from >= 1.0) { ev('progress', from, t); from = t; }
    });
    a.addEventListener('pause', () => {
      if (from === null) return;
      const t = Math.max(from, a.currentTime);
      ev(a.ended ? 'ended' : 'pause', from, t);
      from = null; last = t;
    });
    a.addEventListener('seeking', () => {
      const t = a.currentTime;
      if (from !== null && last > from) ev('progress', from, last);
      ev('seek', last, t);
      if (from !== null) from = t;
      last = t;
    });
  });
  element.querySelectorAll('button.study-switch').forEach((b) => {
    if (b.dataset.bound) return;
    b.dataset.bound = '1';
    b.addEventListener('click', () => {
      const target = element.querySelector('#study-audio-' + b.dataset.position);
      if (!target) return;
      const t = active ? active.currentTime : Number(target.dataset.start);
      if (active && active !== target) active.pause();
      target.dataset.started = '1';
      send({position: Number(b.dataset.position), event: 'switch', from: t, to: t, rate: target.playbackRate});
      target.currentTime = t;
      target.play();
    });
  });
}
bind();
watch('value', bind);
"""

PLAYER_CSS = """
.study-cands { display: flex; flex-wrap: wrap; gap: 10px; }
.study-cand { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px; min-width: 300px; }
.study-cand audio { width: 100%; }
.study-heard { font-size: 12px; color: var(--body-text-color-subdued); }
"""


@dataclass
class StudyTab:
    """The Study tab's components (ids in brackets are the page's ``elem_id``)."""

    tab: gr.Tab
    header: gr.Markdown  # study-header
    rater: gr.Textbox  # study-rater
    consent: gr.Checkbox  # study-consent
    start: gr.Button  # study-start
    progress: gr.Markdown  # study-progress
    players: gr.HTML  # study-players
    ranks: list[gr.Radio]  # study-rank-1..
    comment: gr.Textbox  # study-comment
    submit: gr.Button  # study-submit
    status: gr.Markdown  # study-status
    state: gr.State

    def round_outputs(self) -> list:
        return [self.state, self.progress, self.players, *self.ranks, self.submit, self.status]


class _Studies:
    """The studies this server has opened (one :class:`Study` per name), their audio served as static
    files. Thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._open: dict[str, Study] = {}
        self._lock = threading.Lock()

    def get(self, name: object) -> Study:
        with self._lock:
            if name in self._open:
                return self._open[name]
            study = open_study(self.root, name)
            # only the audio folder, never the manifest (it names each file's condition)
            gr.set_static_paths([study.folder / "audio"])
            self._open[study.name] = study
            return study


def _round_html(study: Study, rater: str, session: str, round_id: str) -> str:
    r = study.rounds[round_id]
    start = max(0.0, float(r["seam_seconds"]) - study.preroll_seconds)
    cards = []
    for c in study.shown(rater, round_id):
        pos = c["position"]
        url = "/gradio_api/file=" + str((study.folder / c["file"]).resolve())
        cards.append(
            f'<div class="study-cand" id="study-cand-{pos}"><b>Candidate {pos}</b> '
            f'<button class="study-switch" data-position="{pos}" id="study-switch-{pos}">switch here</button>'
            f'<audio class="study-player" id="study-audio-{pos}" data-position="{pos}" data-start="{start:.3f}" '
            f'controls preload="auto" controlslist="nodownload" src="{html.escape(url)}"></audio>'
            f'<div class="study-heard" id="study-heard-{pos}">heard 0.0 s</div></div>')
    return (f'<div class="study-round" data-study="{html.escape(study.name)}" data-rater="{html.escape(rater)}" '
            f'data-session="{html.escape(session)}" data-round="{html.escape(round_id)}">'
            f'<p>Each player starts {study.preroll_seconds:g} s before the seam (at '
            f'{float(r["seam_seconds"]):.1f} s); the whole clip can be played. Hear every candidate for at '
            f'least {study.min_heard_seconds:g} s across the seam to unlock the ranking. <i>switch here</i> '
            'continues at the same playhead with another candidate.</p>'
            f'<div class="study-cands">{"".join(cards)}</div>'
            '<p class="study-listen-note" id="study-listen-note"></p></div>')


def _rank_updates(n: int, *, interactive: bool, reset: bool) -> list:
    out = []
    for i in range(MAX_SHOWN):
        if i < n:
            kw = {"choices": [str(r) for r in range(1, n + 1)], "value": None} if reset else {}
            out.append(gr.update(visible=True, interactive=interactive, **kw))
        else:
            out.append(gr.update(visible=False, value=None))
    return out


def _revealed_md(study: Study, rater: str, round_id: str) -> str:
    lines = ["| candidate | was | composite rank |", "|---|---|---|"]
    for c in study.revealed(rater, round_id):
        lines.append(f"| {c['position']} | {c['condition']} | {c['composite_rank'] or '-'} |")
    return "\n".join(lines)


def build_study_tab(root: str | os.PathLike) -> StudyTab:
    """Lay out the Study tab (inside the page's ``gr.Tabs``; hidden until ``?study=NAME``)."""
    studies = _Studies(Path(root))

    def log_listening(payload: dict) -> dict:
        """Server function of the players: append their events, answer what each candidate has been heard."""
        try:
            study = studies.get(payload.get("study"))
            rater, round_id = str(payload.get("rater", "")), str(payload.get("round", ""))
            heard = study.log_listening(rater, round_id, list(payload.get("events") or []),
                                        session_id=str(payload.get("session", ""))[:64])
            missing = study.missing_listening(rater, round_id)
            return {"heard": {str(p): {"seconds": h.seconds, "seam": h.seam, "replays": h.replays}
                              for p, h in heard.items()}, "unlocked": not missing, "missing": missing,
                    "clamped": study.clamped(rater, round_id)}
        except EnsembleError as exc:
            return {"error": str(exc)}

    with gr.Tab("Study", id="study", visible=False, elem_id="study-tab") as tab:
        header = gr.Markdown(elem_id="study-header")
        with gr.Row():
            rater = gr.Textbox(label="Rater id", placeholder="e.g. alice", max_lines=1, elem_id="study-rater")
            consent = gr.Checkbox(label="I have read the above and agree to take part", elem_id="study-consent")
            start = gr.Button("Start / resume", variant="primary", elem_id="study-start")
        progress = gr.Markdown(elem_id="study-progress")
        players = gr.HTML("", js_on_load=PLAYER_JS, css_template=PLAYER_CSS, server_functions=[log_listening],
                          elem_id="study-players")
        with gr.Row():
            ranks = [gr.Radio([], label=f"Candidate {i + 1}: your rank (1 = best)", visible=False,
                              interactive=False, elem_id=f"study-rank-{i + 1}") for i in range(MAX_SHOWN)]
        comment = gr.Textbox(label="Comment (optional)", lines=1, max_length=500, elem_id="study-comment")
        submit = gr.Button("Submit ranking", variant="primary", interactive=False, elem_id="study-submit")
        status = gr.Markdown(elem_id="study-status")
        gr.Markdown("The study's results are in the **Results** tab (choose the study there; the researcher "
                    "key shows them).")
        state = gr.State(None)
    t = StudyTab(tab, header, rater, consent, start, progress, players, ranks, comment, submit, status, state)
    t._studies = studies  # type: ignore[attr-defined]
    return t


def wire_study_tab(demo: gr.Blocks, t: StudyTab, tabs: gr.Tabs) -> None:
    """The Study tab's events: page load (``?study=NAME&rater=ID``), start, unlock, submit."""
    studies: _Studies = t._studies  # type: ignore[attr-defined]

    def on_study_load(request: gr.Request):
        name = request.query_params.get("study") if request is not None else None
        if not name:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            study = studies.get(name)
        except EnsembleError as exc:
            return (gr.Tab(visible=True), gr.Tabs(selected="study"),
                    f"**Study unavailable:** {user_message(exc)}", gr.skip(), None)
        text = f"# {study.title}\n\n{study.instructions}\n\n**Consent.** {study.consent}"
        rater_q = request.query_params.get("rater")
        return (gr.Tab(visible=True), gr.Tabs(selected="study"), text,
                rater_q if rater_q else gr.skip(), {"study": study.name, "session": new_session_id()})

    def show_next(state: dict, study: Study, note: str = "") -> list:
        nxt = study.next_round(state["rater"])
        if nxt is None:
            n = len(study.rater(state["rater"]).rounds)
            state = {**state, "round": None, "n": 0}
            return [state, f"**All {n} rounds done. Thank you!**", "", *_rank_updates(0, interactive=False,
                    reset=True), gr.update(interactive=False), note]
        index, round_id = nxt
        total = len(study.rater(state["rater"]).rounds)
        n = len(study.rounds[round_id]["candidates"])
        state = {**state, "round": round_id, "n": n}
        missing = study.missing_listening(state["rater"], round_id)
        return [state, f"**Round {index} of {total}** (round `{round_id}`, {n} candidates)",
                _round_html(study, state["rater"], state["session"], round_id),
                *_rank_updates(n, interactive=not missing, reset=True), gr.update(interactive=not missing), note]

    @user_errors("Starting the study")
    def start(state, rater, consent):
        if not state or not state.get("study"):
            raise EnsembleError("open the study's own link (?study=NAME) first")
        if not consent:
            raise EnsembleError("tick the consent box to take part")
        study = studies.get(state["study"])
        rid = study.rater(rater).rater_id
        return show_next({**state, "rater": rid}, study)

    @user_errors("Checking what was heard")
    def unlock(state):
        if not state or not state.get("round"):
            return [*(gr.skip() for _ in range(MAX_SHOWN)), gr.skip(), gr.skip()]
        study = studies.get(state["study"])
        missing = study.missing_listening(state["rater"], state["round"])
        if missing:
            return [*(gr.skip() for _ in range(MAX_SHOWN)), gr.skip(), "Still to hear: " + "; ".join(missing)]
        return [*_rank_updates(state["n"], interactive=True, reset=False), gr.update(interactive=True),
                "Every candidate heard: rank them (1 = best)."]

    def submit(state, comment, *ranks):
        if not state or not state.get("round"):
            return [gr.skip()] * (4 + MAX_SHOWN) + ["**Not saved:** no round is open; press Start / resume."]
        study = studies.get(state["study"])
        try:
            sid = study.submit(state["rater"], state["round"], list(ranks[:state["n"]]),
                               session_id=state["session"], comment=comment or "")
        except EnsembleError as exc:
            return [gr.skip()] * (4 + MAX_SHOWN) + [f"**Not saved:** {user_message(exc)}"]
        note = (f"**Saved** (submission `{sid[:12]}`). What you heard in that round:\n\n"
                + _revealed_md(study, state["rater"], state["round"]))
        return show_next(state, study, note)

    demo.load(on_study_load, None, [t.tab, tabs, t.header, t.rater, t.state], api_visibility="private")
    t.start.click(start, [t.state, t.rater, t.consent], t.round_outputs(), api_visibility="private")
    t.players.click(unlock, [t.state], [*t.ranks, t.submit, t.status], api_visibility="private")
    t.submit.click(submit, [t.state, t.comment, *t.ranks], t.round_outputs(), api_visibility="private")


__all__ += ["wire_study_tab"]
