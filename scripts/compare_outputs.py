"""Compare two output folders of ``extend`` / ``report`` runs: the check that a refactor changed nothing.

Every file must exist in both; WAV, PNG, CSV and other files must be byte-identical; JSON files must
be equal once timing fields (keys containing ``timing``, ``elapsed`` or ``built_utc``) are dropped.
Prints one line per difference and a summary; exits 1 when anything differs.

    python -m ensemble extend CLIP --seed 3 --out before/a ...   # on the old commit
    python -m ensemble extend CLIP --seed 3 --out after/a ...    # on the new one
    python -m scripts.compare_outputs before after
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

IGNORED_KEYS = ("timing", "elapsed", "built_utc")


def _strip(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not any(t in k for t in IGNORED_KEYS)}
    if isinstance(obj, list):
        return [_strip(x) for x in obj]
    return obj


def compare(a: Path, b: Path) -> list[str]:
    """The differences between folders ``a`` and ``b`` (empty when they match)."""
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.suffix != ".log"}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.suffix != ".log"}
    diffs = [f"only in {a if rel in files_a else b}: {rel}" for rel in sorted(files_a ^ files_b)]
    for rel in sorted(files_a & files_b):
        x, y = (a / rel).read_bytes(), (b / rel).read_bytes()
        if rel.suffix == ".json":
            if _strip(json.loads(x)) != _strip(json.loads(y)):
                diffs.append(f"JSON differs: {rel}")
        elif x != y:
            diffs.append(f"bytes differ: {rel}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.compare_outputs", description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    for folder in (args.before, args.after):
        if not folder.is_dir():
            print(f"error: {str(folder)!r} is not a folder", file=sys.stderr)
            return 2
    diffs = compare(args.before, args.after)
    for line in diffs:
        print(line)
    n = sum(1 for p in args.before.rglob("*") if p.is_file() and p.suffix != ".log")
    print(f"{n} files compared, {len(diffs)} differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
