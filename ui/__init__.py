"""The web app's pieces (``app.py`` assembles them); the only place that imports Gradio.

* :mod:`ui.page` -- ``build_page``: the Blocks, one builder per tab, and the events between them;
  ``PageConfig``, theme and CSS.
* :mod:`ui.generate_tab`, :mod:`ui.listen_tab`, :mod:`ui.results_tab` -- each tab's components and
  handlers (the ``/generate``, ``/rate`` and ``/summary`` endpoints).
* :mod:`ui.errors` -- ``EnsembleError`` -> a readable ``gr.Error``; anything else logged, shown short.
* :mod:`ui.round_text` -- the status and score text of a round (no Gradio).
* :mod:`ui.config` -- hosting: where the ratings log lives (``$RATINGS_DIR``, Spaces' ``/data``); the
  server's caps and keys (``ServerConfig``).
* :mod:`ui.guard` -- the request-rate cap, the API's parameters checked by type, sliders and checkbox
  groups that leave the range check to the app, refused uploads deleted.

A request's work (reading the upload, the round, blind order, loudness matching, the round store) is
in :mod:`ensemble.listening`, without Gradio (``tests/test_layout.py`` checks that nothing under
``ensemble/`` imports it).
"""
