"""Session fixtures: helm (owned by its area)."""
