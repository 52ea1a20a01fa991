"""Compare two RAG database folders array by array (e.g. a Dask build against a single-process build).

    python -m scripts.compare_databases A B [--json-out FILE]

Every array of ``chunks.npz`` and ``tracks.npz`` is compared bit for bit (NaN equal to NaN), and the
manifests' fields that describe the content (chunks, lines, minutes, config, PCA, splits). Prints a
table, then one JSON line; exit status 0 when everything is equal, 1 when something differs, 2 when
a folder is not a database.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ARRAY_FILES = ("chunks.npz", "tracks.npz")
CONTENT_KEYS = ("n_chunks", "n_tracks", "minutes", "config", "splits", "stems", "variants", "features")


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for name in ARRAY_FILES:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"database folder {str(folder)!r} has no {name}")
        with np.load(path) as z:
            out.update({f"{name}:{key}": z[key] for key in z.files})
    return out


def compare(a: Path, b: Path) -> dict:
    """{"equal": bool, "arrays": {name: {"equal", "shape", "dtype"}}, "manifest": {key: equal}}."""
    xa, xb = _arrays(a), _arrays(b)
    arrays = {}
    for name in sorted(set(xa) | set(xb)):
        if name not in xa or name not in xb:
            arrays[name] = {"equal": False, "missing_in": str(b if name in xa else a)}
            continue
        u, v = xa[name], xb[name]
        same = u.shape == v.shape and u.dtype == v.dtype and bool(
            np.array_equal(u, v, equal_nan=u.dtype.kind in "fc"))
        arrays[name] = {"equal": same, "shape": list(u.shape), "dtype": str(u.dtype)}
    ma, mb = (json.loads((f / "manifest.json").read_text()) for f in (a, b))
    manifest = {k: ma.get(k) == mb.get(k) for k in CONTENT_KEYS if k in ma or k in mb}
    return {"a": str(a), "b": str(b), "equal": all(r["equal"] for r in arrays.values()) and all(manifest.values()),
            "arrays": arrays, "manifest": manifest,
            "build_a": ma.get("build", {}).get("engine", "single process"),
            "build_b": mb.get("build", {}).get("engine", "single process")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        result = compare(args.a, args.b)
    except (FileNotFoundError, json.JSONDecodeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, r in result["arrays"].items():
        print(f"{name:<32} {str(r.get('shape', '-')):<20} {r.get('dtype', '-'):<8} "
              f"{'equal' if r['equal'] else 'DIFFERS'}")
    for key, same in result["manifest"].items():
        print(f"manifest {key:<23} {'equal' if same else 'DIFFERS'}")
    print(f"{'EQUAL' if result['equal'] else 'DIFFERENT'}: {result['a']} ({result['build_a']}) vs "
          f"{result['b']} ({result['build_b']})")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json_out.with_suffix(args.json_out.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(args.json_out)
    print(json.dumps({k: result[k] for k in ("a", "b", "equal", "build_a", "build_b")}))
    return 0 if result["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
