"""Shared fixtures: a seeded RNG and synthetic signals with known pitch and level."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble.features import FeatureConfig

SR = 16000


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def config() -> FeatureConfig:
    return FeatureConfig()


def sine_from_f0(f_hz: np.ndarray, sr: int = SR, amplitude: float = 0.5) -> np.ndarray:
    """A sine whose instantaneous frequency follows ``f_hz`` [n_samples] (phase = cumulative sum)."""
    phase = 2.0 * np.pi * np.cumsum(f_hz) / sr
    return (amplitude * np.sin(phase)).astype(np.float32)


def f0_at_frames(f_hz: np.ndarray, n: int, hop: int) -> np.ndarray:
    """The per-sample frequency curve read at frame centres ``t * hop``."""
    return np.interp(np.arange(n) * hop, np.arange(len(f_hz)), f_hz)


@pytest.fixture(scope="module")
def steady_tone() -> tuple[np.ndarray, np.ndarray]:
    """2 s of 330 Hz (E4) with three harmonics; returns (audio, per-sample f0)."""
    f = np.full(2 * SR, 330.0)
    y = sine_from_f0(f) + sine_from_f0(2 * f, amplitude=0.2) + sine_from_f0(3 * f, amplitude=0.1)
    return y.astype(np.float32), f


@pytest.fixture(scope="module")
def vibrato_tone() -> tuple[np.ndarray, np.ndarray]:
    """2 s around 220 Hz with 5.5 Hz vibrato of +-40 cents."""
    t = np.arange(2 * SR) / SR
    f = 220.0 * 2.0 ** ((40.0 / 1200.0) * np.sin(2 * np.pi * 5.5 * t))
    return sine_from_f0(f), f


@pytest.fixture(scope="module")
def tone_silence_tone() -> tuple[np.ndarray, np.ndarray]:
    """1 s of 440 Hz, 1 s of digital silence, 1 s of 440 Hz."""
    f = np.full(3 * SR, 440.0)
    y = sine_from_f0(f)
    y[SR:2 * SR] = 0.0
    return y, f
