"""``index build`` (the RAG database) and ``extend`` (Top-K continuations, performed)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ensemble.errors import EnsembleError

if TYPE_CHECKING:  # the parser stays cheap to import: extend loads torch
    from ensemble.extend import Extension


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise EnsembleError(f"{text!r} is not a comma-separated list of seconds, e.g. 7,7.5,8,8.5") from None


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise EnsembleError(f"{name} {text!r} is not a comma-separated list of integers, e.g. -3,0,3") from None


def _index_build(args: argparse.Namespace) -> int:
    from ensemble.engine import EngineConfig
    from ensemble.files import sha256_file
    from ensemble.jobs.index import Variant, build_database, read_pca
    from ensemble.models.io import decoder_file, load_decoder
    from ensemble.rag import RagConfig
    from ensemble.rag_index import AnnConfig

    if args.serial and args.scheduler:
        raise EnsembleError("--serial and --scheduler together; allowed: one of them (--serial builds in "
                            "this process, --scheduler on a Dask cluster)")
    if not args.serial:
        from ensemble.jobs.distributed import check_workers

        check_workers(args.workers, args.scheduler)  # before the decoder loads: a bad value fails at once
    leader = args.leader or EngineConfig().leader
    decoder_path = Path(args.checkpoints) / decoder_file(leader)
    decoder, _ = load_decoder(decoder_path)
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    stems = tuple(s.strip() for s in args.stems.split(",") if s.strip())
    config = RagConfig(lookbacks=_floats(args.lookbacks), chunk_seconds=args.chunk_seconds, stems=stems)
    tempos = _floats(args.tempos) if args.tempos else (1.0,)
    variants = tuple(Variant(semitones=s, tempo=t) for s in _ints(args.transpositions, "--transpositions")
                     for t in tempos)
    if not variants:
        raise EnsembleError("--transpositions and --tempos give no variant; allowed: e.g. --transpositions 0 "
                            "--tempos 1")
    pca = read_pca(args.pca_from) if args.pca_from else None
    ann = AnnConfig(codes=args.ann_codes)
    command = "python -m ensemble " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    common = dict(splits=splits, config=config, command=command, decoder_version=sha256_file(decoder_path)[:12],
                  progress=not args.quiet, keep_audio=args.keep_audio, variants=variants, pca=pca, ann=ann)
    if args.serial:
        manifest = build_database(args.data, args.out, decoder, **common)
    else:
        from ensemble.jobs.distributed import build_database_distributed

        manifest = build_database_distributed(args.data, args.out, decoder, workers=args.workers,
                                              scheduler=args.scheduler, work_dir=args.work_dir, **common)
    keys = ("version", "n_tracks", "n_lines", "n_chunks", "minutes")
    out = {k: manifest[k] for k in keys}
    if "build" in manifest:
        out["build"] = {k: manifest["build"][k] for k in ("workers", "tracks_computed", "tracks_reused",
                                                          "extract_seconds", "tracks_per_second")}
    if "ann" in manifest:
        out["ann"] = {k: manifest["ann"][k] for k in ("kind", "nprobe", "recall_at_10")}
        out["ann"]["recall_at_10"] = manifest["ann"]["recall_at_10"].get("value")
    print(json.dumps(out))
    return 0


def _extend(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ensemble.audio import load_audio
    from ensemble.engine import Engine, EngineConfig
    from ensemble.extend import ExtendRequest, extend
    from ensemble.outputs import native_format, write_extension
    from ensemble.timbre import check_timbre

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise EnsembleError(f"output folder {str(out)!r} exists and is not empty; choose a new one")
    # the recording as uploaded is kept: every output plays it back at its own rate and channels
    clip = load_audio(args.input, allow_silent=False, keep_original=True)
    engine = Engine.load(EngineConfig(checkpoints_dir=args.checkpoints, database_dir=args.database,
                                      drums_dir=args.drums, weights=args.weights))
    # the installed timbres are known only now: a bad --timbre is refused before any work starts
    timbre = check_timbre(args.timbre, engine.timbres)
    request = ExtendRequest(seconds=args.seconds, k=args.top_k, alpha=args.alpha, beta=args.beta,
                            lookbacks=_floats(args.lookbacks) if args.lookbacks else None,
                            transpose=not args.no_transpose, followers=tuple(args.followers.split(",")),
                            ranking=args.ranking, conform=not args.no_conform, render=args.render,
                            match_colour=not args.no_colour_match, seed=args.seed, timbre=timbre,
                            continuity=not args.no_continuity)
    bar = tqdm(total=100, desc="extend", disable=args.quiet, bar_format="{l_bar}{bar}| {postfix}")

    def progress(fraction: float, message: str) -> None:
        bar.n = int(100 * fraction)
        bar.set_postfix_str(message)

    ext = extend(engine, clip.audio, request, progress=progress,
                 original=(clip.original, clip.source_sample_rate))
    bar.close()
    write_extension(ext, out, subtype=clip.output_subtype)
    _print_extension(ext, out, native_format(ext), clip.output_subtype)
    return 0


def _print_extension(ext: Extension, out: Path, fmt: tuple[int, int], subtype: str) -> None:
    """What ``extend`` says: its notes first (plain words), the candidates, where the files went."""
    from ensemble.metrics import seam_jump_text
    from ensemble.outputs import timbre_text

    for note in ext.notes:  # first, so that e.g. "the database cannot serve this input well" is read
        print(f"Note: {note}")
    print(f"timbre: {timbre_text(ext.timbre, notes=ext.notes)}")
    print(f"{'rank':>4} {'chunk':>6} {'composite':>9} {'relev.':>7} {'coher.':>7} {'lookback':>8} "
          f"{'transp.':>7} fallback  seam (after - before: + = up / louder)")
    for c in ext.candidates:
        print(f"{c.rank:>4} {c.chunk:>6} {c.composite:>9.4f} {c.relevance:>7.4f} {c.coherence:>7.4f} "
              f"{c.lookback:>8.1f} {c.transpose:>7d} {str(c.fallback):<8}  "
              f"{seam_jump_text(c.seam_pitch_jump_cents, c.seam_loudness_jump_db)}")
    rate, channels = fmt
    print(f"wrote {out}: rankNN/mix.wav at {rate} Hz, {channels} channel{'s' if channels != 1 else ''} "
          f"({subtype}: your recording's own rate, 16 kHz at least, and channels); 16 kHz mono analysis "
          "copies in rankNN/mix_16k.wav and rankNN/stems/")
    print(json.dumps({"out": str(out), "k": len(ext.candidates), "notes": list(ext.notes),
                      "output": {"sample_rate": rate, "channels": channels, "subtype": subtype},
                      "timbre": None if ext.timbre is None else ext.timbre.summary(),
                      "timings_s": {k: round(v, 3) for k, v in ext.timings.items()}}))


def register(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser("index", help="build the RAG database")
    isub = index.add_subparsers(dest="what", metavar="ACTION", required=True)
    b = isub.add_parser("build", help="build a RAG database from a corpus folder")
    b.add_argument("--data", default="data/babyband")
    b.add_argument("--out", default="assets/rag")
    b.add_argument("--checkpoints", default="checkpoints", help="folder with the leader's decoder")
    b.add_argument("--leader", help="the leader instrument: its stems are indexed and its decoder embeds "
                                    "them (default: the engine's, Guitar)")
    b.add_argument("--splits", default="train,valid", help="corpus splits to index (default train,valid)")
    b.add_argument("--stems", default="Guitar,Keys",
                   help="melodic lines to index (the Keys stem contributes its top line)")
    b.add_argument("--keep-audio", action="store_true",
                   help="also keep the monophonic lines' audio (for the splice comparison mode)")
    b.add_argument("--lookbacks", default="7,7.5,8,8.5", help="seconds, comma-separated")
    b.add_argument("--chunk-seconds", type=float, default=2.0)
    b.add_argument("--workers", type=int, default=2,
                   help="local Dask worker processes, one track per task (default 2)")
    b.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (--work-dir must be "
                        "shared by its workers)")
    b.add_argument("--serial", action="store_true", help="build in this process, without Dask")
    b.add_argument("--work-dir", help="where finished tracks' shards are kept until the merge; a killed "
                                      "build run again resumes from them (default: .<out>.shards)")
    b.add_argument("--transpositions", default="0",
                   help="index every line at these key shifts too, semitones, e.g. -3,0,3 (a larger "
                        "controls-only corpus; default 0)")
    b.add_argument("--tempos", default="1", help="... and at these tempo factors, e.g. 0.9,1.1 (default 1)")
    b.add_argument("--pca-from", metavar="DATABASE",
                   help="embed with this database's PCA instead of fitting one (what a corpus of millions "
                        "of segments needs: the merge never holds the GRU-width window means)")
    b.add_argument("--ann-codes", default="auto", choices=["auto", "flat", "sq8", "pq"],
                   help="codes of the IVF index built above the threshold (auto: by memory)")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_index_build)

    e = subparsers.add_parser("extend", help="extend a clip with Top-K retrieved continuations")
    e.add_argument("input", help="audio file (WAV, FLAC, OGG, MP3)")
    e.add_argument("--seconds", type=float, default=30.0, help="target length in seconds")
    e.add_argument("--top-k", type=int, default=10)
    e.add_argument("--alpha", type=float)
    e.add_argument("--beta", type=float)
    e.add_argument("--lookbacks", help="subset of the database's lookbacks, e.g. 7,8.5")
    e.add_argument("--no-transpose", action="store_true",
                   help="keep every segment in its stored key (default: shift it into the input's key, "
                        "-6..+6 semitones; octaves follow the input's register)")
    e.add_argument("--ranking", choices=["composite", "random"], default="composite",
                   help="random: K playable segments at random (the naive baseline)")
    e.add_argument("--no-conform", action="store_true",
                   help="play the stored controls as they are: no key shift, octave, stretch or level match "
                        "(a baseline)")
    e.add_argument("--no-colour-match", action="store_true",
                   help="keep the leader decoder's own colour (default: a fixed filter gives the rendered "
                        "continuations the input's long-term spectral envelope)")
    e.add_argument("--no-continuity", action="store_true",
                   help="the composite's Top-K as they are (default: of a pool of 3 x K, the K whose first "
                        "seconds go on playing as your clip's last: notes a second and register)")
    e.add_argument("--timbre", default="auto", metavar="NAME",
                   help="the continuations' instrument sound: auto (default: inferred from your clip), "
                        "guitar (BabyBand's guitar decoder, the previous sound) or a timbre of the installed "
                        "timbre decoder (decoder_Leader.pt in --checkpoints), e.g. violin, flute, "
                        "\"nylon guitar\"; an unknown name is refused with the allowed ones")
    e.add_argument("--render", choices=["controls", "splice"], default="controls",
                   help="splice: the database's own audio, unconformed (needs a --keep-audio database)")
    e.add_argument("--followers", default="bass,drums,keys")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", required=True)
    e.add_argument("--checkpoints", default="checkpoints")
    e.add_argument("--database", default="assets/rag")
    e.add_argument("--drums", default="assets/drums")
    e.add_argument("--weights", metavar="WEIGHTS.json",
                   help="rank with weights fitted to listeners' rankings (`ratings fit`); default: the "
                        "hand-set composite")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_extend)
