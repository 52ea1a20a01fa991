"""The web app's pieces (``app.py`` assembles them).

* :mod:`ui.rounds` -- one request's work without Gradio: read the upload, run
  :func:`ensemble.extend.extend`, analyse and draw the candidates, write PCM-16 WAVs (plain and
  loudness-matched) into a per-request folder, shuffle for blind listening, and turn a rater's ranks
  into an :class:`ensemble.ratings.Submission`; plus the bounded store that owns those folders.
* :mod:`ui.page` -- the Gradio page: tabs, the grid of candidate cards, events and named API
  endpoints.

Nothing under ``ensemble/`` imports Gradio (``tests/test_layout.py``); the page lives here instead.
"""
