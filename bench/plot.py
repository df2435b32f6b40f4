#!/usr/bin/python3
"""Plot bench results (docs/performance.json) to a PNG: CPU per SUBSCRIBE and
shm per stored subscription against the number of AoRs, per variant. Run
with Debian's python3 and python3-matplotlib (make bench installs it)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

res = json.load(open(sys.argv[1]))
rows = [r for r in res.get("w1", []) + res.get("w5", [])]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
for v, style in (("c", "o-"), ("rust", "s-"), ("floor", "^--")):
    pts = sorted({r["n"]: r for r in rows if r["variant"] == v}.values(), key=lambda r: r["n"])
    if not pts:
        continue
    label = {"c": "C sca.so", "rust": "sca_rs.so", "floor": "floor (no SCA state)"}[v]
    ax1.plot([r["n"] for r in pts], [r["cpu_us_per_op"] for r in pts], style, label=label)
    if v != "floor":
        ax2.plot([r["n"] for r in pts], [r["shm_per_sub"] for r in pts], style, label=label)
for ax, title, unit in ((ax1, "CPU per SUBSCRIBE + NOTIFY", "µs"), (ax2, "shm per stored subscription", "bytes")):
    ax.set_xscale("log")
    ax.set_xlabel("distinct AoRs subscribed (N)")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
ax2.axhline(200, color="grey", linestyle=":", linewidth=1)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
