"""The drum database: bar-length loops cut from a corpus's drum stems, chosen and laid on a leader.

**Cutting** (:func:`track_loops`): a BabyBand drum part plays a crash on the downbeat of every phrase
start and a kick on the downbeat of every bar, at a constant tempo (``beat_bpm``) and meter
(``time_signature``) per track. From each crash, bars of ``beats_per_bar`` beats are laid forward
until the next crash; a bar becomes a loop candidate when a kick sounds within 25 ms of its start
and of its end (the bar grid is right there), it holds no crash (a crash looped every bar is not a
groove) and no fill (toms, or two snare hits closer than half a beat). Distinct patterns are kept,
at most ``max_loops_per_track`` per track.

**Storing** (:class:`DrumDB`, files under one folder)::

    drums.ogg      all loops, Ogg Vorbis 16 kHz mono, separated by short silences
    drums.npz      per loop: sample offset/length in drums.ogg, tempo, beats, meter, loudness,
                   beat-synchronous onset pattern, source track and bar time
    harmony.json   the learned harmony model (see :mod:`.harmony`), optional
    manifest.json  build command, seed, config, sources, sha256 and size of every file

**Choosing** (:func:`select_loop`): the leader's onset envelope and each loop's are compared on a
*beat-synchronous* grid (``subdivisions`` points per beat, so a leader whose tempo drifts still
lines up with a loop). For every drum grid (the leader's beats, split or merged by 2 or 3; see
:func:`~ensemble.perform.rhythm.drum_grids`) the z-normalised leader pattern is cross-correlated
with every candidate's z-normalised pattern, tiled to the leader's length, in one batched FFT; the
lags that put loop beats on leader beats are scored, minus penalties for tempo stretch and for
grids other than the leader's own beats.

**Laying** (:func:`place_loop`): the loop is resampled by the tempo ratio (soxr) so its beat matches
the grid's median beat, then cut into beats; beat ``j`` of the grid gets loop beat
``(j + lag) % beats``, starting a few ms early so attacks are kept, joined with short linear
crossfades. Drum onsets therefore land on the leader's beats whatever its tempo drift.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.ndimage
import soundfile as sf
import soxr

from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig, loudness_db, onset_strength
from ensemble.files import atomic_write_bytes, atomic_write_text, sha256_file
from ensemble.perform.harmony import HarmonyModel
from ensemble.perform.rhythm import DrumGrid

__all__ = [
    "DRUM_FILES",
    "DrumHits",
    "detect_hits",
    "loop_hits",
    "placed_hits",
    "GM_KICK",
    "GM_SNARE",
    "GM_HIHAT",
    "LoopCut",
    "DrumDB",
    "DrumChoice",
    "meter_of",
    "track_loops",
    "loop_pattern",
    "leader_pattern",
    "select_loop",
    "place_loop",
]

DRUM_FILES = ("drums.ogg", "drums.npz", "manifest.json")
FORMAT_VERSION = 1
_KICK, _SNARE, _CRASH = 36, 38, 49
_TOMS = {41, 43, 45, 47, 48, 50}
_GUARD = 2048  # silent samples between loops in drums.ogg (keeps Vorbis blocks of loops apart)


def meter_of(time_signature: str) -> tuple[int, int]:
    """"n/d" -> (beats per bar, subdivisions per beat), the corpus convention.

    Compound meters (6/8, 9/8, 12/8) count dotted quarters: 3 subdivisions per beat.
    """
    try:
        num, den = (int(x) for x in str(time_signature).split("/"))
    except ValueError:
        raise EnsembleError(f"time signature {time_signature!r} is not 'n/d'") from None
    if num < 1 or den not in (1, 2, 4, 8, 16):
        raise EnsembleError(f"time signature {time_signature!r}: need n >= 1 and d in 1,2,4,8,16")
    if den == 8 and num % 3 == 0 and num >= 6:
        return num // 3, 3
    return num, 2


@dataclass(frozen=True)
class LoopCut:
    """One loop cut from a track (before storing).

    Attributes:
        audio: [n] float32 samples, exactly ``beats * 60 / tempo_bpm`` seconds (rounded).
        tempo_bpm: beats per minute.
        beats: beats in the loop.
        beats_per_bar: meter numerator in beats.
        subdivision: 2 (simple meter) or 3 (compound).
        track: source track name.
        start_s: where the loop starts in the source stem, seconds.
    """

    audio: np.ndarray
    tempo_bpm: float
    beats: int
    beats_per_bar: int
    subdivision: int
    track: str
    start_s: float


def _near(times: np.ndarray, t: float, tol: float) -> bool:
    return bool(times.size) and float(np.min(np.abs(times - t))) <= tol


def track_loops(audio: np.ndarray, metadata: dict, *, track: str, bars_per_loop: int = 1,
                min_loop_beats: int = 2, max_loops: int = 4, sample_rate: int = 16000,
                rng: np.random.Generator | None = None) -> list[LoopCut]:
    """Cut groove loops from one track's drum stem (see the module docstring).

    Args:
        audio: [n_samples] the Drums stem.
        metadata: the track's metadata.json (``beat_bpm``, ``time_signature``, drum notes).
        track: the track's name (recorded with each loop).
        bars_per_loop: bars per loop (raised so a loop has at least ``min_loop_beats`` beats).
        max_loops: distinct loops kept per track (spread over the track, chosen with ``rng``).

    Returns:
        The loops (possibly none: a track whose grid cannot be confirmed gives nothing).
    """
    rng = rng or np.random.default_rng(0)
    try:
        tempo = float(metadata["beat_bpm"])
        beats_per_bar, subdivision = meter_of(metadata["time_signature"])
        notes = metadata["stems"]["Drums"]["notes"]
        onsets = np.asarray(notes["onset_s"], dtype=np.float64)
        pitches = np.asarray(notes["pitch"], dtype=np.int64)
    except (KeyError, TypeError, ValueError):
        return []
    if not 20.0 <= tempo <= 400.0 or onsets.size == 0:
        return []
    beat_s = 60.0 / tempo
    bars = max(int(bars_per_loop), -(-int(min_loop_beats) // beats_per_bar))
    n_beats = bars * beats_per_bar
    loop_s = n_beats * beat_s
    kicks = onsets[pitches == _KICK]
    crashes = onsets[pitches == _CRASH]
    anchors = []
    for c in np.sort(crashes):
        if not anchors or c - anchors[-1] > 0.1:
            anchors.append(float(c))
    ends = anchors[1:] + [float(onsets.max()) + 1e-3]
    tol = 0.025
    cands: dict[tuple, list[float]] = {}
    for a, end in zip(anchors, ends, strict=True):
        j = 0
        while True:
            start = a + j * loop_s
            stop = start + loop_s
            j += 1
            if stop > end - 0.05 or stop * sample_rate > len(audio):
                break
            inside = (onsets >= start - tol) & (onsets < stop - tol)
            p_in = pitches[inside]
            if not (_near(kicks, start, tol) and _near(kicks, stop, tol)):
                continue
            if np.any(p_in == _CRASH) or np.any(np.isin(p_in, list(_TOMS))):
                continue
            sn = np.sort(onsets[inside & (pitches == _SNARE)])
            if sn.size > 1 and np.min(np.diff(sn)) < 0.5 * beat_s:
                continue
            grid = 1.0 / (4 * subdivision)  # quantise to a quarter of a subdivision
            sig = tuple(sorted((int(round((t - start) / beat_s / grid)), int(p))
                               for t, p in zip(onsets[inside], p_in, strict=True)))
            cands.setdefault(sig, []).append(start)
    if not cands:
        return []
    sigs = list(cands)
    order = rng.permutation(len(sigs))[:max_loops]
    out = []
    n = int(round(loop_s * sample_rate))
    for i in sorted(order, key=lambda k: cands[sigs[k]][0]):
        starts = cands[sigs[i]]
        start = starts[int(rng.integers(len(starts)))]
        s0 = int(round(start * sample_rate))
        seg = np.asarray(audio[s0:s0 + n], dtype=np.float32)
        if len(seg) < n or not np.any(np.abs(seg) > 1e-4):
            continue
        out.append(LoopCut(seg.copy(), tempo, n_beats, beats_per_bar, subdivision, track,
                           round(start, 4)))
    return out


def loop_pattern(audio: np.ndarray, beats: int, *, subdivisions: int = 12,
                 config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Beat-synchronous onset pattern of a loop (played circularly).

    Args:
        audio: [n] one loop of ``beats`` equal beats.
        subdivisions: points per beat.

    Returns:
        [beats * subdivisions] float32 onset strength (3-frame max around each point).
    """
    audio = np.asarray(audio, dtype=np.float32)
    pad = min(len(audio), config.sample_rate // 2)
    circ = np.concatenate([audio[-pad:], audio, audio[:pad]])  # the loop as it sounds when looped
    env = onset_strength(circ, config=config)
    env = scipy.ndimage.maximum_filter1d(env, 3)
    pts = (np.arange(beats * subdivisions) / (beats * subdivisions)) * len(audio) + pad
    idx = np.clip(np.round(pts / config.hop_length).astype(int), 0, len(env) - 1)
    return env[idx].astype(np.float32)


def leader_pattern(onset: np.ndarray, grid_times_s: np.ndarray, *, frame_rate: float,
                   subdivisions: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """The leader's onset envelope sampled on a drum grid.

    Args:
        onset: [T] onset strength.
        grid_times_s: [M] drum-beat times (may extend beyond the clip).
        frame_rate: frames/s of ``onset``.
        subdivisions: points per beat.

    Returns:
        (pattern [(M-1) * subdivisions] float64, valid [(M-1) * subdivisions] bool: inside the clip).
    """
    env = scipy.ndimage.maximum_filter1d(np.asarray(onset, dtype=np.float64), 3)
    g = np.asarray(grid_times_s, dtype=np.float64)
    frac = np.arange(subdivisions) / subdivisions
    t = (g[:-1, None] + np.diff(g)[:, None] * frac[None, :]).reshape(-1)  # [(M-1) * S]
    idx = np.round(t * frame_rate).astype(np.int64)
    valid = (idx >= 0) & (idx < len(env))
    return np.where(valid, env[np.clip(idx, 0, len(env) - 1)], 0.0), valid


class DrumDB:
    """Loops and their descriptors, loaded once (see the module docstring for the files).

    Attributes:
        path: the folder it was loaded from (None when built in memory).
        audio: [N] float32, all loops (``offsets``/``lengths`` index into it).
        table: per-loop arrays (``offsets``, ``lengths``, ``tempo_bpm``, ``beats``, ``beats_per_bar``,
            ``subdivision``, ``loudness_db``, ``patterns`` [L, P], ``tracks``, ``start_s``).
        subdivisions: pattern points per beat.
        manifest: the manifest dict ({} when built in memory).
        harmony: the learned harmony model shipped with the loops, or None.
    """

    def __init__(self, audio: np.ndarray, table: dict[str, np.ndarray], *, subdivisions: int,
                 sample_rate: int = 16000, manifest: dict | None = None,
                 harmony: HarmonyModel | None = None, path: Path | None = None):
        self.audio = np.asarray(audio, dtype=np.float32)
        self.table = table
        self.subdivisions = int(subdivisions)
        self.sample_rate = int(sample_rate)
        self.manifest = manifest or {}
        self.harmony = harmony
        self.path = path
        n = len(table["offsets"])
        if n == 0:
            raise EnsembleError("the drum database holds no loops; rebuild it with "
                                "`python -m ensemble drums build`")
        ends = table["offsets"] + table["lengths"]
        if np.any(ends > len(self.audio)) or np.any(table["offsets"] < 0):
            raise EnsembleError(f"drum database audio has {len(self.audio)} samples but its table "
                                f"needs {int(ends.max())}; the files do not belong together")

    def __len__(self) -> int:
        return len(self.table["offsets"])

    def loop(self, i: int) -> np.ndarray:
        """[n] float32 audio of loop ``i``."""
        o, n = int(self.table["offsets"][i]), int(self.table["lengths"][i])
        return self.audio[o:o + n]

    def info(self, i: int) -> dict:
        """JSON-able description of loop ``i`` (for perform.json)."""
        t = self.table
        return {"index": int(i), "track": str(t["tracks"][i]), "start_s": float(t["start_s"][i]),
                "tempo_bpm": round(float(t["tempo_bpm"][i]), 3), "beats": int(t["beats"][i]),
                "beats_per_bar": int(t["beats_per_bar"][i]), "subdivision": int(t["subdivision"][i]),
                "seconds": round(int(t["lengths"][i]) / self.sample_rate, 4)}

    def pattern(self, i: int) -> np.ndarray:
        return self.table["patterns"][i, : int(self.table["beats"][i]) * self.subdivisions]

    @classmethod
    def from_loops(cls, loops: list[LoopCut], *, subdivisions: int = 12,
                   config: FeatureConfig = FeatureConfig(), harmony: HarmonyModel | None = None
                   ) -> DrumDB:
        """An in-memory database of ``loops`` (what :meth:`save` writes and :meth:`load` reads)."""
        if not loops:
            raise EnsembleError("no drum loops to build a database from")
        parts, offsets, lengths = [], [], []
        pos = 0
        for lp in loops:
            parts += [lp.audio.astype(np.float32), np.zeros(_GUARD, np.float32)]
            offsets.append(pos)
            lengths.append(len(lp.audio))
            pos += len(lp.audio) + _GUARD
        P = max(lp.beats for lp in loops) * subdivisions
        patterns = np.zeros((len(loops), P), np.float32)
        loud = np.zeros(len(loops), np.float32)
        for i, lp in enumerate(loops):
            pat = loop_pattern(lp.audio, lp.beats, subdivisions=subdivisions, config=config)
            patterns[i, : len(pat)] = pat
            ld = loudness_db(lp.audio, config=config)
            loud[i] = float(np.median(ld[ld > -60.0])) if np.any(ld > -60.0) else -60.0
        table = {
            "offsets": np.asarray(offsets, np.int64), "lengths": np.asarray(lengths, np.int64),
            "tempo_bpm": np.asarray([lp.tempo_bpm for lp in loops], np.float64),
            "beats": np.asarray([lp.beats for lp in loops], np.int64),
            "beats_per_bar": np.asarray([lp.beats_per_bar for lp in loops], np.int64),
            "subdivision": np.asarray([lp.subdivision for lp in loops], np.int64),
            "loudness_db": loud, "patterns": patterns,
            "tracks": np.asarray([lp.track for lp in loops], dtype=np.str_),
            "start_s": np.asarray([lp.start_s for lp in loops], np.float64),
        }
        return cls(np.concatenate(parts), table, subdivisions=subdivisions,
                   sample_rate=config.sample_rate, harmony=harmony)

    def save(self, out_dir: str | os.PathLike, *, manifest: dict, ogg_quality: float = 0.5,
             max_file_bytes: int = 10 * 1024 * 1024) -> dict:
        """Write drums.ogg, drums.npz, harmony.json (if any) and manifest.json into ``out_dir``.

        Files are written under temporary names and renamed; the manifest (written last) records
        each file's sha256 and size.

        Returns:
            The manifest written.

        Raises:
            EnsembleError: a file would exceed ``max_file_bytes``.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        with sf.SoundFile(buf, "w", self.sample_rate, 1, format="OGG", subtype="VORBIS",
                          compression_level=ogg_quality) as fh:
            clipped = np.clip(self.audio, -1.0, 1.0)
            # small blocks: libsndfile's Vorbis writer overflows its stack on one long write
            for start in range(0, len(clipped), 1 << 14):
                fh.write(clipped[start:start + (1 << 14)])
        atomic_write_bytes(out / "drums.ogg", buf.getvalue())
        buf = io.BytesIO()
        np.savez_compressed(buf, sample_rate=np.asarray(self.sample_rate),
                            subdivisions=np.asarray(self.subdivisions),
                            format_version=np.asarray(FORMAT_VERSION),
                            n_samples=np.asarray(len(self.audio)), **self.table)
        atomic_write_bytes(out / "drums.npz", buf.getvalue())
        files = ["drums.ogg", "drums.npz"]
        if self.harmony is not None:
            atomic_write_text(out / "harmony.json", json.dumps(self.harmony.to_dict()) + "\n")
            files.append("harmony.json")
        entries = {}
        for name in files:
            size = (out / name).stat().st_size
            if size > max_file_bytes:
                raise EnsembleError(f"{name} is {size / 1e6:.1f} MB; allowed: at most "
                                    f"{max_file_bytes / 1e6:.1f} MB (lower max_loops_per_track)")
            entries[name] = {"sha256": sha256_file(out / name), "bytes": size}
        manifest = {**manifest, "format_version": FORMAT_VERSION, "n_loops": len(self),
                    "sample_rate": self.sample_rate, "subdivisions": self.subdivisions,
                    "files": entries}
        atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
        return manifest

    @classmethod
    def load(cls, path: str | os.PathLike) -> DrumDB:
        """Read a database folder, checking every file against the manifest's sha256.

        Raises:
            EnsembleError: a missing folder or file, a sha256 mismatch, unreadable files.
        """
        root = Path(path)
        man_path = root / "manifest.json"
        if not man_path.is_file():
            raise EnsembleError(f"drum database {str(root)!r} has no manifest.json; build it with "
                                "`python -m ensemble drums build --data data/babyband --out "
                                f"{str(root)}`")
        try:
            manifest = json.loads(man_path.read_text())
            files = manifest["files"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise EnsembleError(f"{str(man_path)!r} is not a drum database manifest") from None
        for name in ("drums.ogg", "drums.npz"):
            if name not in files:
                raise EnsembleError(f"{str(man_path)!r} does not list {name}")
        for name, entry in files.items():
            p = root / name
            if not p.is_file():
                raise EnsembleError(f"drum database file {str(p)!r} is missing")
            if sha256_file(p) != entry.get("sha256"):
                raise EnsembleError(f"drum database file {str(p)!r} does not match the sha256 in "
                                    "manifest.json (damaged or replaced); rebuild the database")
        try:
            with np.load(root / "drums.npz") as npz:
                table = {k: npz[k] for k in npz.files}
            audio, sr = sf.read(str(root / "drums.ogg"), dtype="float32")
        except (OSError, ValueError, sf.LibsndfileError) as exc:
            raise EnsembleError(f"drum database {str(root)!r} is unreadable ({exc})") from None
        if int(table.pop("n_samples")) != len(audio) or int(table.pop("sample_rate")) != sr:
            raise EnsembleError(f"drums.ogg in {str(root)!r} does not have the length/rate its "
                                "table expects; rebuild the database")
        subdivisions = int(table.pop("subdivisions"))
        table.pop("format_version", None)
        harmony = None
        if "harmony.json" in files:
            try:
                harmony = HarmonyModel.from_dict(json.loads((root / "harmony.json").read_text()))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise EnsembleError(f"{str(root / 'harmony.json')!r} is not valid JSON") from None
        return cls(audio, table, subdivisions=subdivisions, sample_rate=sr, manifest=manifest,
                   harmony=harmony, path=root)


@dataclass(frozen=True)
class DrumChoice:
    """The chosen loop and how it is laid.

    Attributes:
        index: loop index in the database.
        grid: the drum grid it is laid on.
        lag_beats: grid beat ``j`` plays loop beat ``(j + lag_beats) % beats``.
        score: correlation minus penalties (what was maximised).
        correlation: normalised cross-correlation of the onset patterns (-1..1; 0 for a silent
            leader).
        stretch: loop duration factor to reach the grid's tempo (1 = none).
        candidates: loops whose tempo was within reach.
    """

    index: int
    grid: DrumGrid
    lag_beats: int
    score: float
    correlation: float
    stretch: float
    candidates: int


def _znorm(x: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    v = x if valid is None else x[valid]
    if v.size == 0:
        return np.zeros_like(x)
    sd = float(v.std())
    z = (x - float(v.mean())) / sd if sd > 1e-9 else np.zeros_like(x)
    return z if valid is None else np.where(valid, z, 0.0)


def select_loop(db: DrumDB, onset: np.ndarray, grids: list[DrumGrid], *, frame_rate: float,
                max_stretch: float = 0.25, tempo_weight: float = 0.5, ratio_weight: float = 0.1,
                variety: int = 1, rng: np.random.Generator | None = None) -> DrumChoice:
    """Choose a loop, a grid and a bar phase for a leader (see the module docstring).

    Args:
        db: the drum database.
        onset: [T] the leader's onset envelope.
        grids: candidate drum grids (from :func:`~ensemble.perform.rhythm.drum_grids`).
        frame_rate: frames/s of ``onset``.
        max_stretch: loops whose tempo is more than this fraction away from a grid's are skipped
            for that grid (when no loop is in reach, the closest ones are used).
        tempo_weight: penalty per octave of tempo stretch.
        ratio_weight: penalty per octave between the grid and the leader's own beats.
        variety: pick among this many best (loop, grid, lag) choices with ``rng`` (1 = the best).

    Returns:
        A :class:`DrumChoice`.
    """
    if not grids:
        raise EnsembleError("no drum grid to lay a loop on")
    S = db.subdivisions
    tempos = db.table["tempo_bpm"]
    beats = db.table["beats"]
    options: list[tuple[float, float, int, int, DrumGrid, float]] = []
    n_reach = 0
    for grid in grids:
        stretch = tempos / grid.tempo_bpm  # [L] duration factor
        dist = np.abs(np.log2(stretch))
        reach = np.flatnonzero(dist <= np.log2(1.0 + max_stretch))
        if reach.size == 0:
            continue
        n_reach = max(n_reach, reach.size)
        x, valid = leader_pattern(onset, grid.times_s, frame_rate=frame_rate, subdivisions=S)
        x = _znorm(x, valid)
        n_valid = max(int(valid.sum()), 1)
        P = int(beats[reach].max()) * S
        N = len(x) + P
        reps = -(-N // S)
        tiles = np.zeros((reach.size, N))
        for r, i in enumerate(reach):  # tile each z-normalised loop pattern to the leader length
            pat = _znorm(db.pattern(int(i)).astype(np.float64))
            tiles[r] = np.tile(pat, -(-reps * S // len(pat)))[:N]
        L = scipy.fft.next_fast_len(len(x) + N)
        spec = np.conj(scipy.fft.rfft(x, L))[None, :] * scipy.fft.rfft(tiles, L, axis=1)
        corr = scipy.fft.irfft(spec, L, axis=1)[:, :P] / n_valid  # [C, P] lags 0..P-1
        penalty_ratio = ratio_weight * abs(np.log2(grid.ratio))
        for r, i in enumerate(reach):
            lags = np.arange(int(beats[i])) * S
            c = corr[r, lags]
            k = int(np.argmax(c))
            score = float(c[k]) - tempo_weight * float(dist[i]) - penalty_ratio
            options.append((score, float(c[k]), int(i), k, grid, float(stretch[i])))
    if not options:  # no loop within reach of any grid: the closest tempo to the leader's beats
        grid = min(grids, key=lambda g: abs(np.log2(g.ratio)))
        i = int(np.argmin(np.abs(np.log2(tempos / grid.tempo_bpm))))
        return DrumChoice(i, grid, 0, 0.0, 0.0, float(tempos[i] / grid.tempo_bpm), 0)
    options.sort(key=lambda o: (-o[0], o[2]))
    pick = 0
    if variety > 1 and rng is not None:
        pick = int(rng.integers(min(variety, len(options))))
    score, corr_v, i, k, grid, stretch = options[pick]
    return DrumChoice(i, grid, k, round(score, 4), round(corr_v, 4), stretch, n_reach)


def _beat_slices(L: int, loop_beats: int, g: np.ndarray, lag_beats: int, *, n_samples: int,
                 sample_rate: int, pre_roll_s: float, crossfade_s: float):
    """The slices :func:`place_loop` lays, one per grid beat that reaches the output: yields
    ``(s0, src0, have)``: the slice starts at output sample ``s0``, reads the stretched loop (``L``
    samples) from ``src0`` (mod ``L``), ``have`` samples long (the beat plus its crossfade ``xf``,
    never into the next loop beat's attack); also the crossfade's length first, as ``(xf, None, None)``."""
    beat_len = L / loop_beats
    pre = int(round(pre_roll_s * sample_rate))
    xf = max(1, int(round(crossfade_s * sample_rate)))
    yield xf, None, None
    starts = np.round(g * sample_rate).astype(np.int64)
    for j in range(len(g) - 1):
        s0, s1 = int(starts[j]) - pre, int(starts[j + 1]) - pre
        if s1 + xf < 0 or s0 >= n_samples:
            continue
        k = (j + lag_beats) % loop_beats
        yield s0, int(round(k * beat_len)) - pre, min(s1 - s0 + xf, int(round(beat_len)) + xf)


def place_loop(loop: np.ndarray, loop_beats: int, grid_times_s: np.ndarray, lag_beats: int, *,
               n_samples: int, sample_rate: int = 16000, pre_roll_s: float = 0.012,
               crossfade_s: float = 0.004) -> np.ndarray:
    """Lay a loop beat by beat on a grid.

    Args:
        loop: [n] one loop of ``loop_beats`` equal beats.
        grid_times_s: [M] drum-beat times covering the output.
        lag_beats: grid beat ``j`` plays loop beat ``(j + lag_beats) % loop_beats``.
        n_samples: output length.
        pre_roll_s: each beat's slice starts this early (keeps early, humanized attacks).
        crossfade_s: linear crossfade between consecutive slices.

    Returns:
        [n_samples] float32.
    """
    loop = np.asarray(loop, dtype=np.float32)
    g = np.asarray(grid_times_s, dtype=np.float64)
    if loop.size < loop_beats or loop_beats < 1 or len(g) < 2:
        raise EnsembleError(f"cannot lay a {loop.size}-sample loop of {loop_beats} beats on "
                            f"{len(g)} grid points")
    loop = _stretched(loop, loop_beats, g, sample_rate)
    L = len(loop)
    slices = _beat_slices(L, loop_beats, g, lag_beats, n_samples=n_samples, sample_rate=sample_rate,
                          pre_roll_s=pre_roll_s, crossfade_s=crossfade_s)
    xf = next(slices)[0]
    ramp = (np.arange(xf, dtype=np.float32) + 0.5) / xf
    out = np.zeros(n_samples + 2 * L, np.float32)  # room for slices that run past the end
    offset = L  # out index of sample 0
    for s0, src0, have in slices:
        idx = np.mod(src0 + np.arange(have), L)
        seg = loop[idx].copy()
        seg[:xf] *= ramp
        seg[-xf:] *= ramp[::-1]
        a = s0 + offset
        lo, hi = max(a, 0), min(a + have, len(out))
        if hi > lo:
            out[lo:hi] += seg[lo - a:hi - a]
    return out[offset:offset + n_samples]


# ------------------------------------------------------------------------------- hits as placed

GM_KICK, GM_SNARE, GM_HIHAT = 36, 38, 42  # General MIDI percussion keys (channel 10)
KICK_BODY_S = 0.09  # a kick rising again this soon after a kick is its body (the kit's kicks rise twice ~70 ms apart)


@dataclass(frozen=True)
class DrumHits:
    """Drum hits: ``times_s`` [n] s (ascending), ``keys`` [n] General MIDI percussion keys,
    ``velocities`` [n] 1..127."""

    times_s: np.ndarray
    keys: np.ndarray
    velocities: np.ndarray

    def __len__(self) -> int:
        return len(self.times_s)


def _velocity(level_db: float) -> int:
    """MIDI velocity of a level in dBFS: -60 dB -> 1, 0 dB -> 127 (linear in dB)."""
    return int(np.clip(round(1 + 126 * (level_db + 60.0) / 60.0), 1, 127))


def detect_hits(audio: np.ndarray, *, sample_rate: int, min_gap_s: float = 0.05,
                threshold_db: float = -40.0) -> DrumHits:
    """Onsets of drum audio, each called kick, snare or hi-hat.

    An onset is a peak of the positive change of the 5 ms energy envelope, at least ``min_gap_s``
    after the previous one, whose 30 ms after it are louder than ``threshold_db`` (dBFS RMS); its
    time is the first sample of that frame (or the frame before) reaching a tenth of the attack's
    peak. Each hit is called from the spectrum of its first 30 ms: most energy below 200 Hz -> kick
    (36), most above 5 kHz -> closed hi-hat (42), else snare (38); a kick within ``KICK_BODY_S`` of
    the previous kick is that kick's second rise. Velocity from the hit's RMS.

    Args:
        audio: [n] float mono.
        sample_rate: Hz.

    Raises:
        EnsembleError: ``audio`` not 1-D or the rate not positive.
    """
    x = np.asarray(audio, np.float64)
    if x.ndim != 1:
        raise EnsembleError(f"drum audio has shape {x.shape}; allowed: [n_samples]")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise EnsembleError(f"sample_rate {sample_rate!r}; allowed: a positive whole number of Hz")
    hop = max(1, int(round(0.005 * sample_rate)))  # 5 ms frames
    n = len(x) // hop
    times, keys, vels = [], [], []
    if n >= 3:
        energy = (x[: n * hop].reshape(n, hop) ** 2).mean(axis=1)  # [n]
        env_db = 10.0 * np.log10(energy + 1e-12)
        rise = np.maximum(np.diff(env_db, prepend=env_db[0]), 0.0)
        win = int(round(0.03 * sample_rate))
        last = last_kick = -np.inf
        for j in range(1, n - 1):
            if not (rise[j] > 6.0 and rise[j] >= rise[j - 1] and rise[j] >= rise[j + 1]):
                continue
            t = j * hop / sample_rate
            if t - last < min_gap_s:
                continue
            seg = x[j * hop: j * hop + win]
            if len(seg) < win // 2:
                continue
            rms_db = 10.0 * np.log10(float(np.mean(seg ** 2)) + 1e-12)
            if rms_db < threshold_db:
                continue
            spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)))) ** 2
            freqs = np.fft.rfftfreq(len(seg), 1.0 / sample_rate)
            total = float(spec.sum()) + 1e-20
            low, high = float(spec[freqs < 200.0].sum()) / total, float(spec[freqs > 5000.0].sum()) / total
            key = GM_KICK if low > 0.5 else GM_HIHAT if high > 0.5 else GM_SNARE
            if key == GM_KICK and t - last_kick < KICK_BODY_S:
                continue  # the second rise of one kick (its body after the click), not a new hit
            # to the sample: the first one of the rising frame (or the one before) that reaches a
            # tenth of the attack's peak
            a = max(0, (j - 1) * hop)
            head = np.abs(x[a:(j + 2) * hop])
            t = (a + int(np.argmax(head >= 0.1 * head.max()))) / sample_rate
            times.append(t)
            keys.append(key)
            vels.append(_velocity(rms_db + 6.0))
            last = t
            last_kick = t if key == GM_KICK else last_kick
    return DrumHits(np.asarray(times, np.float64), np.asarray(keys, np.int64), np.asarray(vels, np.int64))


def loop_hits(loop: np.ndarray, *, sample_rate: int) -> DrumHits:
    """The hits of a loop as it sounds when looped, in loop time ``[0, len(loop))`` s: found on the
    loop itself (three copies end to end, the middle one kept, so a hit on its first sample is
    found), never on a rendering."""
    loop = np.asarray(loop, np.float32)
    n = len(loop)
    h = detect_hits(np.concatenate([loop, loop, loop]), sample_rate=sample_rate)
    t = h.times_s * sample_rate - n  # samples in the middle copy
    keep = (t >= 0) & (t < n)
    return DrumHits(t[keep] / sample_rate, h.keys[keep], h.velocities[keep])


def _stretched(loop: np.ndarray, loop_beats: int, grid_times_s: np.ndarray, sample_rate: int) -> np.ndarray:
    """The loop as :func:`place_loop` lays it: stretched to the grid's median beat (when more than 0.5 % off)."""
    target_beat = float(np.median(np.diff(grid_times_s))) * sample_rate  # samples per grid beat
    stretch = target_beat * loop_beats / len(loop)
    if abs(stretch - 1.0) > 0.005:
        loop = soxr.resample(loop, sample_rate, sample_rate * stretch, quality="HQ").astype(np.float32)
    return loop


def placed_hits(loop: np.ndarray, loop_beats: int, grid_times_s: np.ndarray, lag_beats: int, *,
                n_samples: int, sample_rate: int = 16000, pre_roll_s: float = 0.012,
                crossfade_s: float = 0.004) -> DrumHits:
    """Where :func:`place_loop` (same arguments) puts each hit of the loop in its output.

    The loop is stretched as :func:`place_loop` stretches it and its hits are found on that audio
    (:func:`loop_hits`); each grid beat ``j`` plays loop beat ``(j + lag_beats) % loop_beats`` from
    ``pre_roll_s`` before it, so a hit at loop sample ``h`` of that beat's slice sounds at the slice's
    start plus its offset. A hit counts where its slice plays it before the slice's fade-out (a hit in
    the crossfade belongs to the next slice; a hit past a short grid beat's end is cut, as in the
    audio).

    Returns:
        The hits in output time, ascending, inside ``[0, n_samples)``.

    Raises:
        EnsembleError: a loop or grid :func:`place_loop` refuses.
    """
    loop = np.asarray(loop, dtype=np.float32)
    g = np.asarray(grid_times_s, dtype=np.float64)
    if loop.size < loop_beats or loop_beats < 1 or len(g) < 2:
        raise EnsembleError(f"cannot lay a {loop.size}-sample loop of {loop_beats} beats on {len(g)} grid points")
    loop = _stretched(loop, loop_beats, g, sample_rate)
    hits = loop_hits(loop, sample_rate=sample_rate)
    L = len(loop)
    src = np.round(np.asarray(hits.times_s, np.float64) * sample_rate)  # hits in the stretched loop, samples
    times, keys, vels = [], [], []
    slices = _beat_slices(L, loop_beats, g, lag_beats, n_samples=n_samples, sample_rate=sample_rate,
                          pre_roll_s=pre_roll_s, crossfade_s=crossfade_s)
    xf = next(slices)[0]
    for s0, src0, have in slices:
        offs = np.mod(src - src0, L)  # where in this slice each hit lies
        for i in np.flatnonzero(offs < have - xf):
            out = s0 + offs[i]
            if 0 <= out < n_samples:
                times.append(out / sample_rate)
                keys.append(int(hits.keys[i]))
                vels.append(int(hits.velocities[i]))
    order = np.argsort(times, kind="stable")
    return DrumHits(np.asarray(times, np.float64)[order], np.asarray(keys, np.int64)[order],
                    np.asarray(vels, np.int64)[order])
