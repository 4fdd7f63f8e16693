"""metrics (filled by later issues)."""
