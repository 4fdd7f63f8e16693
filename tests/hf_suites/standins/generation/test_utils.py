"""Stand-in of transformers' ``tests/generation/test_utils.py`` (not in its sdist)."""


class GenerationTesterMixin:
    """Named by ``ModelTesterMixin.test_generation_tester_mixin_inheritance``: a model that cannot ``generate``
    must not have a tester deriving from it (none of the tokenizers can)."""
