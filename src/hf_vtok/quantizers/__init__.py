"""quantizers (filled by later issues)."""
