"""One number style everywhere a learner reads numbers (``lora_helpers.numbers``, CONTRIBUTING.md, docs/thuat_ngu.md).

Vietnamese reads "1,400" as 1.4 and "10.000" as ten thousand; Python prints the opposite. The course writes numbers
the ISO way, which reads the same in both: a decimal point, and digits grouped by three with a narrow no-break space
(``2 442 240``). This test scans the Markdown and the outputs of every lesson, solution and exercise notebook, and
the figures' labels, for the forms a Vietnamese reader would misread:

* a comma inside a number: ``1,400`` / ``2,442,240`` (thousands, English style) or ``0,693`` (decimal, Vietnamese);
* in Markdown, digits grouped with an ordinary space (``10 000``), which a line break can split.

peft's own ``print_trainable_parameters`` line is the library's output, shown as it is.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from lora_helpers import numbers

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [p for d in ("notebooks", "solutions", "exercises") for p in sorted((ROOT / d).glob("*.ipynb"))]

COMMA_IN_NUMBER = re.compile(r"(?<![\w.,])\d+(?:,\d+)+(?![\w,])")
SPACE_GROUPED = re.compile(r"(?<![\w.,])\d{1,3}(?: \d{3})+(?![\w.,])")
LIBRARY_LINES = re.compile(r"^trainable params: .*$", re.MULTILINE)   # peft prints this line itself
MASKED = [re.compile(r"(`+).+?\1", re.DOTALL), re.compile(r"\$.+?\$", re.DOTALL), re.compile(r"<[^>\n]*>"),
          re.compile(r"\]\([^)]*\)")]


def _outputs(cell) -> str:
    texts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            texts.append(out["text"])
        for mime in ("text/plain", "text/markdown"):
            if mime in out.get("data", {}):
                texts.append(out["data"][mime])
    return "\n".join(texts)


def ambiguous_numbers(text: str, markdown: bool) -> list[str]:
    """The number forms in ``text`` that a reader could misread (see the module docstring)."""
    text = LIBRARY_LINES.sub("", text)
    if markdown:
        for pattern in MASKED:
            text = pattern.sub(" ", text)
    found = [m.group() for m in COMMA_IN_NUMBER.finditer(text)]
    if markdown:
        found += [m.group() for m in SPACE_GROUPED.finditer(text)]
    return found


def test_the_scanner_catches_each_form():
    assert ambiguous_numbers("1,400 GB và 0,693 và 2,442,240", markdown=False) == ["1,400", "0,693", "2,442,240"]
    assert ambiguous_numbers("khoảng 10 000 lần", markdown=True) == ["10 000"]
    assert ambiguous_numbers("khoảng 10\u202f000 lần, 0.693, (576, 192), [1, 2]", markdown=True) == []
    assert ambiguous_numbers("trainable params: 2,442,240 || all params: 136,957,248", markdown=False) == []
    assert ambiguous_numbers("`f\"{n:,}\"` in code is fine", markdown=True) == []


def test_the_formatter_writes_the_course_style():
    assert numbers.count(2442240) == "2\u202f442\u202f240" and numbers.count(1400) == "1400"
    assert numbers.number(0.69314, 3) == "0.693" and numbers.number(37234.04) == "37\u202f234"
    assert numbers.number(-12345.6, 1) == "-12\u202f345.6" and numbers.signed_count(23040) == "+23\u202f040"
    assert numbers.megabytes(538_060_032) == "538.1 MB" and numbers.duration(40) == "40 giây"
    assert numbers.duration(180) == "3 phút"
    for text in (numbers.count(10**9), numbers.number(1234567.891, 2)):
        assert ambiguous_numbers(text, markdown=True) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_ambiguous_number_in_a_notebook(path):
    notebook = nbformat.read(path, as_version=4)
    problems = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            problems += [(index, "markdown", n) for n in ambiguous_numbers(cell.source, markdown=True)]
        elif cell.cell_type == "code":
            problems += [(index, "output", n) for n in ambiguous_numbers(_outputs(cell), markdown=False)]
    assert not problems, (f"{path.name}: số viết dễ đọc nhầm (ô, loại, số): {problems}. Viết theo lora_helpers.numbers: "
                          "dấu chấm thập phân, nhóm ba chữ số bằng khoảng trắng hẹp (fmt.count, fmt.number).")


def test_figure_labels_use_the_course_style():
    from scripts import make_figures

    assert make_figures.fmt(134_515_008) == numbers.count(134_515_008)
    source = (ROOT / "scripts" / "make_figures.py").read_text(encoding="utf-8")
    assert not re.search(r":[<>^]?\d*,[.\d]*[df]?\}", source), "make_figures.py formats a number with `:,`"
