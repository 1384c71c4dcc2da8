"""Registries: a method added by registration alone runs a campaign, resumes and reports; the one
registry pattern names what it knows and checks options against the factory's signature."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.attack.jobs import BatchSeeds
from onepixel.attack.method import AttackMethod, MethodError, Report, SearchResult, register_method
from onepixel.attack.run_folder import read_run
from onepixel.attack.store import CampaignStore
from onepixel.data.patches import PatchSet
from onepixel.direction import Direction
from onepixel.registry import Registry, RegistryError
from onepixel.targets.base import Target
from onepixel.targets.local import TorchTarget

CORNERS = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)])


@register_method
class CentreCorners(AttackMethod):
    """A toy method: paint the centre pixel with each of the first ``colours`` RGB-cube corners."""

    name = "toy-centre"

    def __init__(self, pixels: int = 1, colours: int = 8) -> None:
        super().__init__(pixels)
        if not 1 <= colours <= 8:
            raise MethodError(f"colours must lie in [1, 8], got {colours}")
        self.colours = int(colours)

    def options(self) -> dict[str, Any]:
        """Return the number of corner colours tried."""
        return {"colours": self.colours}

    def search(
        self,
        target: Target,
        images: np.ndarray,
        direction: Direction,
        budget: int | None,
        seeds: BatchSeeds,
        stop_at: float | None,
        report: Report | None = None,
    ) -> list[SearchResult]:
        """Return the best corner of each image, reporting each image as it is done."""
        n, c, centre = len(images), self.colours, images.shape[1] // 2
        changes = np.zeros((n * c, 1, 5), dtype=np.int64)
        changes[:, 0, :2] = centre
        changes[:, 0, 2:] = np.tile(CORNERS[:c], (n, 1))
        scores = target.predict_pixels(images, np.repeat(np.arange(n), c), changes).reshape(n, c)
        energy = direction.energy(scores)
        results = []
        for i in range(n):
            j = int(np.argmin(energy[i]))
            hit = np.flatnonzero(direction.crossed(scores[i]))
            result = SearchResult(
                vector=changes[i * c + j, 0],
                score=float(scores[i, j]),
                queries=c,
                first_cross=int(hit[0]) + 1 if len(hit) else None,
                steps=1,
                history=[float(scores[i, j])],
                stopped_by="complete",
                seed=seeds.batch_seed(self.name),
                wall_time_s=0.0,
                cpu_seconds=0.0,
            )
            results.append(result)
            if report is not None:
                report(i, result)
        return results


@pytest.fixture(scope="module")
def patches(test_split: PatchSet) -> PatchSet:
    """Return 6 + 6 real AMi-Br test images."""
    index = np.concatenate([np.flatnonzero(test_split.labels == c)[:6] for c in range(2)])
    return PatchSet(
        images=test_split.images[index],
        labels=test_split.labels[index],
        classes=test_split.classes,
        names=tuple(test_split.names[i] for i in index),
        positive=test_split.positive,
    )


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    with CampaignStore.open(run_dir, create=False) as store:
        rows = [r.to_dict() for r in store.records()]
    for row in rows:
        row.pop("wall_time_s"), row.pop("cpu_seconds")
    return rows


def test_a_method_added_by_registration_runs_a_campaign_resumes_and_reports(
    tmp_path: Path, target: TorchTarget, patches: PatchSet
) -> None:
    from onepixel.report.build import build_report

    config = CampaignConfig(
        direction="raise",
        method="toy-centre",
        method_options={"colours": 4},
        filter=False,
        limit=5,
        images_per_batch=2,
    )
    straight = run_campaign(target, patches, config, tmp_path / "straight", progress=False)
    records = straight.records
    assert [r.method for r in records] == ["toy-centre"] * 5
    assert all(r.settings["colours"] == 4 and r.queries == 4 and r.vector[:2] == [32, 32] for r in records)
    for r in records:  # the score after is the re-query of the stored vector, on the right side
        assert r.success == (r.score_after > 0.5) and r.flip == (r.score_before < 0.5 < r.score_after)

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "straight", resumed_dir)
    with CampaignStore.open(resumed_dir) as store:
        store.db.execute("DELETE FROM attacks WHERE position IN (1, 4)")
    again = run_campaign(target, patches, config, resumed_dir, progress=False)
    assert (again.resumed, again.new) == (3, 2)
    assert _rows(resumed_dir) == _rows(tmp_path / "straight")

    # The report takes the run folder, and a folder holding only the CSV export.
    csv_only = tmp_path / "csv_only"
    csv_only.mkdir()
    shutil.copy(tmp_path / "straight" / "attacks.csv", csv_only / "attacks.csv")
    assert [r.image_id for r in read_run(csv_only).records] == [r.image_id for r in records]
    out = build_report([tmp_path / "straight", csv_only], tmp_path / "report.html", make_figures=False)
    html = out.read_text()
    assert "by toy-centre" in html and "csv_only" in html


def test_an_unknown_option_of_a_registered_method_fails_before_any_folder(tmp_path: Path) -> None:
    from onepixel.attack.jobs import CampaignError

    with pytest.raises(
        CampaignError, match=r"unknown option\(s\) \['levels'\] for attack method 'toy-centre'"
    ):
        CampaignConfig(direction="lower", method="toy-centre", method_options={"levels": 3})
    with pytest.raises(CampaignError, match=r"colours must lie in \[1, 8\]"):
        CampaignConfig(direction="lower", method="toy-centre", method_options={"colours": 9})


def test_the_registry_names_what_it_knows_and_checks_typed_options() -> None:
    shapes: Registry[Any] = Registry("shape", positional=("size",))

    @shapes.register("square")
    def square(size: int, *, filled: bool = True, colour: str = "red") -> tuple[int, bool, str]:
        return size, filled, colour

    assert shapes.create("square", 3, colour="blue") == (3, True, "blue")
    options = shapes.options("square")
    assert options is not None and sorted(options) == ["colour", "filled"]
    assert options["filled"].annotation == "bool" and options["filled"].default is True
    with pytest.raises(RegistryError, match=r"unknown option\(s\) \['sides'\] for shape 'square'; known"):
        shapes.create("square", 3, sides=4)
    with pytest.raises(RegistryError, match=r"unknown shape 'circle'; known: \['square'\]"):
        shapes.get("circle")
    with pytest.raises(RegistryError, match="registered already"):
        shapes.register("square", lambda size: size)


def test_plugins_register_when_their_module_is_imported() -> None:
    from onepixel.attack.objectives import OBJECTIVES
    from onepixel.defense.adaptive import adaptive_factory

    assert OBJECTIVES.get("adaptive") is adaptive_factory
    assert {"plain", "colour", "adaptive"} <= set(OBJECTIVES.names())


def test_open_target_info_carries_the_canonical_spec_and_the_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from onepixel.models.registry import DEFAULT_MODEL, weights_path
    from onepixel.targets import open_target
    from onepixel.targets.factory import BUNDLED_VIEWS_MODEL, canonical_spec, target_fingerprint

    bundled = weights_path(DEFAULT_MODEL)
    digest = hashlib.sha256(bundled.read_bytes()).hexdigest()[:16]
    with open_target("bundled") as target:
        assert (target.info.spec, target.info.fingerprint) == ("bundled", digest)
    shutil.copy(bundled, tmp_path / "copy.safetensors")
    monkeypatch.chdir(tmp_path)
    with open_target("copy.safetensors") as target:  # a relative path is stored absolute
        assert target.info.spec == str(tmp_path / "copy.safetensors") and target.info.fingerprint == digest
    assert canonical_spec("certified:copy.safetensors") == f"certified:{tmp_path / 'copy.safetensors'}"
    assert canonical_spec("certified@2:copy.safetensors") == f"certified@2:{tmp_path / 'copy.safetensors'}"
    views = hashlib.sha256(weights_path(BUNDLED_VIEWS_MODEL).read_bytes()).hexdigest()[:16]
    assert target_fingerprint("certified") == views and target_fingerprint("certified:bundled") == digest
    assert target_fingerprint("http://127.0.0.1:5000") is None
