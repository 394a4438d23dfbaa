"""Session fixtures: postgres (owned by its area)."""
