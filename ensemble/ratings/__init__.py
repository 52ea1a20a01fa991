"""The listening test's ratings: the log on disk and its statistics.

* :mod:`ensemble.ratings.log` -- the ``ratings.csv`` log: its columns (``RATINGS_COLUMNS``), what one
  submission holds (``CandidateRating``, ``Submission``), validating it, appending it safely across
  threads and processes (lock, one write, fsync, CSV-injection neutralising, repair of a partial last
  line, the one-time upgrade of a log written before a column was added) and reading the log back into
  a DataFrame.
* :mod:`ensemble.ratings.stats` -- agreement between the system's composite ranking and the
  listeners' (Kendall tau with bootstrap intervals, first choices, mean human rank), as a dict, text
  tables or one JSON line.
* :mod:`ensemble.ratings.fit` -- the composite's weights fitted to the logged rankings (Plackett-Luce
  over the sub-scores), their held-out evaluation on raters left out, and the weights file the engine
  ranks with.

Where the log lives is the app's hosting configuration (``ui/config.py``); the charts of a summary
are in :mod:`ensemble.figures.ratings`. Import from the modules; this package re-exports nothing.
"""
