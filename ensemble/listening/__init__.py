"""The listening round, without Gradio: what the page (``ui/``) serves, as plain Python.

Modules:
    :mod:`.settings`  the upload decoded and checked, the page's settings checked (against the
                      engine's :class:`~ensemble.engine.Limits`);
    :mod:`.levels`    integrated loudness and the gain of loudness-matched playback;
    :mod:`.round`     one round: extend, blind order, the candidates' files and figures, the rater's
                      submission;
    :mod:`.take`      a candidate as a musician's take: mix, stems and the band's parts as MIDI, one zip;
    :mod:`.store`     the rounds a server holds, bounded in number, age and disk;
    :mod:`.runs`      a server run's own temporary folder, and the start-up sweep of earlier runs' ones.
"""
