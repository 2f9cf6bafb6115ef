#!/usr/bin/env python3
"""Summary of a tests/bench/compare.sh run: compare_summary.py RAW_TSV OUT_MD [ENV_TXT]

Writes OUT_MD (and prints it): one table per phase and system (medians of
the runs/repetitions, min-max in brackets), the machine's limits, the ratios
shoal/Syncthing and shoal/rsync per phase, the performance targets with a
verdict, and the failed/skipped phases and log anomalies.
"""
import re
import statistics
import sys

PHASES = [
    ("idle-after-start", "idle after start (RSS now, not peak)"),
    ("small-scanA", "small: A indexes the tree"),
    ("small-sync", "small: share -> B complete"),
    ("small-rescan-unchanged", "small: rescan, nothing changed"),
    ("latency-4k", "4 KiB edit -> on B (latency)"),
    ("large-scanA", "large: A indexes the file"),
    ("large-sync", "large: share -> B complete"),
    ("delta-modify", "modify: 1 MiB in place -> B"),
    ("delta-modify-scanA", "...of which A's explicit rescan"),
    ("delta-insert", "insert: 100 B at 0 -> B"),
    ("delta-insert-scanA", "...of which A's explicit rescan"),
]
SYSTEMS = ["shoal", "syncthing", "rsync"]
RATIO_PHASES = ["small-scanA", "small-sync", "small-rescan-unchanged", "latency-4k",
                "large-scanA", "large-sync", "delta-modify", "delta-insert"]
SMALL_PHASES = ["small-scanA", "small-sync", "small-rescan-unchanged", "latency-4k"]


def num(x):
    try:
        v = float(str(x).split("(")[0])
    except ValueError:
        return None
    return v


def load(path):
    lines = [l.rstrip("\n").split("\t") for l in open(path)]
    hdr = lines[0]
    rows = [dict(zip(hdr, l)) for l in lines[1:] if l and l[0]]
    for r in rows:
        r["base"] = re.sub(r"#\d+$", "", r["phase"])
    return rows


def vals(rs, col):
    return [v for v in (num(r.get(col)) for r in rs) if v is not None]


def med(rs, col):
    v = vals(rs, col)
    return statistics.median(v) if v else None


def fmt_wall(v):
    if v is None:
        return "–"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}"


def cell(rs, col, kind):
    v = vals(rs, col)
    if not v:
        return "–"
    f = {"wall": fmt_wall, "mbps": lambda x: f"{x:.1f}", "bytes": lambda x: f"{x:,.0f}",
         "cpu": lambda x: f"{x:.2f}", "rss": lambda x: f"{x:.1f}"}[kind]
    m = statistics.median(v)
    if len(v) == 1 or min(v) == max(v):
        return f(m)
    return f"{f(m)} ({f(min(v))}–{f(max(v))})"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}"


def main():
    raw, outp = sys.argv[1], sys.argv[2]
    env = open(sys.argv[3]).read().strip() if len(sys.argv) > 3 else ""
    rows = load(raw)
    ok = [r for r in rows if r.get("status") == "ok"]
    grp = {}
    for r in ok:
        grp.setdefault((r["system"], r["base"]), []).append(r)
    bad = [r for r in rows if r.get("status") not in ("ok",)]
    runs = sorted({r["run"] for r in rows})
    out = []
    w = out.append

    w("# shoal vs Syncthing vs rsync (tests/bench/compare.sh)\n")
    if env:
        w("```\n" + env + "\n```\n")
    w(f"Runs: {len(runs)}. Cells: median over runs and repetitions (min–max). "
      "wire = bytes B's own counter says it received; tcp = TCP payload bytes into B's "
      "sync socket; CPU = user+system seconds of the process in the phase; RSS = peak "
      "(VmHWM, reset at the phase start). A = sender, B = receiver "
      "(rsync: client / daemon).\n")

    w("| phase | system | n | wall s | MB/s | wire bytes | tcp bytes | CPU A s | CPU B s | RSS A MiB | RSS B MiB |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for ph, label in PHASES:
        for s in SYSTEMS:
            rs = grp.get((s, ph), [])
            nfail = sum(1 for r in bad if r["system"] == s and r["base"] == ph and r["status"] == "FAIL")
            nskip = sum(1 for r in bad if r["system"] == s and r["base"] == ph and r["status"] == "SKIP")
            if not rs and not nfail and not nskip:
                continue
            n = (f"{len(rs)}" + (f" (+{nfail} failed)" if nfail else "")
                 + (f" (+{nskip} skipped)" if nskip else ""))
            if not rs:
                w(f"| {ph} | {s} | {n} | {'FAILED' if nfail else 'SKIPPED'} | – | – | – | – | – | – | – |")
                continue
            wall = "–" if ph == "idle-after-start" else cell(rs, "wall_s", "wall")
            w(f"| {ph} | {s} | {n} | {wall} | {cell(rs, 'MBps', 'mbps')} | "
              f"{cell(rs, 'wire_in_bytes', 'bytes')} | {cell(rs, 'tcp_in_bytes', 'bytes')} | "
              f"{cell(rs, 'cpu_A_s', 'cpu')} | {cell(rs, 'cpu_B_s', 'cpu')} | "
              f"{cell(rs, 'rss_A_MiB', 'rss')} | {cell(rs, 'rss_B_MiB', 'rss')} |")
    w("")

    lim = sorted({r["base"] for r in ok if r["system"] == "machine"})
    if lim:
        w("## The machine's limits (measured in the same run)\n")
        w("| limit | MB/s | seconds | what |")
        w("|---|---|---|---|")
        for ph in lim:
            rs = grp[("machine", ph)]
            w(f"| {ph} | {cell(rs, 'MBps', 'mbps')} | {cell(rs, 'wall_s', 'wall')} | {rs[0]['note']} |")
        w("")

    def m(s, ph, col):
        return med(grp.get((s, ph), []), col)

    def cpu(s, ph):
        a, b = m(s, ph, "cpu_A_s"), m(s, ph, "cpu_B_s")
        if a is None and b is None:
            return None
        return (a or 0) + (b or 0)

    w("## Ratios (shoal / other; below 1 means shoal is faster, smaller or cheaper)\n")
    w("| phase | wall shoal/Syncthing | wall shoal/rsync | wire shoal/Syncthing | wire shoal/rsync | CPU A+B shoal/Syncthing | CPU A+B shoal/rsync |")
    w("|---|---|---|---|---|---|---|")
    for ph in RATIO_PHASES:
        if not any((s, ph) in grp for s in SYSTEMS):
            continue
        w(f"| {ph} | {ratio(m('shoal', ph, 'wall_s'), m('syncthing', ph, 'wall_s'))} | "
          f"{ratio(m('shoal', ph, 'wall_s'), m('rsync', ph, 'wall_s'))} | "
          f"{ratio(m('shoal', ph, 'wire_in_bytes'), m('syncthing', ph, 'wire_in_bytes'))} | "
          f"{ratio(m('shoal', ph, 'wire_in_bytes'), m('rsync', ph, 'wire_in_bytes'))} | "
          f"{ratio(cpu('shoal', ph), cpu('syncthing', ph))} | {ratio(cpu('shoal', ph), cpu('rsync', ph))} |")
    w("")

    # targets
    def verdict(ok_):
        return "–" if ok_ is None else ("met" if ok_ else "MISSED")

    def lt(a, b):
        return None if a is None or b is None else a < b

    def le(a, b):
        return None if a is None or b is None else a <= b

    def f3(x, unit="s"):
        return "–" if x is None else (f"{x:.3f} {unit}" if unit == "s" else f"{x:,.0f} {unit}")

    sh_small, st_small, rs_small = m("shoal", "small-sync", "wall_s"), m("syncthing", "small-sync", "wall_s"), m("rsync", "small-sync", "wall_s")
    sh_large, st_large = m("shoal", "large-sync", "wall_s"), m("syncthing", "large-sync", "wall_s")
    rss_small = [v for ph in SMALL_PHASES for r in grp.get(("shoal", ph), [])
                 for v in (num(r["rss_A_MiB"]), num(r["rss_B_MiB"])) if v is not None]
    rss_max = max(rss_small) if rss_small else None
    T = [
        ("small sync ≤ 1/4 of Syncthing's time", f"{f3(sh_small)} vs {f3(st_small)} (ratio {ratio(sh_small, st_small)})",
         le(sh_small, None if st_small is None else st_small / 4)),
        ("small sync faster than rsync", f"{f3(sh_small)} vs {f3(rs_small)}", lt(sh_small, rs_small)),
        ("large sync ≤ 2/3 of Syncthing's time", f"{f3(sh_large)} vs {f3(st_large)} (ratio {ratio(sh_large, st_large)})",
         le(sh_large, None if st_large is None else st_large * 2 / 3)),
        ("large sync CPU (A+B) ≤ Syncthing's", f"{f3(cpu('shoal', 'large-sync'))} vs {f3(cpu('syncthing', 'large-sync'))}",
         le(cpu("shoal", "large-sync"), cpu("syncthing", "large-sync"))),
        ("modify < 1.5 s", f3(m("shoal", "delta-modify", "wall_s")), lt(m("shoal", "delta-modify", "wall_s"), 1.5)),
        ("modify < 1.6 MB on the wire", f3(m("shoal", "delta-modify", "wire_in_bytes"), "B"),
         lt(m("shoal", "delta-modify", "wire_in_bytes"), 1.6e6)),
        ("insert < 2 s", f3(m("shoal", "delta-insert", "wall_s")), lt(m("shoal", "delta-insert", "wall_s"), 2.0)),
        ("insert < 1 MiB on the wire", f3(m("shoal", "delta-insert", "wire_in_bytes"), "B"),
         lt(m("shoal", "delta-insert", "wire_in_bytes"), 1 << 20)),
        ("4 KiB edit latency median < 150 ms", f3(m("shoal", "latency-4k", "wall_s")),
         lt(m("shoal", "latency-4k", "wall_s"), 0.150)),
        ("no-change rescan of the small tree < 0.1 s", f3(m("shoal", "small-rescan-unchanged", "wall_s")),
         lt(m("shoal", "small-rescan-unchanged", "wall_s"), 0.1)),
        ("peak RSS < 32 MiB per agent on the small tree", "–" if rss_max is None else f"{rss_max:.1f} MiB (max of A and B over the small phases)",
         lt(rss_max, 32)),
    ]
    w("## shoal against the targets\n")
    if "SMALL_FILES=10000" not in env or "LARGE_SIZE=1GiB" not in env:
        w("Note: the targets are for the full-size datasets (10,000 files, 1 GiB); this run used other sizes.\n")
    w("| target | shoal (median) | verdict |")
    w("|---|---|---|")
    for name, got, v in T:
        w(f"| {name} | {got} | {verdict(v)} |")
    w("")

    notes = [r for r in rows if r.get("status") != "ok" or "ANOMALY" in r.get("note", "")]
    if notes:
        w("## Failed or skipped phases, anomalies\n")
        for r in notes:
            w(f"- run {r['run']} {r['system']} {r['phase']} [{r['status']}]: {r['note']}")
        w("")
    text = "\n".join(out) + "\n"
    open(outp, "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
