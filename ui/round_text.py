"""The words the page shows about a round: its status line and each candidate's scores (Markdown).

Gradio-free: plain functions of a :class:`~ensemble.listening.round.Round`, shared by the Generate
tab (the status once a round is made) and the Listen tab (status, revealed scores).
"""

from __future__ import annotations

import numpy as np

from ensemble.listening.round import Round

__all__ = ["round_status", "scores_markdown"]


def _fmt(x: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:{spec}}{unit}"


def scores_markdown(rnd: Round, i: int) -> str:
    """The scores card of the candidate shown at position ``i + 1``.

    Args:
        rnd: the round.
        i: the shown position, 0-based.

    Returns:
        Markdown: composite rank, the composite's terms, where the segment came from, the seam's jumps.
    """
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


def round_status(rnd: Round) -> str:
    """What the round is and what to do next.

    Args:
        rnd: the round.

    Returns:
        Markdown: K, lengths, weights and time taken; the order shown (blind or by score); the
        round's notes; and, until it is rated, how to rate it.
    """
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
