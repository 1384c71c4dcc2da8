"""What power-loss safety costs per committed attack in the campaign store.

Commits the same records (real adversarial-sized PNGs) into fresh run folders under two
settings, interleaved round by round so that load from other processes hits both alike:

- ``before``: ``synchronous=NORMAL``, no fsync of the folder after the PNG's rename (the old store);
- ``durable``: ``synchronous=FULL`` and the folder fsynced after every rename (the store now).

    python benchmarks/store_durability.py [--attacks 200] [--rounds 5] [--dir /tmp]
        [--out PATH]

Prints ms per attack (median over rounds) and writes every round as JSON with provenance
(:mod:`provenance`) to a new name under benchmarks/results/ (``store_durability.json``,
``store_durability_2.json``...); an existing ``--out`` is refused. ``--dir`` chooses the file
system measured (fsync costs depend on it).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import finish, new_result_path, provenance  # noqa: E402

from onepixel.attack import store as store_module  # noqa: E402
from onepixel.attack.records import AttackRecord  # noqa: E402
from onepixel.attack.store import CampaignStore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def make_records(n: int, seed: int = 0) -> list[tuple[AttackRecord, np.ndarray]]:
    """Return ``n`` (record, noisy 64x64 image) pairs shaped like a campaign's."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        record = AttackRecord(
            image_id=f"img{i:05d}",
            label="Atypical",
            direction="lower",
            objective="plain",
            pixels=1,
            seed=i,
            settings={"popsize": 200, "maxiter": 100},
            score_before=0.95,
            score_after=0.9,
            vector=[32, 32, 255, 255, 0],
            generations=2,
            evaluations=400,
            early_converged=True,
            success=False,
            strong_success=False,
            wall_time_s=0.3,
            history=[0.95, 0.93, 0.9],
        )
        out.append((record, image))
    return out


@contextmanager
def old_store() -> Iterator[None]:
    """Run the store without the folder fsync (as before the durability change)."""
    saved = store_module.fsync_dir
    store_module.fsync_dir = lambda path: None
    try:
        yield
    finally:
        store_module.fsync_dir = saved


def commit_all(root: Path, records: list[tuple[AttackRecord, np.ndarray]], synchronous: str) -> float:
    """Return seconds to open a fresh store under ``root`` and commit every record."""
    run = Path(tempfile.mkdtemp(dir=root))
    start = time.perf_counter()
    with CampaignStore.open(run / "run", synchronous=synchronous) as store:
        for position, (record, image) in enumerate(records):
            store.add(record, image, position)
    return time.perf_counter() - start


def main() -> None:
    """Measure both settings and print / write ms per attack."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attacks", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--out", type=Path, default=None, help="result path (default: a new name in benchmarks/results/)"
    )
    args = parser.parse_args()
    if args.out is not None and args.out.exists():
        parser.error(f"--out {args.out} exists: results are never overwritten, name a new file")
    prov = provenance()
    records = make_records(args.attacks)
    rounds: dict[str, list[float]] = {"before": [], "durable": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for _ in range(args.rounds):
            with old_store():
                rounds["before"].append(commit_all(Path(tmp), records, "NORMAL") / args.attacks * 1e3)
            rounds["durable"].append(commit_all(Path(tmp), records, "FULL") / args.attacks * 1e3)
    median = {k: statistics.median(v) for k, v in rounds.items()}
    for name, ms in median.items():
        print(f"{name:8s} {ms:7.2f} ms per attack (rounds: {', '.join(f'{x:.2f}' for x in rounds[name])})")
    print(
        f"durable / before: {median['durable'] / median['before']:.2f}x, "
        f"+{median['durable'] - median['before']:.2f} ms per attack"
    )
    doc = {
        "command": " ".join(["python", "benchmarks/store_durability.py", *sys.argv[1:]]),
        "provenance": finish(prov),
        "machine": platform.platform(),
        "dir": str(args.dir),
        "attacks": args.attacks,
        "ms_per_attack_median": median,
        "ms_per_attack_rounds": rounds,
    }
    path = args.out or new_result_path("store_durability")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
