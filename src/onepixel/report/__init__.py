"""The self-contained HTML report of a whole study."""
