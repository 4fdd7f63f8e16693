"""Stand-in of transformers' ``tests/exporters/test_export.py`` (not in its sdist): a base class without tests."""


class ExportTesterMixin:
    """``ModelTesterMixin``'s base. The exporter tests need ``transformers.exporters`` backends absent here."""
