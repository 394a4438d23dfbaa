"""Session fixtures: kafka (owned by its area)."""
