"""Manifest verification and the download path, against a loopback HTTP server (127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import shutil
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onepixel.cli.main import app
from onepixel.data import download as dl
from onepixel.data.amibr import ensure_amibr
from onepixel.data.patches import DataError

SUBSET = ["Atypical/" + n for n in ("MIDOG21_1044.png", "MIDOG21_1048.png")] + [
    "Normal/" + n for n in ("MIDOG21_10.png", "MIDOG21_1014.png", "MIDOG21_1015.png")
]
ROOT_FILES = ["amibr_train_split.csv", "LICENSE"]


def test_committed_manifest_covers_the_data(amibr_root: Path) -> None:
    manifest = dl.load_manifest()
    assert len(manifest) == 3722
    assert sum(k.startswith("Atypical/") for k in manifest) == 832
    assert sum(k.startswith("Normal/") for k in manifest) == 2888
    assert {"amibr_train_split.csv", "LICENSE"} <= set(manifest)
    start = time.perf_counter()
    report = dl.verify_dataset(amibr_root)
    elapsed = time.perf_counter() - start
    assert report.ok, report.summary()
    assert report.checked == 3722
    assert elapsed < 10  # typically well under 1 s; generous for a loaded CI machine


def test_verify_reports_missing_changed_extra(tmp_path: Path, amibr_root: Path) -> None:
    for rel in SUBSET + ROOT_FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(amibr_root / rel, tmp_path / rel)
    manifest = {rel: dl.sha256_file(amibr_root / rel) for rel in SUBSET + ROOT_FILES}
    assert dl.verify_dataset(tmp_path, manifest).ok
    (tmp_path / SUBSET[0]).unlink()
    (tmp_path / SUBSET[1]).write_bytes(b"tampered")
    (tmp_path / "Normal" / "new.png").write_bytes(b"x")
    (tmp_path / ".DS_Store").write_bytes(b"hidden files are ignored")
    report = dl.verify_dataset(tmp_path, manifest)
    assert report.missing == [SUBSET[0]]
    assert report.changed == [SUBSET[1]]
    assert report.extra == ["Normal/new.png"]
    with pytest.raises(DataError, match="1 missing .*MIDOG21_1044.png.*1 changed .*MIDOG21_1048.png"):
        report.raise_for_errors()


def build_tarball(amibr_root: Path, files: list[str], tamper: str | None = None) -> bytes:
    """Return a GitHub-style tar.gz (one top-level folder, images under AMi-Br/) of ``files``."""
    top = "AMi-Br_Benchmark-3acf4da0000000000000000000000000000000000"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        members = {f"{top}/README.md": b"not part of the data set"}
        for rel in files:
            data = (amibr_root / rel).read_bytes()
            if rel == tamper:
                data = data[:-20] + bytes(20)
            inside = rel if rel in ROOT_FILES else f"AMi-Br/{rel}"
            members[f"{top}/{inside}"] = data
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture()
def server() -> Iterator[dict]:
    """Serve ``state["body"]`` at http://127.0.0.1:<port>/amibr.tar.gz; count the requests."""
    state: dict = {"body": b"", "hits": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            state["hits"] += 1
            if self.path != "/amibr.tar.gz":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(state["body"])))
            self.end_headers()
            self.wfile.write(state["body"])

        def log_message(self, *args: object) -> None:
            return None

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/amibr.tar.gz"
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def subset_manifest(tmp_path: Path, amibr_root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point the module at a manifest of the small subset, as if AMi-Br were only those files."""
    files = {rel: hashlib.sha256((amibr_root / rel).read_bytes()).hexdigest() for rel in SUBSET + ROOT_FILES}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"files": files}))
    monkeypatch.setattr(dl, "MANIFEST_PATH", path)
    return files


def test_download_extracts_verifies_and_reuses(
    tmp_path: Path, amibr_root: Path, server: dict, subset_manifest: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    server["body"] = build_tarball(amibr_root, SUBSET + ROOT_FILES)
    monkeypatch.setenv(dl.URL_ENV, server["url"])
    root = tmp_path / "cache" / "ami-br"
    assert ensure_amibr(root, progress=False) == root
    assert server["hits"] == 1
    assert dl.dataset_files(root) == sorted(SUBSET + ROOT_FILES)  # README.md skipped
    assert (root / SUBSET[0]).read_bytes() == (amibr_root / SUBSET[0]).read_bytes()
    assert [p.name for p in root.parent.iterdir()] == ["ami-br"]  # no temporary leftovers
    # A verified copy is reused without downloading again.
    assert ensure_amibr(root, progress=False) == root
    assert server["hits"] == 1
    # A copy that went bad later is refused with the file named.
    (root / SUBSET[2]).write_bytes(b"bad")
    with pytest.raises(DataError, match="1 changed .*MIDOG21_10.png.*onepixel data download"):
        ensure_amibr(root, progress=False)


def test_tampered_download_is_rejected(
    tmp_path: Path, amibr_root: Path, server: dict, subset_manifest: dict
) -> None:
    server["body"] = build_tarball(amibr_root, SUBSET + ROOT_FILES, tamper=SUBSET[3])
    root = tmp_path / "ami-br"
    with pytest.raises(DataError, match="rejected: 1 changed .*MIDOG21_1014.png"):
        dl.download_amibr(root, url=server["url"], progress=False)
    assert not root.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "manifest.json"]


def test_incomplete_download_is_rejected_by_the_real_manifest(
    tmp_path: Path, amibr_root: Path, server: dict
) -> None:
    server["body"] = build_tarball(amibr_root, SUBSET + ROOT_FILES)
    with pytest.raises(DataError, match=r"rejected: 3715 missing"):
        dl.download_amibr(tmp_path / "ami-br", url=server["url"], progress=False)
    assert not (tmp_path / "ami-br").exists()


def test_download_errors(tmp_path: Path, server: dict) -> None:
    server["body"] = b"this is not a tarball"
    with pytest.raises(DataError, match="not a readable tar.gz"):
        dl.download_amibr(tmp_path / "a", url=server["url"], progress=False)
    with pytest.raises(DataError, match="cannot download AMi-Br from .*404"):
        dl.download_amibr(tmp_path / "b", url=server["url"].replace("amibr", "other"), progress=False)
    with pytest.raises(DataError, match="must be http"):
        dl.download_amibr(tmp_path / "c", url="file:///etc/passwd", progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("something")
    with pytest.raises(DataError, match="exists and is not empty"):
        dl.download_amibr(busy, url=server["url"], progress=False)
    with pytest.raises(DataError, match="busy exists but is not an AMi-Br folder"):
        ensure_amibr(busy, progress=False)


def test_cli_download_and_data_info(
    tmp_path: Path, amibr_root: Path, server: dict, subset_manifest: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    server["body"] = build_tarball(amibr_root, SUBSET + ROOT_FILES)
    monkeypatch.setenv(dl.URL_ENV, server["url"])
    root = tmp_path / "data"
    runner = CliRunner()
    result = runner.invoke(app, ["download", "--data", str(root)])
    assert result.exit_code == 0, result.output
    assert (root / SUBSET[0]).is_file()
    result = runner.invoke(app, ["data-info", "--data", str(root), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["verified"] is True
    counts = {(c["split"], c["label"]): c["n"] for c in info["counts"]}
    rows = (amibr_root / "amibr_train_split.csv").read_text()
    in_train = [rel for rel in SUBSET if rel.split("/")[1] in rows]
    assert sum(n for (split, _), n in counts.items() if split == "train") == len(in_train)
    assert sum(counts.values()) == len(SUBSET)
    (root / SUBSET[0]).unlink()
    result = runner.invoke(app, ["data-info", "--data", str(root), "--json"])
    assert json.loads(result.stdout)["verified"] is False


def test_cli_data_info_on_real_data(amibr_root: Path) -> None:
    result = CliRunner().invoke(app, ["data-info", "--data", str(amibr_root), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["verified"] is True and info["train_slides"] == 146
    counts = {(c["split"], c["label"]): c["n"] for c in info["counts"]}
    assert counts == {
        ("train", "Atypical"): 648,
        ("train", "Normal"): 2246,
        ("test", "Atypical"): 184,
        ("test", "Normal"): 642,
    }
