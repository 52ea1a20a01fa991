"""The ground-floor helpers (files, music, config), the engine's one configuration and the decoder's
public GRU states."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from ensemble.config import config_from_dict, config_to_json
from ensemble.engine import EngineConfig, Limits
from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig
from ensemble.files import atomic_write, atomic_write_text, sha256_file, write_json_atomic
from ensemble.models.decoder import make_debug_decoder
from ensemble.music import PC_NAMES, cents_between, estimate_key, hz_to_cents, hz_to_midi, midi_to_hz
from ensemble.perform import PerformConfig
from ensemble.rag import RagConfig

# ----------------------------------------------------------------------------- files


def test_atomic_write_replaces_whole_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    atomic_write_text(path, "first")
    assert path.read_text() == "first" and oct(path.stat().st_mode & 0o777) == "0o644"

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "first"  # the old file is untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]  # no temporary file left


def test_sha256_file_and_json(tmp_path):
    path = write_json_atomic(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert path.read_text() == json.dumps({"b": 1, "a": [1, 2]}, indent=1) + "\n"
    assert sha256_file(path) == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert os.path.getsize(path) > 0


# ----------------------------------------------------------------------------- music


def test_pitch_conversions_in_musical_units():
    assert hz_to_midi(440.0) == pytest.approx(69.0)
    assert hz_to_midi(np.array([261.6256]))[0] == pytest.approx(60.0, abs=1e-4)
    assert np.isnan(hz_to_midi(np.array([0.0, -1.0]))).all()  # unvoiced
    assert midi_to_hz(81.0) == pytest.approx(880.0)
    assert float(hz_to_midi(torch.tensor([880.0]))[0]) == pytest.approx(81.0)  # the decoders' path
    assert hz_to_cents(np.array([880.0]))[0] == pytest.approx(1200.0)
    f32 = np.array([440.0 * 2 ** (1 / 12)], np.float32)
    assert hz_to_cents(f32, dtype=None).dtype == np.float32 and hz_to_cents(f32)[0] == pytest.approx(100.0, abs=1e-3)
    assert cents_between(440.0 * 2 ** (2 / 12), 440.0) == pytest.approx(200.0)  # a whole tone up
    assert math.isnan(cents_between(0.0, 440.0))
    assert cents_between(np.array([220.0, 0.0]), np.array([440.0, 440.0]))[0] == pytest.approx(-1200.0)


def test_key_estimate_of_scales_and_the_final_note():
    major = np.zeros(12)
    major[[0, 2, 4, 5, 7, 9, 11]] = 1.0
    major[[0, 4, 7]] += 1.0  # the tonic triad sounds longest
    assert estimate_key(major).name == "C major"
    assert estimate_key(np.roll(major, 7)).name == "G major"
    minor = np.zeros(12)
    minor[[9, 11, 0, 2, 4, 5, 7]] = 1.0  # A natural minor: C major's notes, the A minor triad longest
    minor[[9, 0, 4]] += 1.0
    assert estimate_key(minor).name == "A minor"
    # a scale that could be C major or G major: the final note settles it
    ambiguous = np.zeros(12)
    ambiguous[[0, 2, 4, 7, 9]] = 1.0
    assert estimate_key(ambiguous, final_pc=7, final_bonus=0.3).tonic == 7
    assert estimate_key(np.zeros(12)).confidence == 0.0
    assert PC_NAMES[estimate_key(major).tonic] == "C"
    with pytest.raises(EnsembleError, match="12 bins"):
        estimate_key(np.ones(7))


# ----------------------------------------------------------------------------- configs


def test_one_serialiser_roundtrips_every_config_and_refuses_unknown_keys():
    for cfg in (EngineConfig(database_dir="x", limits=Limits(max_k=5)), RagConfig(lookbacks=(7.0, 8.0)),
                PerformConfig(followers=("Bass",)), FeatureConfig()):
        again = config_from_dict(type(cfg), json.loads(config_to_json(cfg)))
        assert again == cfg
    with pytest.raises(EnsembleError, match=r"unknown RagConfig keys \['alfa'\]; allowed: .*'alpha'"):
        RagConfig.from_dict({"alfa": 0.5})
    with pytest.raises(EnsembleError, match=r"unknown EngineConfig.limits keys \['max_candidates'\]"):
        EngineConfig.from_dict({"limits": {"max_candidates": 3}})
    with pytest.raises(EnsembleError, match="must be a JSON object"):
        config_from_dict(PerformConfig, ["Bass"])


def test_limits_are_declared_once_and_checked():
    limits = EngineConfig().limits
    assert (limits.min_input_seconds, limits.max_input_seconds, limits.max_target_seconds, limits.max_k) == (
        2.0, 600.0, 600.0, 10)
    assert PerformConfig().max_seconds == limits.max_target_seconds
    with pytest.raises(EnsembleError, match="max_k 0 must be >= 1"):
        Limits(max_k=0)
    with pytest.raises(EnsembleError, match="max_target_seconds 900"):
        Limits(max_target_seconds=900.0)


# ----------------------------------------------------------------------------- decoder states


def test_gru_states_in_blocks_equal_one_pass():
    decoder = make_debug_decoder().eval()
    rng = np.random.default_rng(0)
    T = 250
    f0 = torch.tensor(np.where(rng.random(T) < 0.8, rng.uniform(100, 800, T), 0.0), dtype=torch.float32)
    loud = torch.tensor(rng.uniform(-70, -10, T), dtype=torch.float32)
    f0, loud = f0[None, :, None], loud[None, :, None]
    with torch.inference_mode():
        whole = decoder.gru_states(f0, loud, block_frames=T)
        blocks = decoder.gru_states(f0, loud, block_frames=37)
        _, x = decoder._inputs(f0, loud)
        reference = decoder.hidden_states(x)
    assert whole.shape == (1, T, decoder.config.hidden)
    assert torch.allclose(whole, reference, atol=1e-6) and torch.allclose(blocks, whole, atol=1e-5)
    with pytest.raises(EnsembleError, match="block_frames"):
        decoder.gru_states(f0, loud, block_frames=0)
