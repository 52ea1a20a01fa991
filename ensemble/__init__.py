"""ensemble: audio-conditioned multi-instrument music augmentation.

Two wings, each layer importing only the ones below it (``tests/test_layout.py`` checks every file)::

    entry points   app.py, ui/ (Gradio only), ensemble.cli (argparse), __main__
    OFFLINE JOBS   ensemble.jobs: corpus building and importers, training, evaluation, the RAG
                   database and drum asset builds -- never imported by the runtime
    RUNTIME
      listening    ensemble.listening: rounds, blind order, levels, the round store (no gradio)
      figures      ensemble.figures: every matplotlib drawing, data and labels passed in
      pipeline     ensemble.engine (Engine, EngineConfig, Limits), extend, rag, perform/,
                   ratings/ (the log, its statistics)
      analysis     ensemble.metrics: clip analysis, cache, scores, seams
      models       ensemble.models: decoders, arranger (+ its input features), checkpoint files
      ground       errors, files (atomic writes, hashes), music (pitch, keys), config (one config
                   (de)serialiser), audio, dsp, features, beats

Importing the package is cheap and has no side effects: no warnings filters, no global settings.
"""

from ensemble.errors import EnsembleError

__all__ = ["EnsembleError", "__version__"]
__version__ = "0.1.0"
