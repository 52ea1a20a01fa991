"""The words the page shows about a round: its status line and each candidate's scores (Markdown).

Gradio-free: plain functions of a :class:`~ensemble.listening.round.Round`, shared by the Generate
tab (the status once a round is made) and the Listen tab (status, revealed scores).
"""

from __future__ import annotations

from ensemble.listening.round import Round
from ensemble.metrics import seam_jump_text
from ensemble.outputs import timbre_text

__all__ = ["round_status", "scores_markdown"]


def scores_markdown(rnd: Round, i: int) -> str:
    """The scores card of the candidate shown at position ``i + 1``.

    Args:
        rnd: the round.
        i: the shown position, 0-based.

    Returns:
        Markdown: composite rank, the composite's terms (with the weights that made it: the fallback
        pass's for a fallback candidate), where the segment came from, the seam's jumps
        (the candidate's own numbers, signed: after minus before, as in the API and the ratings log),
        the timbre that rendered it.
    """
    s = rnd.shown[i].scores()
    alpha, beta = rnd.weights(i)  # a fallback-pass candidate's composite has the fallback's weights
    lines = [
        f"**Composite rank {s['composite_rank']} of {rnd.k}**"
        + (" (fallback pass)" if s["fallback"] else ""),
        f"composite **{s['composite']:.3f}** = {alpha:g} x relevance {s['relevance']:.3f} "
        f"+ {beta:g} x coherence {s['coherence']:.3f}",
        f"lookback {s['lookback_s']:g} s, transpose {s['transpose']:+d} st; from {s['track']} at "
        f"{s['start_seconds']:.1f} s (chunk {s['db_chunk_idx']})",
        f"seam: {seam_jump_text(s['seam_pitch_jump_cents'], s['seam_loudness_jump_db'])}",
        f"instrument sound: {timbre_text(rnd.timbre)}",
    ]
    return "  \n".join(lines)


def round_status(rnd: Round) -> str:
    """What the round is and what to do next.

    Args:
        rnd: the round.

    Returns:
        Markdown: K, lengths, weights and time taken; the round's notes (what extend said about the
        input, e.g. that the database cannot serve it well); the instrument sound that rendered the
        candidates and how it was chosen; the order shown (blind or by score); and, until it is
        rated, how to rate it.
    """
    total = rnd.timings.get("total", sum(rnd.timings.values()))
    parts = [f"**{rnd.k} candidate{'s' if rnd.k != 1 else ''}** of {rnd.target_seconds:g} s for your "
             f"{rnd.input_seconds:.1f} s clip (alpha {rnd.alpha:g}, beta {rnd.beta:g}), "
             f"made in {total:.0f} s."]
    # the request's notes (e.g. an input the database cannot serve well) come first, in bold, so
    # they are read before the candidates are
    parts += [f"**Note:** {n}" for n in rnd.notes]
    parts.append(f"Instrument sound: {timbre_text(rnd.timbre, notes=rnd.notes)}.")
    if rnd.blind:
        parts.append("Blind mode: shown in shuffled order"
                     + ("; your ranking is saved and the figures and scores are revealed on each card."
                        if rnd.submission_id else ", figures and scores hidden until you submit."))
    else:
        parts.append("Shown in composite-score order (1 = the system's best).")
    if rnd.submission_id is None:
        parts.append("Listen to every candidate, give each a distinct rank (1 = best), then submit.")
    return "  \n".join(parts)
