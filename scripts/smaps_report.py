"""Where a process's resident memory is, from copies of its ``/proc/<pid>/smaps`` (a diagnosis).

    cat /proc/$(pgrep -f "python app.py")/smaps > a.txt   # ... later, again, > b.txt
    python -m scripts.smaps_report diff a.txt b.txt       # RSS by kind of mapping, then the mappings that grew
    python -m scripts.smaps_report hugepages b.txt        # anonymous memory advised for transparent huge pages

``diff`` groups the mappings (files, ``[heap]``/``[stack]``, anonymous by permissions) and lists the
anonymous mappings whose RSS grew most; ``hugepages`` sums the anonymous mappings whose ``VmFlags``
carry ``hg`` (``madvise(MADV_HUGEPAGE)``, which numpy gives every array of 4 MiB or more unless
``NUMPY_MADVISE_HUGEPAGE=0``) and the huge pages they hold. Used for issue 16's diagnosis
(``benchmarks/results/soak_allocator/smaps_hugepage_diagnosis.txt``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$")


def parse(path: Path) -> list[dict]:
    """The mappings of one smaps copy: start, size (kB), perm, name and every ``Key: N kB`` field."""
    maps: list[dict] = []
    for line in path.read_text().splitlines():
        m = _HEADER.match(line)
        if m:
            maps.append({"start": m.group(1), "size_kb": (int(m.group(2), 16) - int(m.group(1), 16)) // 1024,
                         "perm": m.group(3), "name": m.group(4).strip(), "flags": []})
        elif maps and line.startswith("VmFlags:"):
            maps[-1]["flags"] = line.split()[1:]
        elif maps:
            key, _, value = line.partition(":")
            parts = value.split()
            if parts and parts[0].isdigit():
                maps[-1][key] = int(parts[0])
    return maps


def kind(m: dict) -> str:
    if m["name"]:
        return "file" if m["name"].startswith("/") else m["name"]
    return f"anon {m['perm']}"


def diff(a: list[dict], b: list[dict], top: int = 25) -> str:
    before, after = Counter(), Counter()
    for m in a:
        before[kind(m)] += m.get("Rss", 0)
    for m in b:
        after[kind(m)] += m.get("Rss", 0)
    lines = ["RSS by kind of mapping (MB):"]
    for k in sorted(set(before) | set(after), key=lambda k: -(after[k] - before[k])):
        change = (after[k] - before[k]) / 1024
        lines.append(f"  {k:24s} {before[k] / 1024:8.1f} -> {after[k] / 1024:8.1f}  ({change:+.1f})")
    old = {(m["start"], m["size_kb"]): m.get("Rss", 0) for m in a}
    grown = sorted(((m.get("Rss", 0) - old.get((m["start"], m["size_kb"]), 0), m) for m in b if not m["name"]),
                   key=lambda x: -x[0])
    lines.append("anonymous mappings that grew most (growth kB, size kB, start, new since the first copy, flags):")
    for g, m in grown[:top]:
        lines.append(f"  {g:7d} {m['size_kb']:7d} {m['start']} {(m['start'], m['size_kb']) not in old} "
                     f"{' '.join(m['flags'])}")
    return "\n".join(lines)


def hugepages(maps: list[dict]) -> str:
    anon = [m for m in maps if not m["name"] and m["perm"] == "rw-p"]
    hg = [m for m in anon if "hg" in m["flags"]]

    def mb(ms: list[dict], key: str) -> float:
        return round(sum(m.get(key, 0) for m in ms) / 1024, 1)

    return (f"anonymous rw-p mappings: {len(anon)}, RSS {mb(anon, 'Rss')} MB\n"
            f"of which advised for huge pages (VmFlags hg): {len(hg)}, RSS {mb(hg, 'Rss')} MB, "
            f"AnonHugePages {mb(hg, 'AnonHugePages')} MB\n"
            f"AnonHugePages in every mapping: {mb(maps, 'AnonHugePages')} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("diff", help="RSS by kind of mapping in two copies, and what grew")
    d.add_argument("before", type=Path)
    d.add_argument("after", type=Path)
    h = sub.add_parser("hugepages", help="anonymous memory advised for huge pages in one copy")
    h.add_argument("smaps", type=Path)
    args = parser.parse_args(argv)
    for path in [getattr(args, n) for n in ("before", "after", "smaps") if hasattr(args, n)]:
        if not path.is_file():
            print(f"error: {path} is not a file (a copy of /proc/<pid>/smaps)", file=sys.stderr)
            return 2
    if args.command == "diff":
        print(diff(parse(args.before), parse(args.after)))
    else:
        print(hugepages(parse(args.smaps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
