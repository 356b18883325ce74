"""One Vietnamese term per idea (docs/thuat_ngu.md): the drifts a careful reader found, flagged wherever they come back.

Scans the Markdown (code spans and formulas masked) and the outputs of every lesson, solution and exercise notebook.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [p for d in ("notebooks", "solutions", "exercises") for p in sorted((ROOT / d).glob("*.ipynb"))]

# (pattern, what the glossary says instead)
DRIFTS = [
    (r"\b[Ll]ô trộn\b", "một lô có nhiều bộ điều hợp (`adapter_names`) là «lô nhiều bộ điều hợp»; «trộn» chỉ dành cho "
                        "`add_weighted_adapter`"),
    (r"\bdữ liệu trộn\b", "«dữ liệu gộp nhiều tác vụ»"),
    (r"\bkết hợp (?:hai |các |nhiều )?bộ điều hợp\b|\bbộ kết hợp\b", "`add_weighted_adapter` là «trộn bộ điều hợp»"),
    (r"(?<![\w`_])vector(?![\w`_(])", "«vectơ» trong câu tiếng Việt"),
    (r"\bmô hình bộ nhớ\b|\bMô hình thô\b", "«mô hình» là mô hình ngôn ngữ; một phép tính gần đúng là «ước lượng»"),
    (r"\bsố hạng hạng thấp\b", "«ma trận hiệu chỉnh có hạng thấp»"),
]
MASKED = [re.compile(r"(`+).+?\1", re.DOTALL), re.compile(r"\$.+?\$", re.DOTALL), re.compile(r"<[^>\n]*>"),
          re.compile(r"\]\([^)]*\)")]


def drifts_in(text: str) -> list[str]:
    for pattern in MASKED:
        text = pattern.sub(" ", text)
    return [m.group() for pattern, _ in DRIFTS for m in re.finditer(pattern, text)]


def test_the_scanner_finds_each_drift():
    assert drifts_in("Một lô trộn, dữ liệu trộn, bộ kết hợp, một vector, Mô hình thô, số hạng hạng thấp") == [
        "lô trộn", "dữ liệu trộn", "bộ kết hợp", "vector", "Mô hình thô", "số hạng hạng thấp"]
    assert drifts_in("`vector` và `lô trộn` trong mã; vectơ; trộn bộ điều hợp bằng `add_weighted_adapter`") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_known_term_drift(path):
    notebook = nbformat.read(path, as_version=4)
    found = []
    for index, cell in enumerate(notebook.cells):
        texts = [cell.source] if cell.cell_type == "markdown" else [
            out.get("text", "") for out in cell.get("outputs", []) if out.get("output_type") == "stream"]
        found += [(index, d) for text in texts for d in drifts_in(text)]
    hints = {pattern: hint for pattern, hint in DRIFTS}
    assert not found, f"{path.name}: {found}; theo docs/thuat_ngu.md: " + "; ".join(
        hint for pattern, hint in hints.items() if any(re.search(pattern, d) for _, d in found))
