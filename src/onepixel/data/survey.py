"""What a class-per-folder set holds, without bringing its images to one size (for ``data info``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onepixel.data.errors import DataError
from onepixel.data.formats import format_name
from onepixel.data.labels import LabelMap
from onepixel.data.patches import Skipped, folder_layout, infer_positive, read_class_folders


@dataclass(frozen=True)
class FolderSurvey:
    """Images per class of a folder set, with the formats and sizes found and the files skipped.

    ``positive`` is None when no class name says which is the class of interest.
    """

    root: Path
    split: str | None
    classes: tuple[str, ...]
    counts: tuple[int, ...]
    positive: str | None
    formats: dict[str, int]
    sizes: dict[str, int]
    skipped: tuple[Skipped, ...]

    @property
    def images(self) -> int:
        """Return the number of readable images."""
        return sum(self.counts)

    def to_dict(self) -> dict[str, Any]:
        """Return the survey as a JSON-ready dict."""
        return {
            "root": str(self.root),
            "split": self.split,
            "classes": list(self.classes),
            "counts": dict(zip(self.classes, self.counts, strict=True)),
            "positive": self.positive,
            "formats": self.formats,
            "sizes": self.sizes,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
        }


def survey_folder(
    root: str | Path,
    split: str | None = None,
    *,
    positive: str | None = None,
    label_map: LabelMap | None = None,
    skip_bad: bool = False,
) -> FolderSurvey:
    """Return what the class folders under ``root`` (or ``root/<split>``) hold: readable images per
    class (every format, any sizes), their formats and sizes, and (``skip_bad``) the files left out.

    Every image is decoded, so an unreadable one raises :class:`DataError` naming it unless
    ``skip_bad``.
    """
    base, folders, classes, label_of = folder_layout(root, split, None, label_map)
    arrays, labels, _, paths, skipped = read_class_folders(base, folders, label_of, None, skip_bad)
    try:
        chosen: str | None = infer_positive(classes, positive, label_map)
    except DataError:
        if positive is not None:
            raise
        chosen = None
    counts = Counter(labels)
    sizes = Counter(f"{a.shape[1]}x{a.shape[0]}" for a in arrays)
    return FolderSurvey(
        root=Path(root).expanduser(),
        split=split,
        classes=tuple(classes),
        counts=tuple(counts.get(i, 0) for i in range(len(classes))),
        positive=chosen,
        formats=dict(sorted(Counter(format_name(p) for p in paths).items())),
        sizes=dict(sorted(sizes.items())),
        skipped=tuple(skipped),
    )
