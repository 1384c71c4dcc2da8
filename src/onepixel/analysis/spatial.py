"""Spatial analysis: where in the image the attacks put their pixels."""

from __future__ import annotations

from typing import Any

import numpy as np

from onepixel.analysis.loading import AttackTable
from onepixel.config import IMAGE_SIZE


def location_heatmap(table: AttackTable, size: int = IMAGE_SIZE) -> np.ndarray:
    """Return (size, size) int64 counts of attack pixels, indexed [y, x]."""
    px = table.pixels_view()
    inside = (px.x >= 0) & (px.x < size) & (px.y >= 0) & (px.y < size)
    if not inside.all():
        bad = np.flatnonzero(~inside)[0]
        raise ValueError(
            f"attack on {table.image_id[px.record[bad]]!r} has pixel ({px.x[bad]}, {px.y[bad]}) "
            f"outside a {size}x{size} image"
        )
    counts = np.bincount(px.y * size + px.x, minlength=size * size)
    return counts.reshape(size, size).astype(np.int64)


def spatial_analysis(table: AttackTable, size: int = IMAGE_SIZE) -> dict[str, Any]:
    """Return the heatmap (list of rows, [y][x]) and the distance of attack pixels from the centre."""
    heat = location_heatmap(table, size)
    px = table.pixels_view()
    centre = (size - 1) / 2
    dist = np.hypot(px.x - centre, px.y - centre)
    return {
        "size": size,
        "pixels": int(len(px)),
        "centre_distance_mean": float(dist.mean()) if len(px) else None,
        "centre_distance_median": float(np.median(dist)) if len(px) else None,
        "heatmap": heat.tolist(),
    }
