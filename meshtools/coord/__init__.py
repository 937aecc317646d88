"""coord: the filesystem-backed session registry and inbox (no Redis needed)."""
