"""Flower's quickstart-numpy shape, with one timestamp per round (see pyproject.toml)."""
