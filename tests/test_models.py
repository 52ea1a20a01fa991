"""Decoder, arranger and checkpoint files: shapes, learning, any-length inference, bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ensemble.errors import EnsembleError
from ensemble.files import sha256_file
from ensemble.models import io
from ensemble.models.arranger import Arranger, ArrangerConfig, make_debug_arranger
from ensemble.models.decoder import (
    DecoderConfig,
    InstrumentDecoder,
    for_rendering,
    hold_unvoiced,
    make_debug_decoder,
    normalize_loudness,
    parallel_controls,
)
from ensemble.models.losses import multi_resolution_stft_loss

SR, HOP = 16000, 160


def test_decoder_shapes_and_embedding():
    model = make_debug_decoder()
    f0 = torch.full((2, 50, 1), 220.0)
    loud = torch.full((2, 50, 1), -20.0)
    audio = model(f0, loud, generator=torch.Generator().manual_seed(0))
    assert audio.shape == (2, 50 * HOP) and torch.isfinite(audio).all()
    emb = model.embed(f0, loud)
    assert emb.shape == (2, model.config.hidden)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_full_decoder_matches_spec_sizes():
    model = InstrumentDecoder(DecoderConfig())
    assert model.gru.num_layers == 3
    assert model.harmonic_head.out_features == 100 and model.noise_head.out_features == 65
    assert model.n_parameters() * 4 < 10e6  # a float32 checkpoint stays under 10 MB


def test_unvoiced_frames_are_held():
    f0 = torch.tensor([[0.0, 0.0, 200.0, 0.0, float("nan"), 300.0, 0.0]])[..., None]
    held = hold_unvoiced(f0)[0, :, 0].tolist()
    assert held == [200.0, 200.0, 200.0, 200.0, 200.0, 300.0, 300.0]
    assert hold_unvoiced(torch.zeros(1, 4, 1))[0, :, 0].tolist() == [110.0] * 4


def test_rendered_pitch_follows_f0():
    """Whatever the weights, the synth plays the f0 it is given (harmonic peaks at k * f0)."""
    model = make_debug_decoder().eval()
    f0 = torch.full((1, 100, 1), 261.63)
    with torch.inference_mode():
        c = model.controls(f0, torch.full((1, 100, 1), -10.0))
        harmonic = model.harmonic_synth.get_signal(c)[0].numpy()
    spec = np.abs(np.fft.rfft(harmonic * np.hanning(len(harmonic))))
    peak_hz = np.argmax(spec) * SR / len(harmonic)
    ratio = peak_hz / 261.63
    assert round(ratio) >= 1 and abs(1200 * np.log2(ratio / round(ratio))) < 10  # a harmonic of f0


def test_decoder_learns_a_target_timbre():
    """A few optimisation steps on one known tone reduce the STFT loss substantially."""
    torch.manual_seed(0)
    model = make_debug_decoder()
    T = 50
    t = torch.arange(T * HOP) / SR
    target = (0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.1 * torch.sin(2 * torch.pi * 440 * t))[None]
    f0, loud = torch.full((1, T, 1), 220.0), torch.full((1, T, 1), -12.0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        loss = multi_resolution_stft_loss(model(f0, loud, generator=gen), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    print(f"MR-STFT loss {losses[0]:.3f} -> {losses[-1]:.3f} in 60 steps "
          f"({100 * (1 - losses[-1] / losses[0]):.0f}% lower)")
    assert losses[-1] < 0.6 * losses[0]


def test_decoder_rejects_bad_shapes():
    with pytest.raises(EnsembleError, match=r"\[B, T, 1\]"):
        make_debug_decoder()(torch.zeros(1, 10), torch.zeros(1, 10))


def test_arranger_any_length_without_truncation():
    model = make_debug_arranger()
    c = model.config
    for T in (1, 7, c.window_frames, c.window_frames + 1, 5 * c.window_frames + 33):
        x = np.random.default_rng(T).uniform(0, 1, (T, len(c.inputs))).astype(np.float32)
        y = model.predict(x)
        assert y.shape == (T, len(c.followers))
        assert np.all((y >= 0) & (y <= 1))


def test_arranger_chunked_prediction_matches_windows():
    """Inside a window, far from the seams, chunked inference equals one forward pass."""
    model = make_debug_arranger().eval()
    c = model.config
    x = np.random.default_rng(0).uniform(0, 1, (3 * c.window_frames, len(c.inputs))).astype(np.float32)
    y = model.predict(x)
    with torch.no_grad():
        first = model(torch.tensor(x[None, : c.window_frames]))[0].numpy()
    core = slice(0, c.window_frames - c.overlap_frames)
    assert np.allclose(y[core], first[core], atol=1e-5)


def test_arranger_config_validation():
    with pytest.raises(EnsembleError, match="allowed"):
        ArrangerConfig(inputs=("loudness", "tempo"))
    with pytest.raises(EnsembleError, match="overlap"):
        ArrangerConfig(window_seconds=2.0, overlap_seconds=2.0)


def test_checkpoint_round_trip(tmp_path):
    model = make_debug_decoder("Bass")
    path = io.save_checkpoint(tmp_path / "decoder_Bass.pt", model, "decoder", {"steps": 3})
    loaded, meta = io.load_decoder(path)
    assert meta == {"steps": 3} and loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["sha256"] == sha256_file(path) and sidecar["config"]["instrument"] == "Bass"
    arr = make_debug_arranger()
    p2 = io.save_checkpoint(tmp_path / "arranger.pt", arr, "arranger", {})
    assert io.load_arranger(p2)[0].config == arr.config


def test_corrupt_and_wrong_checkpoints(tmp_path):
    model = make_debug_decoder()
    path = io.save_checkpoint(tmp_path / "d.pt", model, "decoder", {})
    with pytest.raises(EnsembleError, match="expected a 'arranger'"):
        io.load_arranger(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(EnsembleError, match="sha256"):
        io.load_decoder(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(EnsembleError, match="cannot be read"):
        io.load_decoder(path)
    with pytest.raises(EnsembleError, match="does not exist"):
        io.load_decoder(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(EnsembleError, match="cannot be read"):
        io.load_decoder(tmp_path / "garbage.pt")


def test_checkpoint_config_mismatch(tmp_path):
    model = make_debug_decoder()
    path = io.save_checkpoint(tmp_path / "d.pt", model, "decoder", {})
    payload = torch.load(path, weights_only=True)
    cfg = json.loads(payload["config_json"])
    cfg["hidden"] = 32
    payload["config_json"] = json.dumps(cfg)
    torch.save(payload, path)
    path.with_suffix(".json").unlink()
    with pytest.raises(EnsembleError, match="does not fit its config"):
        io.load_decoder(path)


def test_loudness_normalisation_range():
    x = normalize_loudness(np.array([-120.0, -80.0, -40.0, 0.0, 6.0]))
    assert x.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_arranger_forward_shape_check():
    with pytest.raises(EnsembleError):
        Arranger(ArrangerConfig(d_model=16, n_heads=2, n_layers=1))(torch.zeros(1, 10, 2))


def test_save_load_gives_identical_outputs(tmp_path):
    model = make_debug_decoder("Keys").eval()
    path = io.save_checkpoint(tmp_path / "k.pt", model, "decoder", {})
    loaded, _ = io.load_decoder(path)
    f0, loud = torch.full((1, 30, 1), 330.0), torch.full((1, 30, 1), -18.0)
    a = model(f0, loud, generator=torch.Generator().manual_seed(1))
    b = loaded(f0, loud, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_arranger_sixty_minutes_in_sixty_minutes_out():
    model = make_debug_arranger()
    T = 60 * 60 * 100  # 60 minutes at 100 frames/s
    x = np.random.default_rng(0).uniform(0, 1, (T, len(model.config.inputs))).astype(np.float32)
    y = model.predict(x)
    assert y.shape == (T, len(model.config.followers)) and np.isfinite(y).all()


def test_embed_is_stable():
    model = make_debug_decoder().eval()
    f0 = torch.tensor(np.linspace(200, 400, 300), dtype=torch.float32)[None, :, None]
    loud = torch.full((1, 300, 1), -20.0)
    assert torch.equal(model.embed(f0, loud), model.embed(f0, loud))


def test_shipped_embeddings_group_windows_of_the_same_piece():
    """In the shipped RAG database (BabyBand train+valid, embedded by the shipped Guitar decoder), a
    segment's nearest neighbour by GRU embedding comes from the same piece far more often than
    chance. Overlapping windows of the same track (< 8 s apart) are excluded as neighbours."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "assets" / "rag" / "chunks.npz"
    if not root.is_file():
        pytest.fail(f"{root} is missing: build it with `python -m ensemble index build`")
    with np.load(root) as z:
        emb = z["seg"][:, :-12].astype(np.float32)  # the GRU-embedding part (chroma excluded)
        track, start = z["track"], z["start"]
    sim = emb @ emb.T
    same = track[:, None] == track[None, :]
    overlap = same & (np.abs(start[:, None] - start[None, :]) < 800)
    sim[overlap] = -np.inf  # includes the diagonal
    nn = np.argmax(sim, axis=1)
    rate = float(np.mean(track[nn] == track))
    allowed = ~overlap
    chance = float(np.mean((same & allowed).sum(axis=1) / allowed.sum(axis=1)))
    print(f"nearest neighbour from the same piece: {rate:.3f} (chance {chance:.3f})")
    assert rate > 3 * chance


def test_beat_phase_on_a_known_grid():
    """Beats every 0.5 s (120 BPM): phase 0 on the beats, 0.5 half-way, 0.25 a quarter in; the
    features are sin/cos of 2*pi*k*phase for k = 1..4."""
    from ensemble.beats import beat_phase, beat_phase_features

    beats = np.arange(-0.5, 11.0, 0.5)
    phase = beat_phase(beats, 1000, 100.0)  # 10 s at 100 frames/s
    assert phase[[0, 50, 100, 950]] == pytest.approx([0.0, 0.0, 0.0, 0.0], abs=1e-9)
    assert phase[[25, 125]] == pytest.approx([0.5, 0.5]) and phase[12] == pytest.approx(0.24)
    f = beat_phase_features(beats, 1000, 100.0)
    assert f.shape == (1000, 8)
    assert f[25, :4] == pytest.approx(np.sin(np.pi * np.arange(1, 5)), abs=1e-6)
    assert f[25, 4:] == pytest.approx(np.cos(np.pi * np.arange(1, 5)), abs=1e-6)
    with pytest.raises(EnsembleError, match="increasing"):
        beat_phase(np.array([1.0]), 10, 100.0)


def test_arranger_beat_input_follows_a_click_track():
    """A 120 BPM click leader: the tracked grid puts the clicks at beat phase ~0 (within 40 ms = 0.08
    of a beat), and an arranger with the beat input takes the 12 feature columns."""
    from ensemble.models.arranger import arranger_features

    sr, bpm = 16000, 120.0
    clicks = np.arange(0.25, 9.9, 60.0 / bpm)
    y = np.zeros(10 * sr, np.float32)
    t = np.arange(int(0.03 * sr)) / sr
    for c in clicks:
        i = int(c * sr)
        y[i:i + len(t)] += 0.5 * np.sin(2 * np.pi * 1000 * t) * np.exp(-t * 150)
    T = 1 + len(y) // HOP
    inputs = ("loudness", "onset", "f0", "voiced", "beat")
    x = arranger_features(y, np.zeros(T), np.zeros(T, bool), np.full(T, -30.0), inputs)
    assert x.shape == (T, 12)
    phase = np.arctan2(x[:, 4], x[:, 8]) / (2 * np.pi) % 1.0  # k = 1: sin and cos columns
    at_clicks = phase[(clicks * 100).astype(int)]
    dist = np.minimum(at_clicks, 1 - at_clicks)
    assert np.median(dist) < 0.08
    model = Arranger(ArrangerConfig(inputs=inputs, d_model=16, n_heads=2, n_layers=1))
    assert model.predict(x).shape == (T, 3)
    with pytest.raises(EnsembleError, match="12"):
        model.predict(x[:, :5])


def _snr_db(ref: torch.Tensor, x: torch.Tensor) -> float:
    return float(10 * torch.log10((ref ** 2).sum() / ((x - ref) ** 2).sum().clamp_min(1e-30)))


def _shipped_keys() -> InstrumentDecoder:
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "checkpoints" / io.decoder_file("Keys")
    return io.load_decoder(path)[0].eval()


def test_float16_gru_renders_what_float32_renders():
    """The rendering copy (float16 GRU weights) of the shipped Keys decoder renders a 3-voice chord
    line within 60 dB SNR of the float32 decoder (measured ~90 dB), the same pitch (cents), and
    leaves the original decoder float32."""
    dec = _shipped_keys()
    fast = for_rendering(dec)
    assert isinstance(dec.gru, torch.nn.GRU) and type(fast.gru) is not torch.nn.GRU
    assert for_rendering(dec, "float32") is dec
    with pytest.raises(EnsembleError, match="gru_weights 'int4'.*float32, float16"):
        for_rendering(dec, "int4")
    T = 300
    f0 = torch.tensor([[261.63], [329.63], [392.0]]).repeat(1, T)[..., None]  # C major triad
    loud = torch.linspace(-40, -15, T).repeat(3, 1)[..., None]
    with torch.inference_mode():
        ref = dec(f0, loud, generator=torch.Generator().manual_seed(1))
        out = fast(f0, loud, generator=torch.Generator().manual_seed(1))
    snr = _snr_db(ref, out)
    print(f"float16 GRU vs float32: SNR {snr:.1f} dB")
    assert snr >= 60.0
    # the pitch is the same: the strongest partial of the top voice at 392 Hz (+-1 bin of 1 Hz = 4.4 c)
    spec = np.abs(np.fft.rfft(out[2, 16000:].numpy()[:SR]))
    assert abs(1200 * np.log2((np.argmax(spec[100:1000]) + 100) / 392.0)) < 5.0


def test_parallel_controls_equal_one_batch():
    """Controls of a batch split over two threads equal one call's (float rounding only), for a
    batch that does not split evenly; one row or one worker is the plain call."""
    dec = for_rendering(_shipped_keys())
    B, T = 5, 200
    f0 = torch.linspace(110, 440, B)[:, None, None].repeat(1, T, 1)
    loud = torch.linspace(-50, -10, T)[None, :, None].repeat(B, 1, 1)
    with torch.inference_mode():
        one = dec.controls(f0, loud)
        two = parallel_controls(dec, f0, loud, workers=2)
        single = parallel_controls(dec, f0[:1], loud[:1], workers=2)
    assert one.keys() == two.keys()
    for k in one:
        assert two[k].shape == one[k].shape
        assert torch.allclose(two[k], one[k], rtol=1e-4, atol=1e-6), k
    assert torch.allclose(single["harmonic_amplitudes"], one["harmonic_amplitudes"][:1], rtol=1e-4, atol=1e-6)
