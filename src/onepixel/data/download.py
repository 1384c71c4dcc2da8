"""Download AMi-Br from its pinned GitHub commit and verify every file against a committed manifest.

The manifest (``amibr_manifest.json`` beside this module) lists each file of the data folder,
relative to it (``Atypical/*.png``, ``Normal/*.png``, ``amibr_train_split.csv``, ``LICENSE``),
with its SHA-256. Hashing all ~3.7k files takes well under a second once they are in the page
cache, so loaders can afford to verify on every load.

The download is the GitHub tarball of the pinned commit. Only files named in the manifest are
extracted, into a temporary folder beside the destination that is renamed into place after
verification: a failed or tampered download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

from onepixel.config import default_data_dir
from onepixel.data.patches import DataError

AMIBR_REPO = "DeepMicroscopy/AMi-Br_Benchmark"
# The benchmark's own short id; the full 40-hex id could not be looked up offline. GitHub
# resolves short commit ids in archive URLs.
AMIBR_COMMIT = "3acf4da"
AMIBR_URL = f"https://codeload.github.com/{AMIBR_REPO}/tar.gz/{AMIBR_COMMIT}"
URL_ENV = "ONEPIXEL_AMIBR_URL"
MANIFEST_PATH = Path(__file__).with_name("amibr_manifest.json")
# Folder of the images inside the repository; the tarball adds one top-level folder above it.
REPO_FOLDER = "AMi-Br"
CHUNK = 1 << 16


def sha256_file(path: str | Path) -> str:
    """Return the hex SHA-256 of the file at ``path``."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def dataset_files(root: str | Path) -> list[str]:
    """Return the POSIX paths, relative to ``root``, of all non-hidden files under it (sorted)."""
    root = Path(root)
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            out.append(rel.as_posix())
    return sorted(out)


def build_manifest(root: str | Path) -> dict[str, Any]:
    """Return the manifest of ``root``: source repository, commit and ``{relative path: sha256}``."""
    root = Path(root)
    files = {rel: sha256_file(root / rel) for rel in dataset_files(root)}
    return {"repo": AMIBR_REPO, "commit": AMIBR_COMMIT, "hash": "sha256", "files": files}


@cache
def _load_manifest(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def load_manifest(path: str | Path | None = None) -> dict[str, str]:
    """Return ``{relative path: sha256}`` of the committed manifest (or the one at ``path``)."""
    path = Path(path) if path is not None else MANIFEST_PATH
    if not path.is_file():
        raise DataError(f"manifest {path} is missing")
    return dict(_load_manifest(str(path.resolve()))["files"])


@dataclass
class VerifyReport:
    """Outcome of checking a folder against the manifest; ``ok`` when nothing is missing or changed."""

    root: Path
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Return True when every manifest file is present with its hash and nothing extra was found."""
        return not (self.missing or self.changed or self.extra)

    def summary(self) -> str:
        """Return a one-paragraph description naming (up to five of) the offending files."""
        if self.ok:
            return f"{self.root}: all {self.checked} files match the AMi-Br manifest"
        parts = []
        for what, names in (("missing", self.missing), ("changed", self.changed), ("extra", self.extra)):
            if names:
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                parts.append(f"{len(names)} {what} ({shown})")
        return f"{self.root} does not match the AMi-Br manifest: " + "; ".join(parts)

    def raise_for_errors(self) -> None:
        """Raise :class:`DataError` with :meth:`summary` unless the folder is ``ok``."""
        if not self.ok:
            raise DataError(
                self.summary() + ". Delete the folder and run `onepixel data download` to fetch a clean copy."
            )


def verify_dataset(
    root: str | Path, manifest: dict[str, str] | None = None, *, only: list[str] | None = None
) -> VerifyReport:
    """Return a :class:`VerifyReport` of ``root`` against the manifest (missing, changed, extra).

    ``only`` restricts the check to those relative paths (they must all be in the manifest).
    """
    root = Path(root)
    expected = manifest if manifest is not None else load_manifest()
    report = VerifyReport(root=root)
    if not root.is_dir():
        report.missing = sorted(expected)
        return report
    if only is None:
        present = dataset_files(root)
        report.extra = [f for f in present if f not in expected]
        names = sorted(expected)
    else:
        report.extra = sorted(f for f in only if f not in expected)
        names = sorted(f for f in only if f in expected)
    for rel in names:
        path = root / rel
        try:
            digest = sha256_file(path)
        except FileNotFoundError:
            report.missing.append(rel)
            continue
        except OSError as exc:
            raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
        report.checked += 1
        if digest != expected[rel]:
            report.changed.append(rel)
    return report


def amibr_url() -> str:
    """Return the AMi-Br tarball URL: ``$ONEPIXEL_AMIBR_URL`` if set, else the pinned GitHub commit."""
    return os.environ.get(URL_ENV) or AMIBR_URL


def _member_target(name: str, expected: dict[str, str], root_files: dict[str, str]) -> str | None:
    """Return the manifest path a tarball member maps to, or None to skip it."""
    parts = PurePosixPath(name).parts
    if len(parts) < 2 or any(p in ("..", "") for p in parts) or name.startswith("/"):
        return None
    rel = PurePosixPath(*parts[1:]).as_posix()  # drop the tarball's top-level folder
    if rel.startswith(REPO_FOLDER + "/") and rel[len(REPO_FOLDER) + 1 :] in expected:
        return rel[len(REPO_FOLDER) + 1 :]
    if rel in expected and "/" not in rel:
        return rel
    # Root-level files of the data folder (split CSV, LICENSE) may sit elsewhere in the repository.
    return root_files.get(PurePosixPath(rel).name)


def fetch(url: str, dest: Path, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to the file ``dest`` with a progress bar and return ``dest``."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    try:
        response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (http/https only, checked)
    except urllib.error.HTTPError as exc:
        raise DataError(f"cannot download AMi-Br from {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(
            f"cannot download AMi-Br from {url}: {getattr(exc, 'reason', exc)}. Without network, "
            "copy the data folder and point to it (or set $ONEPIXEL_DATA)",
            settings=("data",),
        ) from exc
    total = response.headers.get("Content-Length")
    with (
        response,
        dest.open("wb") as out,
        Progress(
            *Progress.get_default_columns()[:3], DownloadColumn(), TransferSpeedColumn(), disable=not progress
        ) as bar,
    ):
        task = bar.add_task("downloading AMi-Br", total=int(total) if total else None)
        while chunk := response.read(CHUNK):
            out.write(chunk)
            bar.update(task, advance=len(chunk))
    return dest


def extract_amibr(archive: Path, dest: Path, manifest: dict[str, str]) -> VerifyReport:
    """Extract the manifest's files from ``archive`` into ``dest`` and return their verification."""
    root_files = {k: k for k in manifest if "/" not in k}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                rel = _member_target(member.name, manifest, root_files)
                if rel is None:
                    continue
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    continue
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"downloaded archive {archive} is not a readable tar.gz ({exc})") from exc
    return verify_dataset(dest, manifest)


def download_amibr(root: str | Path | None = None, *, url: str | None = None, progress: bool = True) -> Path:
    """Download and verify AMi-Br into ``root`` (default: the cache folder); return ``root``.

    ``root`` must not exist or be an empty folder. Raises :class:`DataError` if the download
    fails or any file differs from the manifest; nothing is left at ``root`` then.
    """
    root = Path(root) if root is not None else default_data_dir()
    url = url or amibr_url()
    if not url.startswith(("http://", "https://")):
        raise DataError(f"AMi-Br URL must be http(s), got {url!r}")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(
            f"{root} exists and is not empty; remove it or choose another data folder", settings=("data",)
        )
    manifest = load_manifest()
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".amibr-", dir=root.parent) as tmp:
        tmp_path = Path(tmp)
        archive = fetch(url, tmp_path / "amibr.tar.gz", progress=progress)
        staged = tmp_path / "ami-br"
        staged.mkdir()
        report = extract_amibr(archive, staged, manifest)
        if not report.ok:
            raise DataError(f"download from {url} rejected: " + report.summary().split(": ", 1)[1])
        if root.exists():
            root.rmdir()
        os.replace(staged, root)
    return root
