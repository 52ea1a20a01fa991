"""Performer: turn any leader clip into a band arrangement (bass + drums + keys).

The public entry points (the CLI, the app and the RAG use these)::

    from ensemble.perform import PerformConfig, Performer, write_performance

    performer = Performer.load(PerformConfig(checkpoints_dir="checkpoints", drum_db="assets/drums"))
    performance = performer.perform(audio_16k)        # [n] float32 -> Performance
    write_performance(performance, "out/take1")       # mix.wav, stems/*.wav, perform.json

Modules: :mod:`.config` (settings), :mod:`.analysis` (the leader analysed once, harmony plan),
:mod:`.harmony` (roots, chords, voicings; keys are :mod:`ensemble.music`'s), :mod:`.rhythm` (beat
grids), :mod:`.drums` (drum database: cut, store, choose, lay), :mod:`.performer` (models held once,
rendering, mixing, writing). Building the shipped drum database and evaluating the band are offline
jobs: :mod:`ensemble.jobs.drum_assets`, :mod:`ensemble.jobs.perform_eval`.
"""

from ensemble.perform.config import FOLLOWERS, PerformConfig, parse_followers
from ensemble.perform.performer import Performance, Performer, write_performance

__all__ = ["FOLLOWERS", "PerformConfig", "Performance", "Performer", "parse_followers",
           "write_performance"]
