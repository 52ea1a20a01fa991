"""scripts/smaps_report.py on known mappings (issue 16's diagnosis tool)."""

from scripts.smaps_report import diff, hugepages, main, parse


def _mapping(start: int, size_kb: int, rss_kb: int, huge_kb: int = 0, name: str = "", advised: bool = False) -> str:
    flags = "rd wr mr mw me ac" + (" hg" if advised else "")
    return (f"{start:x}-{start + size_kb * 1024:x} rw-p 00000000 00:00 0 {name}\n"
            f"Size: {size_kb} kB\nRss: {rss_kb} kB\nAnonHugePages: {huge_kb} kB\nVmFlags: {flags}\n")


def test_diff_and_hugepages_sum_known_mappings(tmp_path, capsys):
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    a.write_text(_mapping(0x7F0000000000, 8192, 1024) + _mapping(0x7F1000000000, 4096, 4096, name="/usr/lib/x.so"))
    b.write_text(_mapping(0x7F0000000000, 8192, 3072) + _mapping(0x7F1000000000, 4096, 4096, name="/usr/lib/x.so")
                 + _mapping(0x7F2000001000, 6144, 6144, huge_kb=4096, advised=True))
    report = diff(parse(a), parse(b))
    lines = report.splitlines()
    rows = {" ".join(x.split()[:-4]): x.split()[-4:] for x in lines[1:3]}
    assert rows == {"anon rw-p": ["1.0", "->", "9.0", "(+8.0)"], "file": ["4.0", "->", "4.0", "(+0.0)"]}  # 1 -> 3+6
    top = lines[lines.index(next(x for x in lines if x.startswith("anonymous mappings"))) + 1].split()
    assert top[:4] == ["6144", "6144", "7f2000001000", "True"] and top[-1] == "hg"  # the new, advised one first
    assert hugepages(parse(b)).splitlines() == [
        "anonymous rw-p mappings: 2, RSS 9.0 MB",
        "of which advised for huge pages (VmFlags hg): 1, RSS 6.0 MB, AnonHugePages 4.0 MB",
        "AnonHugePages in every mapping: 4.0 MB"]
    assert main(["hugepages", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt is not a file" in capsys.readouterr().err
