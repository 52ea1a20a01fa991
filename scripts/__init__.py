"""Project commands that build shipped artefacts (run as ``python -m scripts.NAME``)."""
