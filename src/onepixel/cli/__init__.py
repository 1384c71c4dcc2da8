"""The ``onepixel`` command line."""
