"""Training and evaluation of the instrument decoders and the arranger on a corpus directory.

A corpus directory has the BabyBand/Slakh-like layout written by ``python -m ensemble corpus``:
``TrackNNNNN/{metadata.json, features.npz, stems/<Instrument>.flac}``. Decoders train on one stem's
audio with its ground-truth f0 and loudness; the arranger trains on the leader's (Guitar) features
against the followers' loudness.

Training is seeded and resumable: every ``checkpoint_every`` steps the model, optimiser, step count,
RNG states and loss history go to ``<out>/.train-<name>/state.pt``; running the same command again
continues from there. ``max_minutes`` stops a run cleanly at a wall-time budget (it can be resumed).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import librosa
import numpy as np
import torch
from tqdm.auto import tqdm

from ensemble.audio import load_audio
from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig, f0_pyin, loudness_db, onset_strength
from ensemble.files import atomic_write
from ensemble.models import io
from ensemble.models.arranger import Arranger, ArrangerConfig, arranger_features
from ensemble.models.decoder import (
    DecoderConfig,
    InstrumentDecoder,
    normalize_loudness,
)
from ensemble.models.losses import multi_resolution_stft_loss
from ensemble.music import cents_between

__all__ = [
    "TrainConfig",
    "StemData",
    "load_stems",
    "corpus_manifest_hash",
    "train_decoder",
    "train_arranger",
    "evaluate_decoder",
    "evaluate_arranger",
    "additive_baseline",
]

ACTIVE_DB = -50.0  # a frame "sounds" when its loudness is above this


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by decoder and arranger training."""

    steps: int = 1200
    batch_size: int = 16
    window_seconds: float = 2.0
    learning_rate: float = 1e-3
    lr_final: float = 1e-4
    grad_clip: float = 3.0
    seed: int = 0
    max_minutes: float = 45.0
    checkpoint_every: int = 50
    min_active: float = 0.3  # windows need this fraction of sounding frames
    fft_sizes: tuple[int, ...] = (1024, 512, 256, 128, 64)  # MR-STFT resolutions


@dataclass
class StemData:
    """One stem of one track: audio [N] float32 and per-frame f0 [T] Hz / loudness [T] dB."""

    track: str
    audio: np.ndarray
    f0_hz: np.ndarray
    voiced: np.ndarray
    loudness_db: np.ndarray
    timbre: str | None = None  # the track's "timbre" (a timbre corpus, ensemble.jobs.timbres)


def _track_timbre(track: Path) -> str | None:
    try:
        return json.loads((track / "metadata.json").read_text()).get("timbre")
    except (OSError, ValueError):
        return None


def _tracks(data_dir: Path, split: str) -> list[Path]:
    if not data_dir.is_dir():
        raise EnsembleError(f"corpus directory {str(data_dir)!r} does not exist; "
                            "build it with `python -m ensemble corpus build`")
    out = []
    for meta_path in sorted(data_dir.glob("*/metadata.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a damaged track is skipped, not fatal
        if meta.get("split") == split:
            out.append(meta_path.parent)
    if not out:
        raise EnsembleError(f"corpus {str(data_dir)!r} has no tracks in split {split!r}")
    return out


def corpus_manifest_hash(data_dir: str | os.PathLike) -> str:
    """sha256 over every track's metadata.json: identifies the data a model was trained on."""
    h = hashlib.sha256()
    for p in sorted(Path(data_dir).glob("*/metadata.json")):
        h.update(p.parent.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _stem_arrays(npz, stem: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys = (f"{stem}/f0_hz", f"{stem}/voiced", f"{stem}/loudness_db")
    if not all(k in npz for k in keys):
        raise KeyError(stem)
    return (npz[keys[0]].astype(np.float32), npz[keys[1]].astype(bool),
            npz[keys[2]].astype(np.float32))


def load_stems(data_dir: str | os.PathLike, stem: str, split: str,
               with_audio: bool = True) -> list[StemData]:
    """All ``stem`` stems of a split (tracks lacking the stem are skipped)."""
    out = []
    for track in _tracks(Path(data_dir), split):
        path = track / "stems" / f"{stem}.flac"
        if not path.is_file():
            continue
        try:
            with np.load(track / "features.npz") as npz:
                f0, voiced, loud = _stem_arrays(npz, stem)
        except (OSError, KeyError, ValueError):
            continue
        audio = load_audio(path, max_seconds=3600).audio if with_audio else np.zeros(0, np.float32)
        out.append(StemData(track.name, audio, f0, voiced, loud, _track_timbre(track)))
    if not out:
        raise EnsembleError(f"no {stem!r} stems with features in split {split!r} of {str(data_dir)!r}")
    return out


class _WindowSampler:
    """Random training windows of ``frames`` frames from stems, favouring sounding windows."""

    def __init__(self, stems: list[StemData], frames: int, min_active: float, rng: np.random.Generator):
        self.stems = [s for s in stems if len(s.loudness_db) > frames + 1]
        if not self.stems:
            raise EnsembleError(f"no stem is longer than the {frames}-frame training window")
        lengths = np.array([len(s.loudness_db) - frames for s in self.stems], dtype=np.float64)
        self.p = lengths / lengths.sum()
        self.frames, self.min_active, self.rng = frames, min_active, rng

    def sample(self) -> tuple[StemData, int]:
        for _ in range(50):
            s = self.stems[self.rng.choice(len(self.stems), p=self.p)]
            start = int(self.rng.integers(0, len(s.loudness_db) - self.frames))
            if (s.loudness_db[start:start + self.frames] > ACTIVE_DB).mean() >= self.min_active:
                return s, start
        return s, start


def _lr(step: int, cfg: TrainConfig) -> float:
    """Exponential decay from learning_rate to lr_final over the run."""
    frac = min(1.0, step / max(1, cfg.steps))
    return cfg.learning_rate * (cfg.lr_final / cfg.learning_rate) ** frac


def _state_path(out_dir: Path, name: str) -> Path:
    return out_dir / f".train-{name}" / "state.pt"


def _save_state(path: Path, model, opt, step: int, losses: list[float], rng: np.random.Generator,
                wall: float) -> None:
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
             "losses": torch.tensor(losses, dtype=torch.float64), "wall": wall,
             "rng": json.dumps(rng.bit_generator.state), "torch_rng": torch.get_rng_state()}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _resume(path: Path, model, opt) -> tuple[int, list[float], dict | None, float]:
    if not path.is_file():
        return 0, [], None, 0.0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
    except Exception as exc:
        raise EnsembleError(f"resume state {str(path)!r} is damaged ({type(exc).__name__}); "
                            "delete it to start over") from None
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), state["losses"].tolist(), json.loads(state["rng"]), float(state["wall"])


def _run(name: str, model: torch.nn.Module, batch_loss, cfg: TrainConfig, out_dir: Path,
         rng: np.random.Generator, progress: bool) -> tuple[int, list[float], float, bool]:
    """The shared loop: resumable, budgeted, clipped Adam with exponential LR decay."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    state_path = _state_path(out_dir, name)
    step, losses, rng_state, wall_before = _resume(state_path, model, opt)
    if rng_state is not None:
        rng.bit_generator.state = rng_state
    t0 = time.monotonic()
    budget_s = cfg.max_minutes * 60.0
    stopped_early = False
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {name}", disable=not progress,
               dynamic_ncols=True)
    model.train()
    while step < cfg.steps:
        if time.monotonic() - t0 > budget_s:
            stopped_early = True
            break
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg)
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            _save_state(state_path, model, opt, step, losses, rng, wall_before + time.monotonic() - t0)
    bar.close()
    wall = wall_before + time.monotonic() - t0
    _save_state(state_path, model, opt, step, losses, rng, wall)
    return step, losses, wall, stopped_early


def _loss_summary(losses: list[float]) -> dict:
    n = len(losses)
    every = max(1, n // 50)
    return {"first": losses[0] if n else None, "last100_mean": float(np.mean(losses[-100:])) if n else None,
            "curve_every": every, "curve": [round(float(np.mean(losses[i:i + every])), 5)
                                            for i in range(0, n, every)]}


def train_decoder(data_dir: str | os.PathLike, instrument: str, out_dir: str | os.PathLike, *,
                  model_config: DecoderConfig | None = None, train_config: TrainConfig = TrainConfig(),
                  progress: bool = True, command: str = "", features: FeatureConfig = FeatureConfig()) -> dict:
    """Train one instrument decoder with the multi-resolution STFT loss.

    Writes ``<out>/decoder_<instrument>.pt`` (+ ``.json``) when the step count is reached, and
    returns the training metadata. A run stopped by ``max_minutes`` keeps its resume state and
    writes the checkpoint as it stands (``meta["complete"] = False``).
    """
    out_dir = Path(out_dir)
    cfg = train_config
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model_config = model_config or DecoderConfig(instrument=instrument)
    if model_config.instrument != instrument:
        model_config = DecoderConfig(**{**asdict(model_config), "instrument": instrument})
    stems = load_stems(data_dir, instrument, "train")
    names = model_config.timbres
    if names:  # a conditioned decoder learns the named timbres of a timbre corpus, nothing else
        stems = [s for s in stems if s.timbre in names]
        missing = sorted(set(names) - {s.timbre for s in stems})
        if missing:
            raise EnsembleError(f"timbres {missing} have no {instrument!r} stems in the train split of "
                                f"{str(data_dir)!r}; build them with `python -m ensemble corpus timbres`")
    frames = int(round(cfg.window_seconds * features.frame_rate))
    sampler = _WindowSampler(stems, frames, cfg.min_active, rng)
    model = InstrumentDecoder(model_config)
    gen = torch.Generator().manual_seed(cfg.seed)

    def batch_loss() -> torch.Tensor:
        f0, loud, audio, timbre = [], [], [], []
        for _ in range(cfg.batch_size):
            s, start = sampler.sample()
            f0.append(s.f0_hz[start:start + frames])
            loud.append(s.loudness_db[start:start + frames])
            audio.append(s.audio[start * features.hop_length:(start + frames) * features.hop_length])
            timbre.append(names.index(s.timbre) if names else 0)
        f0_t = torch.tensor(np.stack(f0))[..., None]
        loud_t = torch.tensor(np.stack(loud))[..., None]
        target = torch.tensor(np.stack([np.pad(a, (0, frames * features.hop_length - len(a))) for a in audio]))
        pred = model(f0_t, loud_t, n_samples=frames * features.hop_length, generator=gen,
                     timbre=torch.tensor(timbre) if names else None)
        return multi_resolution_stft_loss(pred, target, fft_sizes=tuple(cfg.fft_sizes))

    name = f"decoder_{instrument}"
    step, losses, wall, early = _run(name, model, batch_loss, cfg, out_dir, rng, progress)
    meta = {"name": name, "instrument": instrument, "steps": step, "complete": not early,
            "wall_seconds": round(wall, 1), "train_config": asdict(cfg),
            "data_dir": str(data_dir), "data_manifest_sha256": corpus_manifest_hash(data_dir),
            "train_stems": len(stems), "losses": _loss_summary(losses), "command": command,
            "n_parameters": model.n_parameters(), "feature_config": features.to_dict()}
    io.save_checkpoint(out_dir / f"{name}.pt", model, "decoder", meta)
    return meta


# ----------------------------------------------------------------------------- arranger

@dataclass
class _ArrangerTrack:
    name: str
    leader: dict[str, np.ndarray]
    targets: np.ndarray  # [T, F] normalised follower loudness


def _load_arranger_tracks(data_dir: Path, split: str, config: ArrangerConfig,
                          leader: str = "Guitar", features: FeatureConfig = FeatureConfig()
                          ) -> list[_ArrangerTrack]:
    out = []
    for track in _tracks(data_dir, split):
        try:
            with np.load(track / "features.npz") as npz:
                f0, voiced, loud = _stem_arrays(npz, leader)
                targets = []
                for follower in config.followers:
                    try:
                        targets.append(normalize_loudness(_stem_arrays(npz, follower)[2]))
                    except KeyError:  # a track without this follower: it is silent
                        targets.append(np.zeros_like(loud))
        except (OSError, KeyError, ValueError):
            continue
        audio = load_audio(track / "stems" / f"{leader}.flac", max_seconds=3600).audio
        onset = onset_strength(audio, config=features)
        out.append(_ArrangerTrack(track.name, {"f0": f0, "voiced": voiced, "loud": loud,
                                               "onset": onset},
                                  np.stack(targets, axis=-1).astype(np.float32)))
    if not out:
        raise EnsembleError(f"no tracks with a {leader!r} leader in split {split!r} of {str(data_dir)!r}")
    return out


def _track_features(t: _ArrangerTrack, inputs: tuple[str, ...], features: FeatureConfig) -> np.ndarray:
    return arranger_features(None, t.leader["f0"], t.leader["voiced"], t.leader["loud"], inputs,
                             onset=t.leader["onset"], config=features)


def train_arranger(data_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                   model_config: ArrangerConfig = ArrangerConfig(),
                   train_config: TrainConfig = TrainConfig(steps=1500, window_seconds=10.0,
                                                           learning_rate=5e-4, lr_final=5e-5),
                   progress: bool = True, command: str = "", name: str = "arranger",
                   features: FeatureConfig = FeatureConfig()) -> dict:
    """Train the arranger (MSE on normalised follower loudness). Writes ``<out>/<name>.pt``."""
    out_dir = Path(out_dir)
    cfg = train_config
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    tracks = _load_arranger_tracks(Path(data_dir), "train", model_config, features=features)
    feats = [_track_features(t, model_config.inputs, features) for t in tracks]
    frames = int(round(cfg.window_seconds * features.frame_rate))
    usable = [i for i, f in enumerate(feats) if len(f) > frames]
    if not usable:
        raise EnsembleError(f"no training track is longer than {cfg.window_seconds} s")
    lengths = np.array([len(feats[i]) - frames for i in usable], dtype=np.float64)
    p = lengths / lengths.sum()
    model = Arranger(model_config)

    def batch_loss() -> torch.Tensor:
        xs, ys = [], []
        for _ in range(cfg.batch_size):
            i = usable[rng.choice(len(usable), p=p)]
            start = int(rng.integers(0, len(feats[i]) - frames))
            xs.append(feats[i][start:start + frames])
            ys.append(tracks[i].targets[start:start + frames])
        pred = model(torch.tensor(np.stack(xs)))
        return torch.nn.functional.mse_loss(pred, torch.tensor(np.stack(ys)))

    step, losses, wall, early = _run(name, model, batch_loss, cfg, out_dir, rng, progress)
    meta = {"name": name, "steps": step, "complete": not early, "wall_seconds": round(wall, 1),
            "train_config": asdict(cfg), "data_dir": str(data_dir),
            "data_manifest_sha256": corpus_manifest_hash(data_dir), "train_tracks": len(tracks),
            "losses": _loss_summary(losses), "command": command,
            "n_parameters": model.n_parameters(), "feature_config": features.to_dict()}
    io.save_checkpoint(out_dir / f"{name}.pt", model, "arranger", meta)
    return meta


# ----------------------------------------------------------------------------- evaluation

def additive_baseline(f0_hz: torch.Tensor, loud_db: torch.Tensor, n_harmonics: int = 100, *,
                      features: FeatureConfig = FeatureConfig()) -> torch.Tensor:
    """Fixed-spectrum additive synth: 1/k harmonic roll-off, amplitude from loudness, no noise.

    The amplitude is ``10 ** (loudness / 20)`` times one gain chosen so the baseline's own
    loudness matches the target's (median over sounding frames): a level-fair baseline.

    Args:
        f0_hz, loud_db: [B, T, 1].

    Returns:
        [B, T * hop] audio.
    """
    from ensemble.dsp import HarmonicSynth
    from ensemble.models.decoder import hold_unvoiced

    f0 = hold_unvoiced(f0_hz)
    k = torch.arange(1, n_harmonics + 1, dtype=torch.float32)
    synth = HarmonicSynth(features.sample_rate, features.hop_length, n_harmonics, scale_fn=False)
    amp = 10.0 ** (loud_db / 20.0)
    controls = synth.get_controls(amp, (1.0 / k).expand(*f0.shape[:2], n_harmonics), f0)
    audio = synth.get_signal(controls)
    out = []
    for b in range(audio.shape[0]):
        got = loudness_db(audio[b].numpy(), config=features)[: loud_db.shape[1]]
        want = loud_db[b, :, 0].numpy()
        sounding = want > ACTIVE_DB
        gain_db = float(np.median(want[sounding] - got[sounding])) if sounding.any() else 0.0
        out.append(audio[b] * 10.0 ** (gain_db / 20.0))
    return torch.stack(out)


def _eval_windows(stems: list[StemData], seconds: float, per_track: int,
                  features: FeatureConfig) -> list[tuple[StemData, int]]:
    """Deterministic evaluation windows: the first ``per_track`` sounding windows of each stem."""
    frames = int(round(seconds * features.frame_rate))
    out = []
    for s in stems:
        taken = 0
        for start in range(0, len(s.loudness_db) - frames, frames):
            if (s.loudness_db[start:start + frames] > ACTIVE_DB).mean() >= 0.5:
                out.append((s, start))
                taken += 1
                if taken == per_track:
                    break
    return out


def evaluate_decoder(data_dir: str | os.PathLike, checkpoint: str | os.PathLike, *,
                     seconds: float = 4.0, per_track: int = 2, max_windows: int = 24,
                     pitch_windows: int = 6, seed: int = 0, figure: str | os.PathLike | None = None,
                     progress: bool = True, features: FeatureConfig = FeatureConfig()) -> dict:
    """Test-split resynthesis quality of a decoder vs untrained and additive baselines.

    Returns:
        {"instrument", "windows", "mrstft": {"trained", "untrained", "additive_baseline"},
         "f0_error_cents_median": {...}} -- pitch error by pYIN on the output vs the input f0,
         over frames both call voiced, on the first ``pitch_windows`` windows; "target" is pYIN on
         the real test audio itself, the tracker's own error floor for this instrument (octave
         errors on bass notes with a weak fundamental show up there too).
    """
    model, meta = io.load_decoder(checkpoint)
    instrument = model.config.instrument
    names = model.config.timbres
    if names:  # a conditioned decoder: every timbre on its own test windows, plus the summary
        per = {}
        for i, name in enumerate(names):
            per[name] = _evaluate(model, meta, data_dir, checkpoint, seconds=seconds, per_track=per_track,
                                  max_windows=max_windows, pitch_windows=pitch_windows, seed=seed,
                                  figure=None, progress=progress, features=features, timbre=(i, name))
        first = next(iter(per.values()))
        return {"instrument": instrument, "checkpoint": str(checkpoint), "train_steps": meta.get("steps"),
                "window_seconds": seconds, "windows": sum(r["windows"] for r in per.values()),
                "timbres": per,
                "mrstft": {k: round(float(np.mean([r["mrstft"][k] for r in per.values()])), 4)
                           for k in first["mrstft"]},
                "f0_error_cents_median": {k: None for k in first["f0_error_cents_median"]}}
    return _evaluate(model, meta, data_dir, checkpoint, seconds=seconds, per_track=per_track,
                     max_windows=max_windows, pitch_windows=pitch_windows, seed=seed, figure=figure,
                     progress=progress, features=features, timbre=None)


def _evaluate(model: InstrumentDecoder, meta: dict, data_dir, checkpoint, *, seconds: float, per_track: int,
              max_windows: int, pitch_windows: int, seed: int, figure, progress: bool, features: FeatureConfig,
              timbre: tuple[int, str] | None) -> dict:
    instrument = model.config.instrument
    torch.manual_seed(seed)
    untrained = InstrumentDecoder(model.config).eval()
    stems = load_stems(data_dir, instrument, "test")
    if timbre is not None:
        stems = [s for s in stems if s.timbre == timbre[1]]
        if not stems:
            raise EnsembleError(f"no {instrument!r} test stems of timbre {timbre[1]!r} in {str(data_dir)!r}")
        instrument = f"{instrument} ({timbre[1]})"
    tix = None if timbre is None else timbre[0]
    windows = _eval_windows(stems, seconds, per_track, features)[:max_windows]
    if not windows:
        raise EnsembleError(f"no sounding {seconds} s windows of {instrument!r} in the test split")
    frames = int(round(seconds * features.frame_rate))
    scores = {"trained": [], "untrained": [], "additive_baseline": []}
    cents = {"trained": [], "additive_baseline": [], "target": []}
    example = None
    gen = torch.Generator().manual_seed(seed)
    for i, (s, start) in enumerate(tqdm(windows, desc=f"eval {instrument}", disable=not progress)):
        f0 = torch.tensor(s.f0_hz[start:start + frames])[None, :, None]
        loud = torch.tensor(s.loudness_db[start:start + frames])[None, :, None]
        target = torch.tensor(s.audio[start * features.hop_length:(start + frames) * features.hop_length])[None]
        with torch.inference_mode():
            outs = {"trained": model(f0, loud, generator=gen, timbre=tix),
                    "untrained": untrained(f0, loud, generator=gen, timbre=tix),
                    "additive_baseline": additive_baseline(f0, loud, model.config.n_harmonics, features=features)}
        for k, y in outs.items():
            scores[k].append(float(multi_resolution_stft_loss(y, target)))
        if i < pitch_windows:
            truth_v = s.voiced[start:start + frames]
            truth = s.f0_hz[start:start + frames]
            for k in cents:
                y = target[0].numpy() if k == "target" else outs[k][0].numpy()
                est, v, _ = f0_pyin(y, config=features)
                n = min(len(est), len(truth))
                both = v[:n] & truth_v[:n] & (truth[:n] > 0)
                if both.any():
                    cents[k].extend(np.abs(cents_between(est[:n][both], truth[:n][both])).tolist())
        if example is None:
            example = (target[0].numpy(), outs["trained"][0].numpy())
    result = {"instrument": instrument, "checkpoint": str(checkpoint), "windows": len(windows),
              "window_seconds": seconds, "train_steps": meta.get("steps"),
              "mrstft": {k: round(float(np.mean(v)), 4) for k, v in scores.items()},
              "f0_error_cents_median": {k: (round(float(np.median(v)), 2) if v else None)
                                        for k, v in cents.items()}}
    if figure is not None and example is not None:
        _spectrogram_figure(example[0], example[1], instrument, figure, features)
    return result


def _spectrogram_figure(target: np.ndarray, resynth: np.ndarray, instrument: str,
                        path: str | os.PathLike, features: FeatureConfig) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5.5), dpi=100, layout="constrained")
    axes = fig.subplots(2, 1, sharex=True, sharey=True)
    for ax, y, title in zip(axes, (target, resynth), ("target (test split)", "decoder resynthesis"),
                            strict=True):
        S = librosa.amplitude_to_db(np.abs(librosa.stft(y, n_fft=1024, hop_length=features.hop_length)), ref=np.max,
                                    top_db=80)
        t = np.arange(S.shape[1]) * features.hop_length / features.sample_rate
        f = librosa.fft_frequencies(sr=features.sample_rate, n_fft=1024)
        mesh = ax.pcolormesh(t, f, S, shading="auto", cmap="magma", vmin=-80, vmax=0)
        ax.set_title(f"{instrument}: {title}")
        ax.set_ylabel("frequency (Hz)")
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(mesh, ax=axes, label="level (dB re max)")
    buf_path = Path(path)
    atomic_write(buf_path, lambda tmp: fig.savefig(tmp, format="png"))


def evaluate_arranger(data_dir: str | os.PathLike, checkpoint: str | os.PathLike, *,
                      split: str = "test", features: FeatureConfig = FeatureConfig()) -> dict:
    """``split`` (test) MSE of predicted follower loudness vs two baselines.

    Baselines: (1) the leader's normalised loudness scaled per follower (least-squares a*x + b fitted
    on the train split), (2) the per-follower training mean. All on normalised loudness in [0, 1].
    """
    model, meta = io.load_arranger(checkpoint)
    cfg = model.config
    train = _load_arranger_tracks(Path(data_dir), "train", cfg, features=features)
    test = _load_arranger_tracks(Path(data_dir), split, cfg, features=features)
    x_tr = np.concatenate([normalize_loudness(t.leader["loud"]) for t in train])
    y_tr = np.concatenate([t.targets for t in train])
    fits = [np.polyfit(x_tr, y_tr[:, j], 1) for j in range(y_tr.shape[1])]
    means = y_tr.mean(axis=0)
    err = {"arranger": [], "leader_scaled": [], "train_mean": []}
    for t in test:
        y = t.targets
        pred = model.predict(_track_features(t, cfg.inputs, features))
        x = normalize_loudness(t.leader["loud"])
        scaled = np.stack([np.clip(np.polyval(f, x), 0, 1) for f in fits], axis=-1)
        err["arranger"].append((pred - y) ** 2)
        err["leader_scaled"].append((scaled - y) ** 2)
        err["train_mean"].append((means[None] - y) ** 2)
    result = {"checkpoint": str(checkpoint), "inputs": list(cfg.inputs), "split": split,
              "data_dir": str(data_dir), "test_tracks": len(test),
              "train_steps": meta.get("steps"), "mse": {}, "mse_per_follower": {}}
    for k, v in err.items():
        allv = np.concatenate(v)
        result["mse"][k] = round(float(allv.mean()), 5)
        result["mse_per_follower"][k] = {f: round(float(allv[:, j].mean()), 5)
                                         for j, f in enumerate(cfg.followers)}
    return result

