"""The study report built from real campaigns, a real confidence map and a real guard evaluation,
then opened in headless Chromium at desktop and phone widths."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from onepixel.analysis.confmap import compute_confmap
from onepixel.analysis.confmap_files import save_confmap
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.attack.de import paper_de_config
from onepixel.attack.store import CampaignStore
from onepixel.cli.main import app
from onepixel.data.patches import PatchSet
from onepixel.defense.guard import build_guard
from onepixel.defense.guard_eval import evaluate_guard
from onepixel.report.browser import DESKTOP, PHONE, check_in_browser
from onepixel.report.build import build_report, distinct_run_titles
from onepixel.targets.local import TorchTarget

MAP_ROWS = [30, 31]


class Headings(HTMLParser):
    """Collect the text of every <h2> of a page, and the sources of its images."""

    def __init__(self) -> None:
        super().__init__()
        self.h2: list[str] = []
        self.srcs: list[str] = []
        self._in = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Start an <h2> or note an image source."""
        if tag == "h2":
            self._in = True
            self.h2.append("")
        if tag == "img":
            self.srcs.append(dict(attrs).get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        """End an <h2>."""
        if tag == "h2":
            self._in = False

    def handle_data(self, data: str) -> None:
        """Add text to the open <h2>."""
        if self._in:
            self.h2[-1] += data


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, test_split: PatchSet) -> dict[str, Path]:
    """Return the folders of a tiny real study: two 'lower' campaigns that differ only in their DE
    budget, one 'raise' campaign, an L=2 confidence map of two rows and a residual-guard evaluation."""
    root = tmp_path_factory.mktemp("study")
    target = TorchTarget.from_pretrained()
    runs = {}
    for name, direction, limit, maxiter in (
        ("lower-a", "lower", 4, 4),
        ("lower-b", "lower", 3, 3),
        ("raise-a", "raise", 2, 3),
    ):
        config = CampaignConfig(
            direction=direction, filter=False, limit=limit, de=paper_de_config(popsize=20, maxiter=maxiter)
        )
        runs[name] = root / name
        run_campaign(target, test_split, config, runs[name], progress=False)
    cmap = compute_confmap(
        target, test_split.images[0], 2, rows=MAP_ROWS, out_dir=root / "map", progress=False
    )
    save_confmap(cmap, root / "map", "auto", title=test_split.names[0])
    doc = evaluate_guard(
        [runs["lower-a"], runs["raise-a"]],
        {"residual": build_guard("residual")},
        target,
        test_split.images[:60],
        repair=False,
    )
    (root / "guard.json").write_text(json.dumps(doc))
    report = build_report(
        list(runs.values()), root / "report.html", confmaps=[root / "map"], guards=[root / "guard.json"]
    )
    return {**runs, "map": root / "map", "guard": root / "guard.json", "report": report, "root": root}


def flips_of(run: Path) -> tuple[int, int]:
    """Return (flips, already misclassified) of a run, counted here from its records."""
    with CampaignStore.open(run, create=False) as store:
        records, direction = store.records(), store.config()["direction"]
    before = np.array([r.score_before for r in records])
    after = np.array([r.score_after for r in records])
    right = before >= 0.5 if direction == "lower" else before < 0.5
    across = after < 0.5 if direction == "lower" else after >= 0.5
    return int((right & across).sum()), int((~right).sum())


def test_section_titles_are_distinct_and_say_what_differs(study: dict[str, Path]) -> None:
    page = Headings()
    page.feed(study["report"].read_text())
    assert len(page.h2) == len(set(page.h2)), page.h2
    runs = [t for t in page.h2 if t.startswith("Attack ")]
    assert len(runs) == 3
    lower = sorted(t for t in runs if "Atypical → Normal" in t)
    # the two lower runs share objective, k and images; their titles name the settings that differ
    assert "DE maxiter 3, limit 3" in lower[0] + lower[1] and "DE maxiter 4, limit 4" in lower[0] + lower[1]
    assert not any("maxiter" in t for t in runs if "Normal → Atypical" in t)


def test_same_settings_fall_back_to_the_folder_name() -> None:
    config = {"direction": "lower", "de": {"maxiter": 3}, "data": {"path": "/a"}}
    other = {"direction": "lower", "de": {"maxiter": 3}, "data": {"path": "/b"}}
    titles = distinct_run_titles(["T", "T", "U"], [config, other, config], ["run1", "run2", "run3"])
    assert titles == ["T (run1)", "T (run2)", "U"]


def test_findings_open_the_report_with_each_run(study: dict[str, Path]) -> None:
    html = study["report"].read_text()
    page = Headings()
    page.feed(html)
    assert page.h2[0] == "Findings"
    findings = html.split("<h2>Findings</h2>", 1)[1].split("</section>", 1)[0]
    total = flipped = 0
    for name in ("lower-a", "lower-b", "raise-a"):
        flips, wrong = flips_of(study[name])
        row = re.search(rf'<td data-label="run">{name}</td>(.*?)</tr>', findings)
        assert row, name
        cells = re.findall(r'data-label="([^"]+)">([^<]*)<', row.group(1))
        values = dict(cells)
        expected = f"{flips}" + (f" (+{wrong} already wrong)" if wrong else "")
        assert values["flips"] == expected
        total += int(values["images attacked"])
        flipped += flips
    assert f"{flipped} of {total} attacked images flipped across 3 run(s)" in findings


def test_guard_table_comes_from_the_guard_evaluation(study: dict[str, Path]) -> None:
    doc = json.loads(study["guard"].read_text())
    html = study["report"].read_text()
    section = html.split("<h2>Guarded pipeline</h2>", 1)[1].split("</section>", 1)[0]
    g = doc["guards"]["residual"]
    assert f"{100 * g['clean_fpr']:.1f}% ({g['clean_flagged']} of {g['clean_images']})" in section
    through = sum(r["guards"]["residual"]["got_through_flips"] for r in doc["runs"])
    flips = sum(
        r["guards"]["residual"]["successful"] - r["guards"]["residual"]["already_misclassified"]
        for r in doc["runs"]
    )
    assert f'data-label="flips through: plain">{through} of {flips}<' in section
    # the findings sum it up over the report's runs, and the run not evaluated says so
    findings = html.split("</section>", 1)[0]
    verdict = "held" if through == 0 else "let through"
    assert (
        f"Guards over the evaluated runs: residual {verdict} ({through} of {flips} flips got through)."
        in findings
    )
    row = re.search(r'<td data-label="run">lower-b</td>.*?</tr>', findings)
    assert row and "not evaluated" in row.group(0)


def test_a_file_that_is_not_a_guard_evaluation_is_a_clear_error(
    study: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "guard.json"
    bad.write_text(json.dumps({"threshold": 0.2}))
    out = CliRunner().invoke(
        app, ["report", str(study["raise-a"]), "--guard", str(bad), "--out", str(tmp_path / "r.html")]
    )
    assert out.exit_code == 2
    assert "not a guard evaluation" in " ".join(out.output.split())


def test_the_report_is_one_file_without_machine_paths(study: dict[str, Path]) -> None:
    html = study["report"].read_text()
    page = Headings()
    page.feed(html)
    assert page.srcs and all(s.startswith("data:image/png;base64,") for s in page.srcs)
    assert "<link" not in html and "url(" not in html and "@import" not in html
    for root in (str(study["root"]), str(Path.home()), str(Path(__file__).resolve().parents[1])):
        assert root not in html
    card = html.split("<h2>Target classifier</h2>", 1)[1].split("</section>", 1)[0]
    assert "<h3>" in card and "\n#" not in card and "**" not in card  # rendered, not raw markdown


@pytest.mark.parametrize("window", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_report_in_chromium(
    study: dict[str, Path], chromium: str, window: tuple[int, int], tmp_path: Path
) -> None:
    shot = tmp_path / "first-screen.png"
    check = check_in_browser(study["report"], screenshot=shot, window=window)
    assert check.ok and not check.problems(), check.problems()
    html = study["report"].read_text()
    assert check.images_total == html.count("<img ") and check.images_total >= 8
    assert check.titles == html.count("<h2>") and not check.duplicate_titles
    assert check.width == window[0] and check.overflow == 0
    with Image.open(shot) as image:
        assert image.size == window
        assert len(np.unique(np.asarray(image.convert("L")))) > 20  # a rendered page, not a blank one
    # hovering the map's centre shows that pixel's min / max / mean, as stored in confmap.npz
    number = r"([\d.]+|not computed)"
    colour = r"(?: \(RGB (\d+,\d+,\d+)\))?"
    pattern = rf"x (\d+), y (\d+): min {number}{colour}, max {number}{colour}, mean {number}"
    m = re.fullmatch(pattern, check.confmap)
    assert m, check.confmap
    x, y = int(m.group(1)), int(m.group(2))
    with np.load(study["map"] / "confmap.npz") as z:
        if y in MAP_ROWS:
            for group, key in ((3, "min"), (5, "max"), (7, "mean")):
                assert float(m.group(group)) == pytest.approx(float(z[key][y, x]), abs=1e-4)
            assert m.group(4) == ",".join(str(int(v)) for v in z["argmin"][y, x])
            assert m.group(6) == ",".join(str(int(v)) for v in z["argmax"][y, x])
        else:
            assert m.group(3) == "not computed" and m.group(4) is None


def test_a_map_still_being_computed_is_a_clear_error(study: dict[str, Path], tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "confmap_state.npz").write_bytes((study["map"] / "confmap_state.npz").read_bytes())
    for folder, message in ((partial, "still being computed"), (tmp_path, "not a confidence-map folder")):
        out = CliRunner().invoke(
            app,
            ["report", str(study["raise-a"]), "--confmap", str(folder), "--out", str(tmp_path / "r.html")],
        )
        assert out.exit_code == 2 and message in " ".join(out.output.split()), out.output
    out = CliRunner().invoke(
        app,
        [
            "report",
            str(study["raise-a"]),
            "--detector-results",
            str(tmp_path),
            "--out",
            str(tmp_path / "r.html"),
        ],
    )
    assert out.exit_code == 2 and "not a detector evaluation" in " ".join(out.output.split())


def test_attack_kinds_of_the_guard_table() -> None:
    from onepixel.report.build import attack_kind

    assert attack_kind({"objective": "plain"}, "exhaustive") == "exhaustive"
    assert attack_kind({"objective": "plain", "method": "exhaustive"}, None) == "exhaustive"
    assert attack_kind({"objective": "adaptive"}, "de") == "adaptive"
    assert attack_kind({"objective": "plain"}, "de-noconv") == "plain"
    assert attack_kind({"objective": "plain"}, "sparse-rs") == "sparse-rs"


def test_analysis_figures_are_captioned_and_empty_groups_said(study: dict[str, Path]) -> None:
    html = study["report"].read_text()
    section = html.split("<h2>Chromatic, spatial and periodicity analysis</h2>", 1)[1].split("</section>", 1)[
        0
    ]
    for direction in ("lower", "raise"):
        drawn = f"attack locations: plain, {direction}" in section
        said = re.search(rf"No partly successful attack, so no figure, in: [^<]*plain/{direction}", section)
        assert drawn != bool(said), direction
    assert "analysis_" not in re.sub(r'src="[^"]*"', "", section)  # no file names as captions


def test_a_csv_only_run_folder_makes_a_report(study: dict[str, Path], tmp_path: Path) -> None:
    """A folder holding only the ``attacks.csv`` export (no attacks.sqlite, no config, no
    adversarial PNGs) is read as read_run reads it: its findings row counts the flips its records
    hold, and the figures that need no image are drawn while the image pairs are left out (said)."""
    folder = tmp_path / "csv-only"
    folder.mkdir()
    (folder / "attacks.csv").write_bytes((study["lower-a"] / "attacks.csv").read_bytes())
    report = build_report([folder], tmp_path / "report.html", make_figures=True)
    findings = report.read_text().split("<h2>Findings</h2>", 1)[1].split("</section>", 1)[0]
    row = re.search(r'<td data-label="run">csv-only</td>(.*?)</tr>', findings)
    assert row
    values = dict(re.findall(r'data-label="([^"]+)">([^<]*)<', row.group(1)))
    flips, wrong = flips_of(study["lower-a"])
    assert values["flips"] == f"{flips}" + (f" (+{wrong} already wrong)" if wrong else "")
    assert values["images attacked"] == "4"
    drawn = sorted(png.name for png in (folder / "figures").glob("*.png"))
    assert drawn == ["colours.png", "convergence.png", "scores_boxplot.png"]
    text = " ".join(re.sub(r"<[^>]+>", " ", report.read_text()).split())
    assert "4 of 4 attacks have no adversarial image in this folder" in text
