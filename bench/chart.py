#!/usr/bin/env python3
"""Draws the ratios recorded in BENCHMARKS.md as a horizontal bar chart (SVG).

Every markdown table row of BENCHMARKS.md whose header has a `ratio` column becomes a
bar: `workload vs peer`, length = ratio on a log scale, with a line at 1x (parity).
A header column named `vs asyncio` adds a second bar for that row.
Usage: python3 bench/chart.py [BENCHMARKS.md] [docs/ratios.svg]
"""
import html
import math
import re
import sys


def rows(md):
    header = None
    last_workload = ""
    for line in md.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set(line) <= set("|-: "):
            continue
        rec = dict(zip(header, cells))
        workload = re.sub(r"\s*\(N=\d+\)", "", rec.get("workload") or last_workload)
        last_workload = workload
        # A server table names its contender in the second column ("kv_server (2 shards)").
        who = header[1].replace(" req/s", "") if len(header) > 1 else ""
        if who and who not in ("peer", "shardloop"):
            workload = f"{who}: {workload}"
        for col, peer in (("ratio", rec.get("peer", "")), ("vs asyncio", "python asyncio")):
            m = re.match(r"([0-9.]+)x", rec.get(col, ""))
            if m:
                label = f"{workload} vs {peer}".strip()
                if len(label) > 90:
                    label = label[:87] + "..."
                yield label, float(m.group(1))


def svg(bars):
    width, left, bar_h, gap = 1180, 560, 16, 6
    height = 40 + len(bars) * (bar_h + gap)
    left = max(left, 12 + 6 * max(len(label) for label, _ in bars))
    lo, hi = math.log10(0.25), math.log10(1.6 * max([64.0] + [r for _, r in bars]))
    scale = (width - left - 20) / (hi - lo)
    x = lambda r: left + (math.log10(max(r, 0.25)) - lo) * scale
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'font-family="sans-serif" font-size="11">',
           '<text x="8" y="14" font-weight="bold">shardloop against each peer, log scale: '
           'right of the red line (1x) = shardloop faster or smaller</text>']
    for i, (label, r) in enumerate(bars):
        y = 28 + i * (bar_h + gap)
        colour = "#2a7" if r >= 1 else "#d64"
        out.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{html.escape(label)}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{max(x(r) - left, 1):.1f}" height="{bar_h}" fill="{colour}"/>')
        out.append(f'<text x="{x(r) + 4:.1f}" y="{y + 12}">{r:g}x</text>')
    one = x(1.0)
    out.append(f'<line x1="{one:.1f}" y1="20" x2="{one:.1f}" y2="{height}" stroke="red"/>')
    out.append("</svg>")
    return "\n".join(out)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "BENCHMARKS.md"
    dst = sys.argv[2] if len(sys.argv) > 2 else "docs/ratios.svg"
    bars = list(rows(open(src).read()))
    if not bars:
        sys.exit(f"no ratio rows found in {src}")
    with open(dst, "w") as f:
        f.write(svg(bars))
    print(f"{dst}: {len(bars)} bars")


if __name__ == "__main__":
    main()
