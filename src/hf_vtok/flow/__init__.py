"""flow (filled by later issues)."""
