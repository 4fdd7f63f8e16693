"""On/off switches read from the environment (``HF_VTOK_FAST_LINEAR``, ``HF_VTOK_FAST_ATTENTION``, ...)."""

import os

OFF_VALUES = ("0", "false", "no", "off")


def env_switch(name: str) -> bool:
    """Whether the switch ``name`` is on: unset or any value but ``0`` / ``false`` / ``no`` / ``off`` (any case)."""
    return os.environ.get(name, "1").strip().lower() not in OFF_VALUES
