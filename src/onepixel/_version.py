"""The package version, on the ground floor: any layer imports it without the package facade."""

__version__ = "0.1.0"
