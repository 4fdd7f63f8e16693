"""Stand-in of transformers' ``utils/fetch_hub_objects_for_ci.py`` (not in its sdist)."""


def url_to_local_path(url: str) -> str:
    """The CI's local copy of a Hub file; there is none here (nothing downloads), so ``url`` itself."""
    return url
