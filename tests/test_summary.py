"""Summary numbers on a synthetic store with known values, and `summary --json` on a real run."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.attack.de import paper_de_config
from onepixel.attack.figures import make_figures, original_image
from onepixel.attack.store import CampaignStore
from onepixel.attack.summary import summarize, summarize_run
from onepixel.cli.main import app
from onepixel.data.patches import PatchSet, read_png
from onepixel.targets import open_target
from test_store import make_record

TARGET = os.environ.get("ONEPIXEL_TEST_TARGET", "bundled")

# (score_before, score_after, generations, early_converged) of a lower-direction campaign.
ROWS = [
    (0.99, 0.01, 10, False),
    (0.95, 0.03, 20, False),
    (0.93, 0.20, 30, False),
    (0.91, 0.40, 40, False),
    (0.97, 0.60, 50, False),
    (0.96, 0.04, 60, False),
    (0.92, 0.90, 70, False),
    (0.94, 0.93, 1, True),
    (0.98, 0.30, 1, True),  # crossed 0.5 but converged early: a failure
    (0.90, 0.89, 1, True),
]


def synthetic(direction: str = "lower") -> list:
    """Return records built from ROWS, with success flags derived as the campaign derives them."""
    records = []
    for i, (before, after, gens, early) in enumerate(ROWS):
        if direction == "raise":
            before, after = 1 - before, 1 - after
        crossed = after < 0.5 if direction == "lower" else after > 0.5
        strong = after < 0.05 if direction == "lower" else after > 0.95
        records.append(
            make_record(
                f"img{i}",
                after,
                [i, i, 255, 255, 0],
                direction=direction,
                score_before=before,
                generations=gens,
                early_converged=early,
                success=crossed and not early,
                strong_success=strong and not early,
            )
        )
    return records


def test_counts_and_shares_follow_the_paper() -> None:
    s = summarize(synthetic())
    assert (s["attacked"], s["early_converged"], s["non_early"]) == (10, 3, 7)
    assert s["success"] == {"threshold": 0.5, "count": 5, "share": 5 / 7}
    assert s["strong_success"] == {"threshold": 0.05, "count": 3, "share": 3 / 7}
    assert s["mean_generations_non_early"] == pytest.approx(40.0)
    assert s["early_converged_share"] == pytest.approx(0.3)
    # |before - after| of the non-early: .98 .92 .73 .51 .37 .92 .02 -> median .73
    assert s["median_score_change_non_early"] == pytest.approx(0.73)
    r = summarize(synthetic("raise"))
    assert (r["success"]["count"], r["strong_success"]["count"]) == (5, 3)
    assert r["strong_success"]["threshold"] == 0.95


def test_statistics_are_over_non_early_attacks() -> None:
    s = summarize(synthetic())
    after = [row[1] for row in ROWS if not row[3]]
    before = [row[0] for row in ROWS if not row[3]]
    assert s["stats_over"] == "non-early attacks"
    for key, values in (("after", after), ("before", before)):
        stats = s[key]
        assert stats["max"] == max(values) and stats["min"] == min(values)
        assert stats["mean"] == pytest.approx(statistics.fmean(values))
        assert stats["median"] == pytest.approx(statistics.median(values))
        assert stats["sd"] == pytest.approx(statistics.stdev(values))  # sample sd
        q = statistics.quantiles(values, n=100, method="inclusive")  # linear interpolation
        assert [stats["p99"], stats["p95"], stats["p20"], stats["p10"]] == pytest.approx(
            [q[98], q[94], q[19], q[9]]
        )
    assert s["after"]["median"] == pytest.approx(0.20) and s["after"]["max"] == pytest.approx(0.90)
    assert s["all_after"]["max"] == pytest.approx(0.93)  # the early ones only count in all_*


def test_flip_numbers_need_the_true_side_before_and_read_older_rows() -> None:
    records = synthetic()
    # Older rows: no flip, queries or CPU fields; flips come from the scores (all 10 start >= 0.9).
    s = summarize(records)
    assert s["flips"] == 6 and s["wrong_before"] == 0  # every after < 0.5, early ones included
    assert s["queries_to_flip_median"] is None and s["cpu_seconds"] is None and s["methods"] == ["de"]
    assert s["queries_total"] == 10 * 80  # evaluations stand in for queries
    # A record already across 0.5 before is never a flip, whatever its score after.
    wrong = make_record("wrong", 0.1, [1, 1, 0, 0, 0], score_before=0.3)
    new = [
        make_record(f"n{i}", after, [i, i, 0, 0, 0], flip=after < 0.5, queries_to_flip=q, queries=100,
                    cpu_seconds=2.0, method="sparse-rs")
        for i, (after, q) in enumerate([(0.2, 10), (0.4, 30), (0.7, None)])
    ]  # fmt: skip
    t = summarize([wrong, *new])
    assert (t["flips"], t["wrong_before"], t["queries_to_flip_median"]) == (2, 1, 20.0)
    assert t["cpu_seconds"] == 6.0 and t["cpu_seconds_per_flip"] == 3.0 and t["queries_total"] == 380
    assert t["methods"] == ["de", "sparse-rs"]


def test_empty_and_mixed_inputs() -> None:
    empty = summarize([], "raise")
    assert empty["attacked"] == 0 and empty["success"]["share"] is None and empty["after"]["max"] is None
    with pytest.raises(ValueError, match="mix directions"):
        summarize(synthetic("lower") + synthetic("raise"))


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory, test_split: PatchSet) -> Path:
    """Return a run folder with a tiny real campaign (3 images, 20 members, <= 4 generations)."""
    run_dir = tmp_path_factory.mktemp("run")
    config = CampaignConfig(
        direction="lower", target=TARGET, filter=False, limit=3, de=paper_de_config(popsize=20, maxiter=4)
    )
    run_campaign(open_target(TARGET), test_split, config, run_dir, progress=False)
    return run_dir


def test_summary_json_on_a_real_run(real_run: Path) -> None:
    out = CliRunner().invoke(app, ["summary", str(real_run), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    with CampaignStore.open(real_run, create=False) as store:
        records = store.records()
    assert data["attacked"] == data["selected"] == 3 and data["complete"]
    assert data["positive"] == "Atypical" and data["negative"] == "Normal" and data["direction"] == "lower"
    assert data["success"]["count"] == sum(r.success for r in records)
    assert data["early_converged"] == sum(r.early_converged for r in records)
    assert data == summarize_run(real_run)
    flips = [r for r in records if r.score_before >= 0.5 and r.score_after < 0.5]
    assert data["flips"] == len(flips) and data["method"] == "de" and data["budget"] is None
    assert (
        data["cpu_seconds"] == pytest.approx(sum(r.cpu_seconds for r in records)) and data["cpu_seconds"] > 0
    )
    medians = [r.queries_to_flip for r in flips]
    assert data["queries_to_flip_median"] == (float(np.median(medians)) if flips else None)
    table = CliRunner().invoke(app, ["summary", str(real_run)])
    assert (
        table.exit_code == 0 and "Atypical → Normal" in table.stdout and "standard deviation" in table.stdout
    )
    missing = CliRunner().invoke(app, ["summary", str(real_run / "nope")])
    assert missing.exit_code == 2 and "holds no campaign" in " ".join(missing.output.split())


def test_figures_and_rebuilt_originals(real_run: Path, test_split: PatchSet) -> None:
    paths = make_figures(real_run)
    names = {p.name for p in paths}
    assert {"scores_boxplot.png", "convergence.png", "colours.png"} <= names
    assert any(n.startswith("pair_") for n in names)
    for path in paths:  # decodable, real-sized figures
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 200
    with CampaignStore.open(real_run, create=False) as store:
        pngs = store.png_paths()
        by_name = {n: i for i, n in enumerate(test_split.names)}
        for record in store.records():
            clean = original_image(read_png(pngs[record.image_id]), record)
            np.testing.assert_array_equal(clean, test_split.images[by_name[record.image_id]])


def test_figures_and_export_commands(real_run: Path) -> None:
    with CampaignStore.open(real_run, create=False) as store:
        first = store.records()[0].image_id
    (real_run / "attacks.csv").unlink()
    out = CliRunner().invoke(app, ["export", str(real_run)])
    assert out.exit_code == 0 and len((real_run / "attacks.csv").read_text().splitlines()) == 4
    fig = CliRunner().invoke(app, ["figures", str(real_run), "--id", first])
    assert fig.exit_code == 0 and (real_run / "figures" / f"pair_{first}.png").is_file()
    bad = CliRunner().invoke(app, ["figures", str(real_run), "--id", "not-an-image"])
    assert bad.exit_code == 2 and "not-an-image" in bad.output


@pytest.mark.parametrize("method", ["de", "sparse-rs", "exhaustive"])
def test_the_console_shows_de_convergence_rows_only_for_de(method: str) -> None:
    """Early convergence and generations are DE's notions; a Sparse-RS or exhaustive run's
    summary table leaves them out (they would read "early-converged 0, mean generations 1")."""
    from io import StringIO

    from rich.console import Console

    from onepixel.attack.summary import render_summary

    records = [r.__class__(**{**r.__dict__, "method": method}) for r in synthetic()]
    summary = summarize(records)
    summary["methods"] = [method]
    out = StringIO()
    for table in render_summary(summary):
        Console(file=out, width=200).print(table)
    text = out.getvalue()
    on_de = method == "de"
    assert ("early-converged" in text) == on_de and ("mean generations" in text) == on_de
    assert "flips (right before, wrong after)" in text
