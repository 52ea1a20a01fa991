"""Multitrack corpora: the BabyBand builder, Slakh/BabySlakh and URMP importers, and statistics.

All three producers write the same layout (:mod:`ensemble.jobs.corpus.layout`), so a trainer reads a
built and an imported corpus the same way (:func:`load_track`, :func:`list_tracks`).
"""

from ensemble.jobs.corpus.build import (
    COLLECTIONS,
    STEMS,
    BuildConfig,
    BuildReport,
    PieceRef,
    build_corpus,
    build_track,
    list_pieces,
    plan_pieces,
    render_notes,
)
from ensemble.jobs.corpus.layout import (
    SPLITS,
    NoteList,
    Track,
    is_complete_track,
    list_tracks,
    load_track,
    notes_to_frames,
)

__all__ = [
    "COLLECTIONS",
    "STEMS",
    "SPLITS",
    "BuildConfig",
    "BuildReport",
    "PieceRef",
    "NoteList",
    "Track",
    "build_corpus",
    "build_track",
    "list_pieces",
    "plan_pieces",
    "render_notes",
    "notes_to_frames",
    "is_complete_track",
    "list_tracks",
    "load_track",
]
