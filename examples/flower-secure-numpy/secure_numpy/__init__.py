"""A NumPy Flower app with switchable secure aggregation (see pyproject.toml)."""
