"""Virtual keys and the principals they stand for."""
