"""hf_vtok.utils.tables: the markdown results table writes counts as whole numbers."""

import math

from hf_vtok.utils.tables import format_cell, markdown_table


def test_cells_of_counts_and_means():
    assert [format_cell(value) for value in (1024.0, 1024, 950.4333, "vitok", None, math.inf)] == [
        "1024",
        "1024",
        "950.43",
        "vitok",
        "",
        "inf",
    ]


def test_table_rows():
    rows = [{"name": "a", "tokens": 256.0, "psnr": 30.123}, {"name": "b", "tokens": 950.4333, "psnr": math.inf}]
    table = markdown_table(rows, [("name", "tokenizer"), ("tokens", "tokens / image")], ["psnr"])
    assert table.splitlines() == [
        "| tokenizer | tokens / image | PSNR ↑ |",
        "|---|---|---|",
        "| a | 256 | 30.12 |",
        "| b | 950.43 | ∞ |",
    ]
