"""The offline jobs: everything that builds what the runtime loads, and measures it.

Never imported by the runtime (``python app.py``, ``extend``, ``perform``, ``report``;
``tests/test_layout.py`` checks it). The jobs may use every runtime module.

Modules:
    :mod:`.corpus`        BabyBand builder, Slakh/URMP importers, corpus layout and statistics
    :mod:`.training`      decoder and arranger training and their held-out evaluation
    :mod:`.index`         the RAG database build (``python -m ensemble index build``)
    :mod:`.distributed`   that build on Dask: one task per track, resumable shards (the default)
    :mod:`.drum_assets`   the drum database and learned harmony model (``python -m ensemble drums build``)
    :mod:`.perform_eval`  the performer's quality evaluation on BabyBand
"""
