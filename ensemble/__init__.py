"""ensemble: audio-conditioned multi-instrument music augmentation.

Layers, each importing only the ones below it::

    app.py                       Gradio UI (never imported from here)
    ensemble.cli                 argparse front for every job
    perform / rag / metrics / ratings
    ensemble.models              instrument decoders, arranger
    ensemble.dsp / features / audio   pure functions over arrays and tensors

Importing the package is cheap and has no side effects: no warnings filters, no global settings.
"""

from ensemble.errors import EnsembleError

__all__ = ["EnsembleError", "__version__"]
__version__ = "0.1.0"
