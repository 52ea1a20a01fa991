"""Every matplotlib drawing of the runtime.

* :mod:`ensemble.figures.report` -- a clip's report card (waveform, melody, dynamics, scores) and the
  comparison of continuation candidates, from :mod:`ensemble.metrics` analyses; PNG bytes and
  atomically written PNG files.
* :mod:`ensemble.figures.ratings` -- the listening-test charts, from
  :func:`ensemble.ratings.stats.summarize`'s result.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg backend and never through
``pyplot``, so there is no global figure state and they are safe to build in a web server's worker
threads. Each function takes its data *and* its labels and titles as arguments (defaults are the
project's wording); nothing here computes a metric or decides what a caller's page says.
"""
