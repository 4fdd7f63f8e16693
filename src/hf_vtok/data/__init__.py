"""data (filled by later issues)."""
