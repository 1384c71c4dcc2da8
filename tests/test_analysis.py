"""Chromatic, spatial and periodicity analysis on records with known answers, loading, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binomtest
from typer.testing import CliRunner

from onepixel.analysis.analyze import analyze
from onepixel.analysis.chromatic import partial_success, score_change
from onepixel.analysis.loading import AttackTable, RunLoadError, fill_colour_errors, load_runs
from onepixel.analysis.periodicity import parity_counts
from onepixel.analysis.spatial import location_heatmap
from onepixel.attack.colour import colour_error
from onepixel.attack.records import AttackRecord
from onepixel.attack.store import CampaignStore, write_csv
from onepixel.cli.main import app


def record(image_id, direction, before, after, vector, objective="plain", colour=0.1, **kw) -> AttackRecord:
    return AttackRecord(
        image_id=image_id,
        label="Atypical" if direction == "lower" else "Normal",
        direction=direction,
        objective=objective,
        pixels=len(vector) // 5,
        seed=0,
        settings={"popsize": 200},
        score_before=before,
        score_after=after,
        vector=list(vector),
        generations=3,
        evaluations=600,
        early_converged=kw.get("early", False),
        success=kw.get("success", after < 0.5 if direction == "lower" else after > 0.5),
        strong_success=False,
        wall_time_s=0.1,
        history=[before, after],
        colour_error=colour,
    )


def known_records() -> list[AttackRecord]:
    """Lower: 5 partly successful attacks on even-even pixels, 1 failure (0.95); raise: 3 with 1 failure."""
    lower = [
        record("a0", "lower", 0.99, 0.20, [32, 30, 255, 255, 0], colour=0.8),
        record("a1", "lower", 0.97, 0.40, [30, 28, 255, 255, 37], colour=0.7),
        record("a2", "lower", 0.95, 0.85, [34, 32, 250, 240, 40], colour=0.3),
        record("a3", "lower", 0.98, 0.10, [32, 34, 255, 255, 0], colour=0.9),
        record("a4", "lower", 0.96, 0.60, [36, 30, 200, 255, 100], colour=0.5),
        record("a5", "lower", 0.99, 0.95, [1, 1, 0, 0, 0], colour=0.05),  # filtered out (>= 0.9)
    ]
    raised = [
        record("n0", "raise", 0.05, 0.60, [31, 33, 10, 20, 30], colour=0.2),
        record("n1", "raise", 0.02, 0.15, [20, 41, 100, 150, 200], colour=0.4),
        record("n2", "raise", 0.01, 0.05, [0, 0, 255, 255, 255], colour=0.9),  # filtered out (<= 0.1)
    ]
    return lower + raised


def test_known_answers():
    table = AttackTable.from_records(known_records())
    np.testing.assert_array_equal(partial_success(table), [1, 1, 1, 1, 1, 0, 1, 1, 0])
    np.testing.assert_allclose(score_change(table)[[0, 6]], [0.79, 0.55])
    result = analyze(table)
    low = result["groups"]["plain/lower"]
    assert (low["attacks"], low["partly_successful"]) == (6, 5)
    stats = low["chromatic"]["stats"]
    assert stats["X"]["median"] == 32 and stats["Y"]["median"] == 30
    assert stats["R"]["median"] == 255 and stats["G"]["median"] == 255 and stats["B"]["median"] == 37
    assert stats["X"]["mean"] == pytest.approx(32.8)
    assert stats["B"]["sd"] == pytest.approx(np.std([0, 37, 40, 0, 100], ddof=1))
    assert low["chromatic"]["common_colours"][0] == {"colour": [255, 255, 0], "count": 2, "share": 0.4}
    assert low["chromatic"]["colour_error"]["median"] == pytest.approx(0.7)
    # Larger colour error goes with larger score change here: perfect rank correlation.
    assert low["chromatic"]["error_vs_change"]["spearman_rho"] == pytest.approx(1.0)
    per = low["periodicity"]
    assert per["counts"] == {"even_even": 5, "odd_odd": 0, "mixed": 0, "x_even_y_odd": 0, "x_odd_y_even": 0}
    assert per["shares"]["even_even"] == 1.0
    assert per["binomial_test"]["p_value_greater"] == pytest.approx(0.25**5)
    heat = np.asarray(low["spatial"]["heatmap"])
    assert heat.sum() == 5 and heat[30, 32] == 1 and heat[34, 32] == 1 and heat[1, 1] == 0
    up = result["groups"]["plain/raise"]
    assert up["partly_successful"] == 2
    assert up["periodicity"]["counts"]["odd_odd"] == 1 and up["periodicity"]["counts"]["mixed"] == 1
    assert up["chromatic"]["stats"]["R"]["median"] == 55


def test_periodicity_binomial_exact():
    rng = np.random.default_rng(0)
    even = rng.integers(0, 32, size=(400, 2)) * 2
    counts = parity_counts(even[:, 0], even[:, 1])
    assert counts["even_even"] == 400
    records = [record(f"i{i}", "lower", 0.99, 0.2, [x, y, 255, 255, 0]) for i, (x, y) in enumerate(even)]
    test = analyze(AttackTable.from_records(records))["groups"]["plain/lower"]["periodicity"]["binomial_test"]
    assert test["p_value"] < 1e-200
    # Uniform coordinates: about a quarter even-even, p-value from scipy's exact test.
    xy = rng.integers(0, 64, size=(2000, 2))
    records = [record(f"u{i}", "lower", 0.99, 0.2, [x, y, 1, 2, 3]) for i, (x, y) in enumerate(xy)]
    per = analyze(AttackTable.from_records(records))["groups"]["plain/lower"]["periodicity"]
    ee = int(np.sum((xy[:, 0] % 2 == 0) & (xy[:, 1] % 2 == 0)))
    assert per["counts"]["even_even"] == ee
    assert per["binomial_test"]["p_value"] == pytest.approx(binomtest(ee, 2000, 0.25).pvalue)
    assert per["binomial_test"]["p_value"] > 1e-3
    assert sum(per["counts"][k] for k in ("even_even", "odd_odd", "mixed")) == 2000


def test_k_pixel_records_count_every_pixel():
    recs = [record("k0", "lower", 0.99, 0.3, [2, 4, 255, 0, 0, 3, 5, 0, 255, 0, 10, 11, 0, 0, 255])]
    table = AttackTable.from_records(recs)
    px = table.pixels_view()
    np.testing.assert_array_equal(px.x, [2, 3, 10])
    heat = location_heatmap(table)
    assert heat[4, 2] == heat[5, 3] == heat[11, 10] == 1 and heat.sum() == 3
    with pytest.raises(ValueError, match="outside"):
        location_heatmap(AttackTable.from_records([record("bad", "lower", 0.9, 0.1, [64, 0, 0, 0, 0])]))


def test_sqlite_and_csv_runs_load_the_same(tmp_path):
    recs = known_records()
    store = CampaignStore.open(tmp_path / "run")
    store.create_run({"x": 1}, [r.image_id for r in recs], [r.score_before for r in recs])
    for i, r in enumerate(recs):
        store.add(r, np.zeros((64, 64, 3), np.uint8), i)
    store.close()
    write_csv(recs, tmp_path / "csvrun" / "attacks.csv")
    a, b = load_runs([tmp_path / "run"]), load_runs([tmp_path / "csvrun"])
    assert list(a.image_id) == list(b.image_id) == [r.image_id for r in recs]
    np.testing.assert_array_equal(a.score_after, b.score_after)
    np.testing.assert_array_equal(a.colour_error, b.colour_error)
    assert all(np.array_equal(u, v) for u, v in zip(a.vectors, b.vectors, strict=True))
    assert analyze(a)["groups"] == analyze(b)["groups"]
    both = load_runs([tmp_path / "run", tmp_path / "csvrun" / "attacks.csv"])
    assert len(both) == 2 * len(recs)
    with pytest.raises(RunLoadError, match="neither"):
        load_runs([tmp_path])
    (tmp_path / "bad.csv").write_text("image_id,direction\nx,lower\n")
    with pytest.raises(RunLoadError, match="missing columns"):
        load_runs([tmp_path / "bad.csv"])


def test_missing_colour_errors_come_from_the_data(amibr_root, test_split):
    ids = list(test_split.names[:3])
    vectors = [[5, 6, 255, 0, 0], [63, 0, 0, 0, 0], [31, 31, 128, 128, 128]]
    recs = [record(i, "lower", 0.99, 0.2, v, colour=None) for i, v in zip(ids, vectors, strict=True)]
    recs.append(record("not_in_data", "lower", 0.99, 0.2, [1, 1, 1, 1, 1], colour=None))
    table = fill_colour_errors(AttackTable.from_records(recs), amibr_root)
    want = colour_error(test_split.images[:3], np.array(vectors))
    np.testing.assert_allclose(table.colour_error[:3], want)
    assert np.isnan(table.colour_error[3])


def test_analyze_cli_json_and_figures(tmp_path):
    write_csv(known_records(), tmp_path / "run" / "attacks.csv")
    result = CliRunner().invoke(
        app, ["analyze", str(tmp_path / "run"), "--json", "--out", str(tmp_path / "fig")]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["groups"]["plain/lower"]["periodicity"]["counts"]["even_even"] == 5
    figures = sorted(p.name for p in (tmp_path / "fig").iterdir())
    assert figures == [
        "analysis_colour_error_plain_lower.png",
        "analysis_colour_error_plain_raise.png",
        "analysis_locations_plain_lower.png",
        "analysis_locations_plain_raise.png",
    ]
    text = CliRunner().invoke(app, ["analyze", str(tmp_path / "run"), "--no-figures"])
    assert text.exit_code == 0 and "even-even 5 (100.0%)" in text.stdout
    missing = CliRunner().invoke(app, ["analyze", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_real_colour_campaign_analysis(tmp_path, test_split):
    """A tiny real campaign (colour objective, bundled model): the analysis agrees with the records."""
    from onepixel.attack.campaign import CampaignConfig, run_campaign
    from onepixel.attack.de import paper_de_config
    from onepixel.targets import TorchTarget

    target = TorchTarget.from_pretrained()
    config = CampaignConfig(
        direction="lower",
        objective="colour",
        de=paper_de_config(popsize=16, maxiter=2),
        filter=False,
        limit=4,
    )
    run_campaign(target, test_split, config, tmp_path / "run", progress=False)
    table = load_runs([tmp_path / "run"])
    assert len(table) == 4 and set(table.objective) == {"colour"}
    images = {n: test_split.images[i] for i, n in enumerate(test_split.names)}
    want = colour_error(np.stack([images[i] for i in table.image_id]), np.stack(table.vectors))
    np.testing.assert_allclose(table.colour_error, want, atol=1e-12)
    group = analyze(table, lower_below=1.01)["groups"]["colour/lower"]
    assert group["partly_successful"] == 4
    xs = np.array([v[0] for v in table.vectors])
    assert group["chromatic"]["stats"]["X"]["median"] == np.median(xs)
    assert np.asarray(group["spatial"]["heatmap"]).sum() == 4
    assert sum(group["periodicity"]["counts"][k] for k in ("even_even", "odd_odd", "mixed")) == 4
    assert group["chromatic"]["colour_error"]["mean"] == pytest.approx(want.mean())
