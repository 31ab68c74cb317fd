"""Small shared helpers (devices, dtypes, atomic file writes, versions)."""
