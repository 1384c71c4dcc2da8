"""Folder names to model labels: the ``folder=label,...`` map, parsed once into a typed mapping."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from onepixel.data.errors import DataError


@dataclass(frozen=True)
class LabelMap(Mapping[str, str]):
    """Which model label each class folder holds: ``pairs`` of (folder name, label), in order.

    Several folders may map to one label (their images are pooled); a folder appears once.
    """

    pairs: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        folders = [f for f, _ in self.pairs]
        repeated = sorted({f for f in folders if folders.count(f) > 1})
        if repeated:
            raise DataError(f"label map names folder(s) {repeated} more than once", settings=("label_map",))
        if any(not f or not label for f, label in self.pairs):
            raise DataError("label map has an empty folder or label name", settings=("label_map",))

    @classmethod
    def parse(cls, text: str) -> LabelMap:
        """Return the map written as ``folder=label,folder=label`` (spaces around names ignored).

        Raises :class:`DataError` naming the bad entry.
        """
        entries = [e.strip() for e in str(text).split(",") if e.strip()]
        if not entries:
            raise DataError(
                f"label map {text!r} is empty; write it as folder=label,folder=label",
                settings=("label_map",),
            )
        pairs = []
        for entry in entries:
            folder, sep, label = (part.strip() for part in entry.partition("="))
            if not sep or not folder or not label:
                raise DataError(
                    f"label map entry {entry!r} is not folder=label (in {text!r})", settings=("label_map",)
                )
            pairs.append((folder, label))
        return cls(tuple(pairs))

    def __getitem__(self, folder: str) -> str:
        for f, label in self.pairs:
            if f == folder:
                return label
        raise KeyError(folder)

    def __iter__(self) -> Iterator[str]:
        return (f for f, _ in self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def labels(self) -> tuple[str, ...]:
        """Return the distinct labels, in the order they first appear."""
        return tuple(dict.fromkeys(label for _, label in self.pairs))

    def text(self) -> str:
        """Return the map in its ``folder=label,...`` form (round-trips through :meth:`parse`)."""
        return ",".join(f"{f}={label}" for f, label in self.pairs)

    def check_folders(self, folders: list[str], where: str) -> None:
        """Raise :class:`DataError` unless the map names exactly the class folders ``folders``."""
        unmapped = [f for f in folders if f not in self]
        unknown = [f for f in self if f not in folders]
        if unmapped or unknown:
            parts = []
            if unmapped:
                parts.append(f"folders {unmapped} have no label in the map")
            if unknown:
                parts.append(f"the map names {unknown}, which are not folders there")
            raise DataError(
                f"{where}: label map {self.text()!r} does not fit the class folders {folders}: "
                + "; ".join(parts),
                settings=("label_map",),
            )
