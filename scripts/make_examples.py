"""Write the app's example clips: ``assets/examples/*.wav`` + ``manifest.json``.

Short excerpts of the Guitar (leader) stems of BabyBand's **test** split (never trained on, never
indexed by the shipped RAG database), PCM-16, 16 kHz mono. Deterministic: the same corpus and seed
give the same files (the manifest records the command, the seed, each clip's source track, offset
and SHA-256).

Each clip starts 50 ms before a note onset and is chosen among the windows whose frames are mostly
voiced (a melody, not a rest), with 10 ms fades at both ends so it does not click.

    python -m scripts.make_examples --data data/babyband --out assets/examples
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from ensemble.audio import load_audio, save_wav
from ensemble.errors import EnsembleError

SR = 16000
DEFAULT_SECONDS = (8.0, 12.0, 16.0, 20.0)
MIN_VOICED = 0.75  # share of voiced frames a window needs
PRE_ROLL_S = 0.05
FADE_S = 0.01


def _test_tracks(data: Path) -> list[Path]:
    tracks = []
    for meta in sorted(data.glob("Track*/metadata.json")):
        if json.loads(meta.read_text()).get("split") == "test":
            tracks.append(meta.parent)
    if not tracks:
        raise EnsembleError(f"no test-split tracks under {str(data)!r}; build the corpus first "
                            "(python -m ensemble corpus build --out data/babyband)")
    return tracks


def _candidate_offsets(track: Path, seconds: float) -> list[float]:
    """Note onsets (minus the pre-roll) whose window of ``seconds`` is mostly voiced."""
    meta = json.loads((track / "metadata.json").read_text())
    feats = np.load(track / "features.npz")
    voiced = feats["Guitar/voiced"].astype(bool)
    fps = float(meta["frame_rate"])
    duration = float(meta["duration_s"])
    out = []
    for onset in meta["stems"]["Guitar"]["notes"]["onset_s"]:
        start = float(onset) - PRE_ROLL_S
        if start < 0 or start + seconds > duration - 0.5:
            continue
        a, b = int(round(start * fps)), int(round((start + seconds) * fps))
        if voiced[a:b].mean() >= MIN_VOICED:
            out.append(round(start, 3))
    return out


def make_examples(data: Path, out: Path, seconds: tuple[float, ...], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    tracks = _test_tracks(data)
    order = rng.permutation(len(tracks))
    out.mkdir(parents=True, exist_ok=True)
    clips, used = [], set()
    for length in seconds:
        for i in order:
            track = tracks[i]
            if track.name in used:
                continue
            offsets = _candidate_offsets(track, length)
            if offsets:
                break
        else:
            raise EnsembleError(f"no test track has a {length:g} s window that is >= "
                                f"{MIN_VOICED:.0%} voiced")
        used.add(track.name)
        offset = offsets[int(rng.integers(len(offsets)))]
        audio = load_audio(track / "stems" / "Guitar.flac").audio
        a = int(round(offset * SR))
        clip = audio[a:a + int(round(length * SR))].copy()
        fade = int(FADE_S * SR)
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        clip[:fade] *= ramp
        clip[-fade:] *= ramp[::-1]
        meta = json.loads((track / "metadata.json").read_text())
        name = f"babyband_{track.name.lower()}_{int(length)}s.wav"
        path = save_wav(out / name, clip, SR)
        clips.append({
            "file": name, "seconds": round(len(clip) / SR, 3), "track": track.name,
            "offset_s": offset, "split": meta["split"], "source": meta.get("source", {}).get("title"),
            "key": meta.get("key", {}).get("name"), "tempo_bpm": meta.get("tempo_bpm"),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        })
    manifest = {
        "what": "Guitar-stem excerpts of BabyBand's test split, PCM-16 16 kHz mono",
        "command": " ".join(["python -m scripts.make_examples", "--data", shlex.quote(str(data)),
                             "--out", shlex.quote(str(out)), "--seconds",
                             ",".join(f"{s:g}" for s in seconds), "--seed", str(seed)]),
        "seed": seed, "corpus": str(data), "clips": clips,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/babyband", help="BabyBand corpus folder")
    p.add_argument("--out", default="assets/examples")
    p.add_argument("--seconds", default=",".join(f"{s:g}" for s in DEFAULT_SECONDS),
                   help="clip lengths, comma-separated (one clip per length, each from another track)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        seconds = tuple(float(s) for s in args.seconds.split(",") if s.strip())
        manifest = make_examples(Path(args.data), Path(args.out), seconds, args.seed)
    except (EnsembleError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for c in manifest["clips"]:
        print(f"{c['file']}: {c['track']} @ {c['offset_s']:.3f} s, {c['seconds']:g} s, {c['key']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
