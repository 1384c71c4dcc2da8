"""Print the per-guard table of an ``onepixel guard evaluate --out`` JSON as markdown.

.venv/bin/python scripts/guard_table_md.py /work/runs/guard2/guard_table.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KINDS = ("plain k=1", "plain k=3", "adaptive k=1", "exhaustive k=1")


def fmt(v: float | None, digits: int = 3) -> str:
    """Return a number for the table, '-' for None."""
    return "-" if v is None else f"{v:.{digits}f}"


def main() -> None:
    """Print the table."""
    doc = json.loads(Path(sys.argv[1]).read_text())
    bare = doc["balanced_accuracy_bare"]
    head = [
        "guard",
        "clean FPR in domain",
        "clean FPR out of domain (worst LOSO)",
        "balanced accuracy (bare " + fmt(bare, 4) + ")",
    ]
    head += [f"flips through: {k}" for k in KINDS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    be = doc.get("bare_exhaustive", {})
    for name, row in doc["guards"].items():
        ood = row["clean_fpr_out_of_domain"]
        cells = [
            name,
            fmt(row["clean_fpr_in_domain"]),
            fmt(ood["worst"]) if ood else "-",
            fmt(row["balanced_accuracy"], 4),
        ]
        for k in KINDS:
            t = row["through"].get(k)
            if t is None:
                cells.append("-")
            elif k.startswith("exhaustive"):
                cap = f", VAE scored <= 256 flipping candidates on {t['capped']}" if t.get("capped") else ""
                cells.append(f"{t['flips']} / {t['on_true_side']}{cap}")
            else:
                cells.append(f"{t['flips']} / {t['attacks']}")
        print("| " + " | ".join(cells) + " |")
    cells = ["no guard", "-", "-", fmt(bare, 4)]
    for k in KINDS:
        t = doc.get("bare", {}).get(k)
        if k.startswith("exhaustive"):
            cells.append(f"{be.get('flips')} / {be.get('attacks')}")
        elif k.startswith("adaptive"):
            cells.append("-")
        else:
            cells.append("-" if t is None else f"{t['flips']} / {t['attacks']}")
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
