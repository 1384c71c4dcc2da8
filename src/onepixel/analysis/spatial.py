"""Spatial analysis: where in the image the attacks put their pixels, at the images' own size.

Positions are counted per pixel of the attacked image (a ``size x size`` heatmap) and also scaled
to the image (``(x + 0.5) / size``, so 0..1 whatever the size), which lets runs on models of
different input sizes be compared: the relative heatmap has ``RELATIVE_BINS`` bins a side, and
distances from the centre are given in pixels and as a share of the half-side.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onepixel.analysis.loading import AttackTable

RELATIVE_BINS = 16


def _pixel_sizes(table: AttackTable, size: int | None) -> np.ndarray:
    """Return the image size of every changed pixel (``size`` for all when given)."""
    px = table.pixels_view()
    if size is not None:
        return np.full(len(px), int(size), dtype=np.int64)
    return table.image_size[px.record].astype(np.int64)


def _check_inside(table: AttackTable, sizes: np.ndarray) -> None:
    px = table.pixels_view()
    inside = (px.x >= 0) & (px.x < sizes) & (px.y >= 0) & (px.y < sizes)
    if not inside.all():
        bad = np.flatnonzero(~inside)[0]
        raise ValueError(
            f"attack on {table.image_id[px.record[bad]]!r} has pixel ({px.x[bad]}, {px.y[bad]}) "
            f"outside a {sizes[bad]}x{sizes[bad]} image"
        )


def location_heatmap(table: AttackTable, size: int | None = None) -> np.ndarray:
    """Return (size, size) int64 counts of attack pixels, indexed [y, x].

    ``size`` defaults to the table's image size; a table of several sizes needs
    :func:`relative_heatmap` instead (ValueError).
    """
    if size is None:
        sizes = table.sizes
        if len(sizes) > 1:
            raise ValueError(f"attacks on images of sizes {sizes}: use the relative heatmap")
        size = sizes[0] if sizes else 64
    px = table.pixels_view()
    _check_inside(table, _pixel_sizes(table, size))
    counts = np.bincount(px.y * size + px.x, minlength=size * size)
    return counts.reshape(size, size).astype(np.int64)


def relative_positions(table: AttackTable, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (u, v) in [0, 1): every changed pixel's x and y scaled to its image, ``(x + 0.5) / size``."""
    px = table.pixels_view()
    sizes = _pixel_sizes(table, size)
    _check_inside(table, sizes)
    return (px.x + 0.5) / sizes, (px.y + 0.5) / sizes


def relative_heatmap(table: AttackTable, bins: int = RELATIVE_BINS, size: int | None = None) -> np.ndarray:
    """Return (bins, bins) int64 counts of attack pixels by relative position, indexed [row, column]."""
    u, v = relative_positions(table, size)
    col = np.minimum((u * bins).astype(np.int64), bins - 1)
    row = np.minimum((v * bins).astype(np.int64), bins - 1)
    return np.bincount(row * bins + col, minlength=bins * bins).reshape(bins, bins).astype(np.int64)


def spatial_analysis(table: AttackTable, size: int | None = None) -> dict[str, Any]:
    """Return the heatmaps and the distance of attack pixels from the centre, at the images' size.

    ``heatmap`` ([y][x] counts) is at the image size when the table has one size (``size``
    forces it), else it is the relative heatmap; ``relative_heatmap`` is always given.
    ``centre_distance_*`` are in pixels (one size only) and ``centre_distance_relative_*`` a
    share of the half-side (0 centre, 1 edge midpoint).
    """
    sizes = [int(size)] if size is not None else table.sizes
    one = sizes[0] if len(sizes) == 1 else None
    px = table.pixels_view()
    pixel_sizes = _pixel_sizes(table, size)
    relative = relative_heatmap(table, size=size)
    centre = (pixel_sizes - 1) / 2
    dist = np.hypot(px.x - centre, px.y - centre)
    rel = dist / (pixel_sizes / 2)
    heat = location_heatmap(table, one) if one is not None else relative
    return {
        "size": one,
        "sizes": sizes,
        "pixels": int(len(px)),
        "centre_distance_mean": float(dist.mean()) if len(px) and one else None,
        "centre_distance_median": float(np.median(dist)) if len(px) and one else None,
        "centre_distance_relative_mean": float(rel.mean()) if len(px) else None,
        "centre_distance_relative_median": float(np.median(rel)) if len(px) else None,
        "heatmap": heat.tolist(),
        "heatmap_units": "pixels" if one is not None else "relative",
        "relative_heatmap": relative.tolist(),
    }
