"""Write checkpoints/MODEL_CARD.md and checkpoints/MANIFEST.json from the shipped checkpoints'
sidecars and the evaluation JSONs in checkpoints/eval/ (made by ``python -m ensemble eval ...``).

    python scripts/model_card.py [--checkpoints checkpoints]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

import argparse  # noqa: E402
import json  # noqa: E402

from ensemble.models.io import atomic_write_text, sha256_file  # noqa: E402

DECODERS = ("Guitar", "Bass", "Keys")


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", default="checkpoints")
    args = parser.parse_args()
    ck = Path(args.checkpoints)
    corpus = _load(Path("data/babyband/corpus.json")) or {}

    lines = ["# Model card: ensemble instrument decoders and arranger", "",
             "All models are trained on CPU by this project's own commands from BabyBand, the corpus this",
             "project renders offline from music21's bundled scores (Bach chorales, Essen folksongs,",
             "Nottingham reels) through the TimGM6mb General-MIDI SoundFont.", "",
             "## Data", "",
             "```bash", "python -m ensemble corpus build --out data/babyband --seed 0", "```", ""]
    if corpus:
        s = corpus.get("summary", {})
        lines += [f"{s.get('tracks')} tracks, {s.get('minutes')} minutes; minutes per split: "
                  f"{s.get('minutes_per_split')}. Splits are by source piece (seed 0).", ""]
    lines += ["Frame grid: 16 kHz audio, hop 160 samples = **100 frames/s** (the reference design used 250);",
              "f0 and A-weighted loudness from the corpus's ground truth (f0 from the notes).", "",
              "## Models", "",
              "| model | parameters | file size | training steps | wall time | complete | command |",
              "|---|---|---|---|---|---|---|"]
    manifest = {"files": {}}
    for name in [f"decoder_{d}" for d in DECODERS] + ["arranger", "arranger_loudness"]:
        side = _load(ck / f"{name}.json")
        if side is None:
            continue
        meta = side["meta"]
        lines.append(f"| {name} | {side['n_parameters']:,} | {side['bytes'] / 1e6:.1f} MB | {meta['steps']} | "
                     f"{meta['wall_seconds'] / 60:.1f} min | {meta['complete']} | `{meta.get('command', '')}` |")
        manifest["files"][f"{name}.pt"] = {"sha256": sha256_file(ck / f"{name}.pt"), "command": meta.get("command"),
                                           "seed": meta["train_config"]["seed"],
                                           "data_manifest_sha256": meta.get("data_manifest_sha256"),
                                           "config": side["config"]}
    lines += ["", "Decoders: MLP -> 3-layer GRU (hidden 256) -> LayerNorm -> heads for amplitude, 100 harmonics",
              "and 65 noise bands, rendered by the project's DDSP synth; batch 16 x 2 s windows, Adam 1e-3 decaying",
              "to 1e-4, multi-resolution STFT loss (FFT 1024..64). Arranger: Transformer encoder (4 layers,",
              "d_model 128, 4 heads) over frames pooled by 4 (25 steps/s), 10 s windows, MSE on normalised",
              "follower loudness. Training stopped at the `--max-minutes` budgets (2-core CPU shared with",
              "other jobs); `complete = False` means fewer than the planned 900/1500 steps. Running the same",
              "command again resumes from `checkpoints/.train-<name>/` (not shipped). Each model was trained",
              "in resumed runs of that command with growing `--max-minutes`; the table shows the last one.",
              "The Bass decoder's last run added a 2048-point STFT to the loss: with FFT sizes up to 1024",
              "(15.6 Hz bins) it had learned too little energy at the fundamental (pYIN on its output",
              "tracked the 3rd harmonic: median f0 error 1740 cents at 372 steps; 0.12 cents after).", "",
              "## Evaluation (test split)", "",
              "Decoders: multi-resolution STFT loss of resynthesis with ground-truth f0 and loudness in",
              "(lower is better), and median |f0 error| in cents of pYIN on the output vs the input f0.", "",
              "| instrument | windows | trained | untrained | additive 1/k baseline | f0 err trained (c) | "
              "f0 err baseline (c) | f0 err of pYIN on the real audio (c) |", "|---|---|---|---|---|---|---|---|"]
    for d in DECODERS:
        ev = _load(ck / "eval" / f"decoder_{d}.json")
        if ev:
            m, c = ev["mrstft"], ev["f0_error_cents_median"]
            lines.append(f"| {d} | {ev['windows']} | {m['trained']} | {m['untrained']} | {m['additive_baseline']} | "
                         f"{c.get('trained')} | {c.get('additive_baseline')} | {c.get('target')} |")
    lines += ["", "Commands: `python -m ensemble eval decoder --instrument NAME --figure "
              "checkpoints/figures/NAME.png --json-out checkpoints/eval/decoder_NAME.json`.", "",
              "Arranger: MSE of predicted follower loudness (normalised to [0, 1]: 0 = -80 dB, 1 = 0 dB) vs ground",
              "truth, against the leader's loudness scaled per follower (least squares on train) and the",
              "per-follower training mean.", "",
              "| model | inputs | MSE all | Bass | Drums | Keys |", "|---|---|---|---|---|---|"]
    for name in ("arranger", "arranger_loudness"):
        ev = _load(ck / "eval" / f"{name}.json")
        if not ev:
            continue
        for k in ev["mse"]:
            if k != "arranger" and name != "arranger":
                continue
            label = name if k == "arranger" else f"baseline: {k}"
            pf = ev["mse_per_follower"][k]
            lines.append(f"| {label} | {','.join(ev['inputs']) if k == 'arranger' else '-'} | {ev['mse'][k]} | "
                         f"{pf.get('Bass')} | {pf.get('Drums')} | {pf.get('Keys')} |")
    early = _load(ck / "eval" / "arranger_at_340_steps.json")
    lines += ["", "Input ablation at an equal budget (~350 steps each): loudness + onset strength + f0 + voicing",
              f"MSE {early['mse']['arranger'] if early else '?'} vs loudness only "
              f"{(_load(ck / 'eval' / 'arranger_loudness.json') or {}).get('mse', {}).get('arranger', '?')}: "
              "onset, f0 and voicing help, so the shipped `arranger.pt` uses them (and trained on to the",
              "step count in the table). `arranger_loudness.pt` is not shipped; its evaluation is kept.", "",
              "## Spectrograms (target vs resynthesis, first test window)", ""]
    for d in DECODERS:
        if (ck / "figures" / f"{d}.png").is_file():
            lines += [f"### {d}", "", f"![{d}](figures/{d}.png)", ""]
            manifest["files"][f"figures/{d}.png"] = {"sha256": sha256_file(ck / "figures" / f"{d}.png")}
    lines += ["## Limits", "",
              "- Timbres are General-MIDI SoundFont renderings, not recordings: the decoders imitate TimGM6mb.",
              "- CPU budgets: a few hundred steps per model; longer training lowers the losses further.", ""]
    atomic_write_text(ck / "MODEL_CARD.md", "\n".join(lines))
    atomic_write_text(ck / "MANIFEST.json", json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {ck / 'MODEL_CARD.md'} and {ck / 'MANIFEST.json'}")


if __name__ == "__main__":
    main()
