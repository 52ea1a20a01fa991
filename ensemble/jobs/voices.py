"""A single-voice Keys corpus: each BabyBand Keys part split into monophonic voices, rendered alone.

The shipped Keys decoder learned whole Keys stems (two- and three-note chords) from the *top* note's
f0, so it renders a chord as one harmonic series plus noise. The performer renders Keys as up to three
voices, each through the Keys decoder; a decoder that learned single voices fits that use.
``python -m ensemble corpus keys-voices`` reads the Keys notes of a BabyBand build's tracks and

* splits them into voices with :func:`split_voices` (chords: notes whose onsets lie within
  ``chord_window_s`` of the chord's first onset; within a chord voice 0 is the highest note, voice 1
  the next lower, ...; a note still sounding when the next note of its voice starts is cut there, so
  every voice is monophonic and every note lands in exactly one voice),
* renders each voice on its own with the track's Keys program and the track's Keys ``gain_db`` (the
  gain the voice had inside the stem, so a voice sounds at its level in the mix; no -1 dBFS ceiling
  is needed for one voice, but it is kept as a guard), cut to ``max_seconds``, and
* writes one track folder per (track, voice), ``<Track>_v<k>``, in the corpus layout with the stem
  name ``Keys`` (``stems/Keys.flac``, ``features.npz`` with ground-truth f0 from that voice's notes,
  loudness from its audio, ``metadata.json`` with the source track, split, voice index, program).

Voices with fewer than ``min_notes`` notes in the cut (a rare fourth voice) are not written. Finished
folders are skipped when the command runs again (resumable); ``manifest.json`` records the command,
the config and the counts.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig, loudness_db, n_frames
from ensemble.files import sha256_file, write_json_atomic
from ensemble.jobs.corpus.build import render_notes
from ensemble.jobs.corpus.layout import NoteList, notes_to_frames, stem_features, write_track
from ensemble.jobs.timbres import soundfont_file, source_tracks

__all__ = ["VoiceCorpusConfig", "split_voices", "build_voice_corpus"]


@dataclass(frozen=True)
class VoiceCorpusConfig:
    """What ``corpus keys-voices`` renders.

    Attributes:
        tracks: source tracks per split (the first ones of each split, in track order).
        max_seconds: each voice is cut to this length (or the source track's, if shorter).
        chord_window_s: notes starting within this time of a chord's first onset belong to it.
        min_notes: voices with fewer notes (in the cut) are not written.
        features: the frame grid.
    """

    tracks: tuple[tuple[str, int], ...] = (("train", 40), ("valid", 6), ("test", 8))
    max_seconds: float = 40.0
    chord_window_s: float = 0.03
    min_notes: int = 4
    features: FeatureConfig = FeatureConfig()

    def __post_init__(self) -> None:
        if not 4.0 <= self.max_seconds <= 600.0:
            raise EnsembleError(f"max_seconds {self.max_seconds:g}; allowed: 4..600 s")
        if not 0.0 <= self.chord_window_s <= 0.2:
            raise EnsembleError(f"chord_window_s {self.chord_window_s:g}; allowed: 0..0.2 s")
        bad = [s for s, n in self.tracks if s not in ("train", "valid", "test") or int(n) < 0]
        if bad:
            raise EnsembleError(f"tracks {self.tracks}; allowed: (split, count >= 0) with split in "
                                "train, valid, test")


def split_voices(notes: NoteList, *, chord_window_s: float = 0.03) -> list[NoteList]:
    """Split a polyphonic part into monophonic voices, ordered from the top.

    Notes are grouped into chords by onset (a note starting within ``chord_window_s`` of the current
    chord's first onset joins it). In each chord the notes are ranked by pitch from the top (ties: the
    earlier, then the longer note first) and note k goes to voice k, so voice 0 carries every chord's
    top note. A note still sounding when the next note of its voice starts is cut at that onset: each
    voice is monophonic (at most one note in any frame), and every note is in exactly one voice
    (possibly shortened).

    Args:
        notes: the part's notes (seconds).
        chord_window_s: the chord grouping window, seconds.

    Returns:
        One NoteList per voice (as many as the largest chord has notes), each sorted by onset.
    """
    order = sorted(range(len(notes)), key=lambda i: (float(notes.onset_s[i]), -int(notes.pitch[i])))
    chords: list[list[int]] = []
    for i in order:
        if chords and float(notes.onset_s[i]) - float(notes.onset_s[chords[-1][0]]) <= chord_window_s:
            chords[-1].append(i)
        else:
            chords.append([i])
    voices: list[list[list[float]]] = []
    for chord in chords:
        ranked = sorted(chord, key=lambda i: (-int(notes.pitch[i]), float(notes.onset_s[i]),
                                              -float(notes.offset_s[i])))
        for k, i in enumerate(ranked):
            if k == len(voices):
                voices.append([])
            row = [float(notes.onset_s[i]), float(notes.offset_s[i]), int(notes.pitch[i]),
                   int(notes.velocity[i])]
            if voices[k] and voices[k][-1][1] > row[0]:
                voices[k][-1][1] = max(voices[k][-1][0], row[0])  # legato: cut the held note
            voices[k].append(row)
    return [NoteList.from_rows([(on, off, int(p), int(v)) for on, off, p, v in rows]) for rows in voices]


def _render_voice(src: Path, meta: dict, k: int, voice: NoteList, out: Path, config: VoiceCorpusConfig,
                  soundfont: Path) -> dict:
    fc = config.features
    sr = fc.sample_rate
    keys = meta["stems"]["Keys"]
    seconds = min(config.max_seconds, float(meta.get("duration_s") or config.max_seconds))
    rows = [(on, min(off, seconds), p, v) for on, off, p, v in zip(
        voice.onset_s, voice.offset_s, voice.pitch, voice.velocity, strict=True) if on < seconds - 0.05]
    if len(rows) < config.min_notes:
        raise EnsembleError(f"{src.name} voice {k}: {len(rows)} notes in {seconds:g} s "
                            f"(< {config.min_notes})")
    cut = NoteList.from_rows(rows)
    n = int(round(seconds * sr))
    y = render_notes(cut, program=int(keys["program"]), is_drum=False, n_samples=n, soundfont=soundfont,
                     sample_rate=sr)
    y = (y * 10.0 ** (float(keys["gain_db"]) / 20.0)).astype(np.float32)
    peak = float(np.abs(y).max())
    if peak <= 1e-7:
        raise EnsembleError(f"{src.name} voice {k}: program {keys['program']} rendered silence")
    ceiling_db = 0.0
    if peak > 0.891:  # -1 dBFS ceiling, as in the corpus build
        ceiling_db = 20.0 * float(np.log10(0.891 / peak))
        y *= np.float32(0.891 / peak)
    feats = stem_features(y, notes_to_frames(cut, n_frames(n, fc), config=fc), config=fc)
    track_meta = {
        "corpus": "BabyBand Keys voices", "track": out.name, "split": meta["split"],
        "source_track": src.name, "source": meta.get("source", {}), "voice": k,
        "program": int(keys["program"]), "program_name": keys.get("program_name"),
        "gain_db": round(float(keys["gain_db"]) + ceiling_db, 3),
        "sample_rate": sr, "hop_length": fc.hop_length, "frame_rate": fc.frame_rate,
        "duration_s": round(n / sr, 4), "tempo_bpm": meta.get("tempo_bpm"), "key": meta.get("key"),
        "stems": {"Keys": {"role": "harmony voice", "program": int(keys["program"]), "voice": k,
                           "is_drum": False, "f0_source": "notes", "polyphonic": False,
                           "notes": cut.to_json()}},
    }
    write_track(out, stems={"Keys": y}, mix=y, features={"Keys": feats},
                mix_loudness_db=loudness_db(y, config=fc), metadata=track_meta, config=fc)
    return {"track": out.name, "split": meta["split"], "voice": k, "n_notes": len(cut)}


def build_voice_corpus(source_dir: str | os.PathLike, out_dir: str | os.PathLike,
                       config: VoiceCorpusConfig = VoiceCorpusConfig(), *, command: str = "",
                       soundfont: str | os.PathLike | None = None, say=print) -> dict:
    """Render the source build's Keys parts voice by voice (see the module docstring).

    Returns:
        The manifest written to ``<out>/manifest.json``.

    Raises:
        EnsembleError: no source tracks with a Keys part, a missing SoundFont.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    sf2 = soundfont_file(soundfont)
    chosen = source_tracks(source_dir, config.tracks, "Keys")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    rows, skipped = [], []
    for i, (src, meta) in enumerate(chosen):
        nj = meta["stems"]["Keys"]["notes"]
        notes = NoteList.from_rows(zip(nj["onset_s"], nj["offset_s"], nj["pitch"], nj["velocity"], strict=True))
        for k, voice in enumerate(split_voices(notes, chord_window_s=config.chord_window_s)):
            out = out_dir / f"{src.name}_v{k}"
            if (out / "metadata.json").is_file():
                m = json.loads((out / "metadata.json").read_text())
                rows.append({"track": out.name, "split": m["split"], "voice": m["voice"],
                             "n_notes": len(m["stems"]["Keys"]["notes"]["pitch"])})
                continue
            try:
                rows.append(_render_voice(src, meta, k, voice, out, config, sf2))
            except EnsembleError as exc:
                skipped.append(str(exc))
        say(f"{i + 1}/{len(chosen)} source tracks rendered ({time.monotonic() - t0:.0f} s)")
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        per = counts.setdefault(r["split"], {})
        per[f"voice {r['voice']}"] = per.get(f"voice {r['voice']}", 0) + 1
    manifest = {
        "what": "BabyBand Keys parts split into single voices, each rendered on its own",
        "command": command, "config": {**asdict(config), "features": config.features.to_dict()},
        "source_dir": str(source_dir), "soundfont": sf2.name, "soundfont_sha256": sha256_file(sf2),
        "source_tracks": len(chosen), "counts": counts, "tracks": rows, "skipped": skipped,
        "build_seconds": round(time.monotonic() - t0, 1),
    }
    write_json_atomic(out_dir / "manifest.json", manifest)
    return manifest
