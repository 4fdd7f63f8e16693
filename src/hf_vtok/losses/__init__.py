"""losses (filled by later issues)."""
