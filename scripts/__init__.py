"""Repository maintenance scripts (not part of the package)."""
