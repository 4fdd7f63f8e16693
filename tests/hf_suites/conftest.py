# The stand-ins are modules of the transformers test package (imported by its suites), not project tests.
collect_ignore = ["standins"]

# markers the transformers suites use (registered by transformers' own conftest, which the sdist does not ship)
SUITE_MARKERS = ("accelerate_tests", "flash_attn_test", "flash_attn_3_test", "flash_attn_4_test", "torch_compile_test")


def pytest_configure(config):
    for marker in SUITE_MARKERS:
        config.addinivalue_line("markers", f"{marker}: a marker of transformers' common suites")
