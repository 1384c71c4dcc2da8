"""onepixel: one-pixel attacks and their defence on medical image classifiers.

Layers point one way: data -> models -> targets -> attack -> analysis -> defense -> report;
``serve`` and ``cli`` sit on top. Batches cross layer boundaries as numpy uint8 NHWC arrays.
"""

__version__ = "0.1.0"
