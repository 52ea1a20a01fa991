"""A tiny synthetic corpus in the BabyBand layout, for RAG and app tests (no rendering needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def melody(rng: np.random.Generator, seconds: float, tonic_midi: int, note_seconds: float,
           amplitude: float = 0.3) -> np.ndarray:
    """A plucked-ish diatonic melody with a few harmonics: [n] float32."""
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
    n_notes = int(np.ceil(seconds / note_seconds))
    steps = np.cumsum(rng.integers(-2, 3, n_notes))
    midi = tonic_midi + scale[np.clip(steps % 8, 0, 7)]
    note_len = int(note_seconds * SR)
    f = np.repeat(440.0 * 2 ** ((midi - 69) / 12), note_len)[: int(seconds * SR)]
    env = np.tile(np.exp(-np.arange(note_len) / (0.4 * note_len)), n_notes)[: len(f)]
    phase = 2 * np.pi * np.cumsum(f) / SR
    y = amplitude * env * (np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.1 * np.sin(3 * phase))
    return y.astype(np.float32)


def write_corpus(root: Path, n_tracks: int = 6, seconds: float = 30.0, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_tracks):
        track = root / f"Track{i:05d}"
        (track / "stems").mkdir(parents=True)
        y = melody(rng, seconds, tonic_midi=int(rng.integers(57, 69)),
                   note_seconds=float(rng.choice([0.25, 0.4, 0.6])))
        sf.write(track / "stems" / "Guitar.flac", y, SR)
        split = "test" if i == n_tracks - 1 else "train"
        (track / "metadata.json").write_text(json.dumps({"split": split, "source": f"synthetic {i}"}))
    return root
