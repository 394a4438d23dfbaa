"""Session fixtures: serve (owned by its area)."""
