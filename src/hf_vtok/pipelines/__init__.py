"""pipelines (filled by later issues)."""
