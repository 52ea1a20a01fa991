"""Quality of the performer on a corpus split (BabyBand test tracks, leader = the Guitar stem).

Per track the Guitar stem is performed and compared with the track's ground truth:

* **bass pitch class** -- on frames where both the performed bass and the ground-truth Bass stem
  sound (``features.npz`` ``Bass/f0_hz``/``voiced``, from the notes), the share of frames whose
  pitch classes agree. Measured on the *planned* bass f0 (what the decoder was asked to play) and on
  the *rendered* bass stem (pYIN, 38-220 Hz), with the share of planned-note frames where pYIN
  finds a pitch at all (a decoder that renders mostly noise leaves few frames to compare). Two
  baselines on the same frames as the planned score: a constant bass on the estimated key's tonic,
  and chance (the planned pitch classes shuffled over the frames).
* **drum timing** -- onsets detected in the rendered drum stem (librosa ``onset_detect``, which
  reports drum hits ~10 ms late), each one's distance to the nearest point of the *grid a groove
  plays on*: the beats split into the loop's subdivisions (eighths; thirds in compound meters).
  Against the performer's own grid (the chosen drum grid, from the leader's tracked beats) and
  against the true grid (the track's ``beat_bpm`` from its first drum hit, split by its meter).
  Baseline: the same drum stem shifted by half a subdivision. Also the share of the leader's beats
  with a drum onset within 40 ms, and -- for reference -- the distance to the beats alone (off-beat
  hi-hats sit half a beat away from it by design).
* **mix peak** in dBFS.

Frames are pooled over tracks for the pitch-class scores; medians are over all onsets.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import librosa
import numpy as np

from ensemble.audio import load_audio, peak_dbfs
from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig
from ensemble.jobs.corpus.layout import list_tracks
from ensemble.models.arranger import Arranger, ArrangerConfig
from ensemble.models.decoder import DecoderConfig, InstrumentDecoder
from ensemble.models.io import load_arranger, load_decoder
from ensemble.music import PC_NAMES, hz_to_midi
from ensemble.perform.config import PerformConfig
from ensemble.perform.drums import DrumDB, meter_of
from ensemble.perform.performer import Performance, Performer

__all__ = ["EvalConfig", "evaluate_tracks", "drum_onset_errors", "pitch_class_agreement",
           "load_performer", "subdivide"]

_PC = {**{n: i for i, n in enumerate(PC_NAMES)}, "Db": 1, "D#": 3, "Gb": 6, "G#": 8, "A#": 10,
       "Cb": 11, "E#": 5, "Fb": 4, "B#": 0}


@dataclass(frozen=True)
class EvalConfig:
    """Settings of :func:`evaluate_tracks`.

    Attributes:
        split: corpus split evaluated ("test").
        leader, bass: stem names.
        rendered_pitch: also run pYIN on the rendered bass (slow: ~5 s per minute of audio).
        n_shuffles: permutations averaged for the chance baseline.
        tolerance_s: a beat "has" a drum onset within this distance.
        max_tracks: evaluate at most this many tracks (None = all).
        seed: shuffles and the performer's seed.
    """

    split: str = "test"
    leader: str = "Guitar"
    bass: str = "Bass"
    rendered_pitch: bool = True
    n_shuffles: int = 20
    tolerance_s: float = 0.04
    max_tracks: int | None = None
    seed: int = 0


def load_performer(config: PerformConfig = PerformConfig(), *, allow_untrained: bool = False
                   ) -> tuple[Performer, list[str]]:
    """:meth:`Performer.load`, or -- for benchmarks run before training ends -- the same with
    untrained full-size models standing in for missing checkpoints.

    Args:
        config: settings (``checkpoints_dir``, ``drum_db``, ``followers``).
        allow_untrained: replace a missing ``arranger.pt``/``decoder_<Name>.pt`` by an untrained
            model of the default size (same compute, meaningless sound) instead of raising.

    Returns:
        (performer, names of the models that are untrained stand-ins).
    """
    if not allow_untrained:
        return Performer.load(config), []
    ckpt = Path(config.checkpoints_dir)
    untrained, versions = [], {}
    if (ckpt / "arranger.pt").is_file():
        arranger, meta = load_arranger(ckpt / "arranger.pt")
        versions["arranger"] = {"file": "arranger.pt", **{k: meta.get(k) for k in ("steps", "complete")}}
    else:
        arranger = Arranger(ArrangerConfig())
        untrained.append("arranger")
    decoders = {}
    for name in ("Bass", "Keys"):
        if name not in config.followers:
            continue
        path = ckpt / f"decoder_{name}.pt"
        if path.is_file():
            decoders[name], meta = load_decoder(path)
            versions[name] = {"file": path.name, **{k: meta.get(k) for k in ("steps", "complete")}}
        else:
            decoders[name] = InstrumentDecoder(DecoderConfig(instrument=name))
            untrained.append(name)
    for name in untrained:
        versions[name] = {"source": "untrained stand-in (no checkpoint yet)"}
    db = DrumDB.load(config.drum_db)
    return Performer(arranger, decoders, db, config, versions=versions), untrained


def _pcs(f0_hz: np.ndarray) -> np.ndarray:
    return np.mod(np.round(hz_to_midi(np.where(f0_hz > 0, f0_hz, 1.0))), 12).astype(np.int64)


def pitch_class_agreement(pred_f0: np.ndarray, pred_on: np.ndarray, true_f0: np.ndarray,
                          true_on: np.ndarray) -> tuple[int, int]:
    """(frames where both sound and pitch classes agree, frames where both sound)."""
    n = min(len(pred_f0), len(true_f0))
    both = pred_on[:n] & true_on[:n] & (pred_f0[:n] > 0) & (true_f0[:n] > 0)
    agree = _pcs(pred_f0[:n]) == _pcs(true_f0[:n])
    return int((agree & both).sum()), int(both.sum())


def drum_onset_errors(drums: np.ndarray, beats_s: np.ndarray, *, sample_rate: int = 16000,
                      hop_length: int = 160, min_level_db: float = -50.0) -> np.ndarray:
    """|onset - nearest beat| in seconds for every onset detected in a drum stem.

    Args:
        drums: [n] the drum stem.
        beats_s: [B] beat times.
        min_level_db: onsets are only detected when the stem's peak is above this (dBFS).

    Returns:
        [n_onsets] seconds (empty for a silent stem).
    """
    if peak_dbfs(drums) < min_level_db or len(beats_s) == 0:
        return np.zeros(0)
    onsets = librosa.onset.onset_detect(y=np.asarray(drums, dtype=np.float32), sr=sample_rate,
                                        hop_length=hop_length, units="time", backtrack=False)
    if len(onsets) == 0:
        return np.zeros(0)
    beats = np.sort(np.asarray(beats_s, dtype=np.float64))
    return np.min(np.abs(onsets[:, None] - beats[None, :]), axis=1)


def subdivide(beats_s: np.ndarray, k: int) -> np.ndarray:
    """[B] beat times -> [(B - 1) * k + 1] times with each beat split into ``k`` equal parts."""
    b = np.asarray(beats_s, dtype=np.float64)
    if k <= 1 or len(b) < 2:
        return b
    frac = np.arange(k) / k
    return np.append((b[:-1, None] + np.diff(b)[:, None] * frac[None, :]).reshape(-1), b[-1])


def _gt_beats(meta: dict, duration: float) -> np.ndarray | None:
    try:
        bpm = float(meta["beat_bpm"])
        first = float(np.min(meta["stems"]["Drums"]["notes"]["onset_s"]))
    except (KeyError, TypeError, ValueError):
        return None
    ibi = 60.0 / bpm
    k0 = -int(np.floor(first / ibi))
    return first + ibi * np.arange(k0, int(np.ceil((duration - first) / ibi)) + 1)


def _beat_recall(drums: np.ndarray, beats_s: np.ndarray, tol: float, sr: int) -> tuple[int, int]:
    onsets = librosa.onset.onset_detect(y=np.asarray(drums, dtype=np.float32), sr=sr, hop_length=160,
                                        units="time")
    if len(onsets) == 0 or len(beats_s) == 0:
        return 0, len(beats_s)
    d = np.min(np.abs(np.asarray(beats_s)[:, None] - onsets[None, :]), axis=1)
    return int((d <= tol).sum()), len(beats_s)


def evaluate_tracks(performer: Performer, data_dir: str | Path, *,
                    config: EvalConfig = EvalConfig(), progress: bool = False) -> dict:
    """Run the performer on a split's leader stems and score it (see the module docstring).

    Returns:
        {"tracks": [per-track dicts], "summary": {pooled scores}, "config": ...}.

    Raises:
        EnsembleError: no corpus or no track in the split.
    """
    fc = FeatureConfig()
    sr = fc.sample_rate
    rng = np.random.default_rng(config.seed)
    rows = []
    pooled = {"plan": [0, 0], "rendered": [0, 0], "tonic": [0, 0], "chance": [0.0, 0]}
    errs_est, errs_gt, errs_shift, errs_beats, beats_err = [], [], [], [], []
    recall = [0, 0]
    tracked = [0, 0]  # planned bass frames where pYIN finds a pitch in the rendered bass
    peaks = []
    tracks = [t for t in list_tracks(data_dir)
              if json.loads((t / "metadata.json").read_text()).get("split") == config.split]
    if not tracks:
        raise EnsembleError(f"corpus {str(data_dir)!r} has no complete {config.split!r} tracks")
    if config.max_tracks:
        tracks = tracks[: config.max_tracks]
    for track in tracks:
        meta = json.loads((track / "metadata.json").read_text())
        leader = load_audio(track / meta["stems"][config.leader]["audio"], max_seconds=3600).audio
        perf: Performance = performer.perform(leader, seed=config.seed)
        with np.load(track / "features.npz") as npz:
            gt_f0 = npz[f"{config.bass}/f0_hz"].astype(np.float64)
            gt_on = npz[f"{config.bass}/voiced"].astype(bool)
        row: dict = {"track": track.name, "collection": meta.get("source", {}).get("collection"),
                     "bass_style": meta["stems"].get(config.bass, {}).get("style"),
                     "seconds": perf.info["seconds"],
                     "key_est": (perf.info["key"] or {}).get("name"),
                     "key_true": meta.get("key", {}).get("name"),
                     "tempo_est": perf.info["tempo_bpm"], "tempo_true": meta.get("beat_bpm"),
                     "mix_peak_dbfs": perf.info["mix_peak_dbfs"]}
        peaks.append(perf.info["mix_peak_dbfs"])
        if perf.plan is not None:
            pf = perf.plan.bass_f0_hz.astype(np.float64)
            on = pf > 0
            hit, tot = pitch_class_agreement(pf, on, gt_f0, gt_on)
            row["bass_pc_plan"] = round(hit / tot, 4) if tot else None
            pooled["plan"][0] += hit
            pooled["plan"][1] += tot
            n = min(len(pf), len(gt_f0))
            both = on[:n] & gt_on[:n] & (gt_f0[:n] > 0)
            gt_pc, pred_pc = _pcs(gt_f0[:n])[both], _pcs(pf[:n])[both]
            tonic = perf.analysis.key.tonic
            t_hit = int((gt_pc == tonic).sum())
            row["bass_pc_tonic"] = round(t_hit / tot, 4) if tot else None
            pooled["tonic"][0] += t_hit
            pooled["tonic"][1] += tot
            if tot:
                chance = np.mean([(rng.permutation(pred_pc) == gt_pc).mean()
                                  for _ in range(config.n_shuffles)])
                row["bass_pc_chance"] = round(float(chance), 4)
                pooled["chance"][0] += float(chance) * tot
                pooled["chance"][1] += tot
            if config.rendered_pitch and "Bass" in perf.stems:
                rf0, rv, _ = librosa.pyin(perf.stems["Bass"], fmin=38.0, fmax=220.0, sr=sr,
                                          frame_length=fc.frame_length, hop_length=fc.hop_length,
                                          center=True, fill_na=0.0)
                rf0 = np.nan_to_num(rf0)
                hit, tot = pitch_class_agreement(rf0, rv.astype(bool), gt_f0, gt_on)
                row["bass_pc_rendered"] = round(hit / tot, 4) if tot else None
                pooled["rendered"][0] += hit
                pooled["rendered"][1] += tot
                m = min(len(rv), len(on))
                tracked[0] += int((rv[:m].astype(bool) & on[:m]).sum())
                tracked[1] += int(on[:m].sum())
        if "Drums" in perf.stems and perf.drums is not None:
            drums = perf.stems["Drums"]
            sub = int(perf.info["drums"]["segment"]["subdivision"])
            est_beats = np.asarray(perf.info["beat_times_s"])
            est_grid = subdivide(perf.drums.grid.times_s, sub)
            e = drum_onset_errors(drums, est_grid, sample_rate=sr)
            errs_est.append(e)
            row["drum_err_ms_est"] = round(1000 * float(np.median(e)), 1) if e.size else None
            e = drum_onset_errors(drums, est_beats, sample_rate=sr)
            errs_beats.append(e)
            gt = _gt_beats(meta, perf.info["seconds"])
            if gt is not None:
                gt_sub = meter_of(meta.get("time_signature", "4/4"))[1]
                e = drum_onset_errors(drums, subdivide(gt, gt_sub), sample_rate=sr)
                errs_gt.append(e)
                row["drum_err_ms_gt"] = round(1000 * float(np.median(e)), 1) if e.size else None
                if est_beats.size:
                    be = np.min(np.abs(est_beats[:, None] - gt[None, :]), axis=1)
                    beats_err.append(be)
                    row["beat_err_ms"] = round(1000 * float(np.median(be)), 1)
            # baseline: the same drums half a subdivision late (as far off the grid as they can be)
            shift = int(round(float(np.median(np.diff(perf.drums.grid.times_s))) / sub / 2 * sr))
            e = drum_onset_errors(np.roll(drums, shift), est_grid, sample_rate=sr)
            errs_shift.append(e)
            inner = est_beats[(est_beats > 0.5) & (est_beats < perf.info["seconds"] - 0.5)]
            h, t = _beat_recall(drums, inner, config.tolerance_s, sr)
            recall[0] += h
            recall[1] += t
            row["drums_segment"] = perf.info["drums"]["segment"]["track"]
        rows.append(row)
        if progress:
            print(json.dumps(row), flush=True)

    def frac(p):
        return round(p[0] / p[1], 4) if p[1] else None

    def med_ms(lst):
        a = np.concatenate(lst) if lst else np.zeros(0)
        return round(1000 * float(np.median(a)), 1) if a.size else None

    summary = {
        "split": config.split, "tracks": len(rows),
        "bass_pc_plan": frac(pooled["plan"]), "bass_pc_rendered": frac(pooled["rendered"]),
        "bass_pc_tonic_baseline": frac(pooled["tonic"]),
        "bass_pc_chance_baseline": frac(pooled["chance"]),
        "bass_frames_both_sound": pooled["plan"][1],
        "bass_frames_both_sound_rendered": pooled["rendered"][1],
        "rendered_bass_pitched_share": frac(tracked),
        "key_accuracy": round(float(np.mean([r["key_est"] is not None and r["key_true"] is not None
                                             and _same_key(r["key_est"], r["key_true"])
                                             for r in rows])), 4),
        "drum_onset_err_ms_median_vs_est_grid": med_ms(errs_est),
        "drum_onset_err_ms_median_vs_true_grid": med_ms(errs_gt),
        "drum_onset_err_ms_median_shifted_baseline": med_ms(errs_shift),
        "drum_onset_err_ms_median_vs_est_beats_only": med_ms(errs_beats),
        "beats_with_drum_onset_within_40ms": frac(recall),
        "beat_err_ms_median_est_vs_true": med_ms(beats_err),
        "mix_peak_dbfs_max": max(peaks) if peaks else None,
    }
    return {"tracks": rows, "summary": summary, "config": asdict(config)}


def _same_key(a: str, b: str) -> bool:
    ta, ma = a.split()
    tb, mb = b.split()
    return _PC.get(ta) == _PC.get(tb) and ma == mb
