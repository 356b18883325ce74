"""Every number in a lesson's prose comes from its run, or says where it comes from.

The course promises that every figure a learner reads was produced by the notebook in front of them. This test reads
the Markdown cells of every lesson (``notebooks/``) and solution notebook (``solutions/``) and fails when a number is
neither shown by an output of that notebook nor marked as a citation.

Rules (documented for teachers in CONTRIBUTING.md):

* A *number* is a run of digits with optional thousands separators, decimal part (point or Vietnamese comma),
  exponent (``2.0e-4``, ``10⁻³``, ``1,2·10⁻⁷``), multiplier (``4,7M``, ``175B``) and percent sign. Units written after
  it (``470 s``, ``9.4 MB``) do not matter for matching. A digit glued to a word (``float32``, ``SmolLM2-135M``,
  ``GPT-3``, ``2r``, ``4-bit``) is part of a name, not a number. The sign is ignored (dashes mostly mean ranges).
* Not numbers of the text: heading and list numbering; the index after "Bài", "Bài tập", "Câu", "mục", "phần",
  "bảng", "hình", "chương", "bước", "hàng", "cột"; anything inside inline code spans, fenced code blocks,
  ``$...$``/``$$...$$`` formulas (definitions), HTML tags and comments, link targets, URLs, arXiv ids, and the year of
  an author-year citation such as "(Hu và cộng sự, 2021)"; a plain-text formula term, i.e. a number joined by an
  operator to a one-letter symbol ("B = 0", "r − 1", "1/β", "r=16") or after log/ln ("log 2").
* A *citation* is ``<sup>nguồn: …</sup>`` placed after the figure in the same sentence (table cell, list item):
  every number before the marker in that sentence is cited, and the marker's own text is exempt.
* A number is *shown by an output* when the same value appears in the text of an output of the same notebook
  (stream text; ``text/plain`` or ``text/markdown`` of ``display_data``/``execute_result``). Both sides are read
  both ways: ``0,693`` = ``0.693``, ``10.000`` = ``10,000`` = ``10000``, ``2.0e-4`` = ``0.0002``; a version printed
  as ``5.23.0`` also shows ``5`` and ``5.23``. A number written with ``%`` needs a ``%`` in the output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))

CITATION = re.compile(r"<sup>\s*nguồn\s*:.*?</sup>", re.IGNORECASE | re.DOTALL)

# Spans whose numbers are not prose numbers; each is blanked (same length, newlines kept) before numbers are read.
_EXEMPT_SPANS = [
    re.compile(r"<!--.*?-->", re.DOTALL),                                  # HTML comments
    re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.DOTALL | re.MULTILINE),   # fenced code blocks
    re.compile(r"(`+).+?\1", re.DOTALL),                                   # inline code spans
    re.compile(r"\$\$.+?\$\$", re.DOTALL),                                 # display math
    re.compile(r"(?<![\\$])\$(?!\s).+?(?<![\s\\])\$(?!\d)", re.DOTALL),    # inline math
    re.compile(r"<[A-Za-z/][^>\n]*>"),                                      # HTML tags and their attributes
    re.compile(r"\]\([^)\s]*(?:\s+\"[^\"]*\")?\)"),                         # link and image targets
    re.compile(r"^\s*\[[^\]]+\]:\s*\S+.*$", re.MULTILINE),                  # reference-style link definitions
    re.compile(r"\b(?:https?|ftp)://[^\s)>\]]+"),                          # bare URLs
    re.compile(r"\barXiv\s*:?\s*\d{4}\.\d{4,5}(?:v\d+)?", re.IGNORECASE),  # arXiv ids
]
# Only the number group (1) of these is blanked: the structure of the text, not a measured value.
_EXEMPT_NUMBERS = [
    re.compile(r"^[ \t]*#{1,6}[ \t]+(\d+(?:\.\d+)*\.?)", re.MULTILINE),   # heading numbering: "## 5."
    re.compile(r"^[ \t]*(?:>[ \t]*)?(\d+[.)])[ \t]", re.MULTILINE),       # ordered-list numbering: "1. ", "2) "
    re.compile(r"\b(?:[Bb]ài(?: tập)?|[Cc]âu|[Mm]ục|[Pp]hần|[Bb]ảng|(?<![Mm]ô )[Hh]ình|[Cc]hương|[Bb]ước|[Hh]àng|[Cc]ột)[ \t]+"
               r"(\d+(?:[ \t]*(?:,|và|–|-)[ \t]*\d+)*)"),                   # "Bài 2", "mục 5", "câu 3", "bước 0"
    re.compile(r"(?<=[^\W\d_], )((?:19|20)\d{2})[a-z]?(?=[),;])"),          # year of "(Hu và cộng sự, 2021)"
    # a plain-text formula term: a number joined by an operator to a one-letter symbol ("B = 0", "r − 1", "1/β",
    # "r=16", "2·r") or the argument of log/ln ("log 2"): part of a definition, like the numbers inside $...$
    re.compile(r"(?<![\w.,])(?:[A-Za-zα-ωΑ-Ω][₀-₉′']*[ \t]?[=≠≤≥<>+−×·/-]|\b(?:log|ln))[ \t]?(\d+(?:[.,]\d+)?)"
               r"(?![\w.,]?\d)"),
    re.compile(r"(?<![\w.,])(\d+(?:[.,]\d+)?)[ \t]?[+−×·/-][ \t]?[A-Za-zα-ωΑ-Ω](?![^\W\d_])"),
]

_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
NUMBER = re.compile(
    r"(?<![\w.,])(?<!\w[-‑])"                       # not inside a name ("float32", "GPT-3") or another number
    r"(?P<core>\d+(?:\u202f\d{3})*(?:[.,]\d+)*)"     # digits, thousands groups (narrow space or . ,), decimals
    r"(?:[eE](?P<exp>[-+−]?\d+)"                    # exponent: 2.0e-4
    r"|[·×x]10(?P<sup>[⁻⁺]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+)"          # or ·10⁻⁷
    r"|(?P<bare_sup>(?<=10)[⁻⁺]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+))?"   # or 10⁻³
    r"(?P<mult>[kKMBGT](?![A-Za-z]))?"              # 4,7M, 175B, 49k
    r"(?:[x×](?![A-Za-z]))?"                          # 55x, 10×: "times", same value
    r"(?![\w-]*[^\W\d_])"                           # "2r", "4-bit", "3D": names, not numbers
    r"(?P<pct>\s?%)?"
)
_MULTIPLIER = {"k": 3, "K": 3, "M": 6, "B": 9, "G": 9, "T": 12}


@dataclass(frozen=True)
class ProseNumber:
    """A number found in a Markdown cell: its text, the sentence around it, whether a citation covers it."""

    text: str
    sentence: str
    cited: bool
    keys: frozenset


def _blank(text: str, start: int, end: int) -> str:
    """``text`` with ``[start, end)`` replaced by a filler that is neither a word nor a space (lines kept)."""
    return text[:start] + re.sub(r"[^\n]", "\x01", text[start:end]) + text[end:]


def _core_values(core: str) -> set[Decimal]:
    """Every value ``core`` can mean, reading ``.`` and ``,`` both as decimal mark and as thousands separator."""
    seps = re.findall(r"[.,]", core)
    groups = re.split(r"[.,]", core)
    if not seps:
        return {Decimal(core)}
    values = set()
    thousands_ok = 1 <= len(groups[0]) <= 3 and not (groups[0] == "0") and all(len(g) == 3 for g in groups[1:])
    if len(set(seps)) == 1:
        if thousands_ok:
            values.add(Decimal("".join(groups)))
        if len(seps) == 1:
            values.add(Decimal(f"{groups[0]}.{groups[1]}"))
    else:
        last = core[max(core.rfind("."), core.rfind(","))]
        head, tail = core.rsplit(last, 1)
        head_groups = re.split(r"[.,]", head)
        if all(s != last for s in re.findall(r"[.,]", head)) and all(len(g) == 3 for g in head_groups[1:]):
            values.add(Decimal(f"{''.join(head_groups)}.{tail}"))
    return values


def number_keys(match: re.Match, versions: bool = False) -> frozenset:
    """Comparable keys of a ``NUMBER`` match: ("%" or "", normalised value); ``versions`` adds the prefixes of a
    dotted version (an output printing 5.23.0 shows 5 and 5.23)."""
    core = match["core"].replace("\u202f", "")       # "2 442 240": the course's grouping (lora_helpers.numbers)
    exponent = 0
    if match["exp"]:
        exponent = int(match["exp"].replace("−", "-"))
    elif match["sup"] or match["bare_sup"]:
        exponent = int((match["sup"] or match["bare_sup"]).translate(_SUPERSCRIPT))
        if match["bare_sup"]:
            core = "1"                                       # 10⁻³ is 1·10⁻³
    exponent += _MULTIPLIER.get(match["mult"] or "", 0)
    pct = "%" if match["pct"] else ""
    keys = set()
    for value in _core_values(core):
        try:
            keys.add((pct, str((value.scaleb(exponent)).normalize())))
        except InvalidOperation:  # pragma: no cover - absurd exponents
            pass
    if versions and core.count(".") >= 2 and "," not in core:
        major, minor = core.split(".")[:2]
        keys |= {("", str(Decimal(major).normalize())), ("", str(Decimal(f"{major}.{minor}").normalize()))}
    return frozenset(keys)


_SENTENCE_BREAKS = [
    re.compile(r"(?m)(?<=[.!?…])(?<!^\d[.)])(?<!^\d\d[.)])\s+(?=\S)"),  # end of a sentence (not "4. " of a list)
    re.compile(r"\n\s*\n"),                                          # paragraph
    re.compile(r"\n(?=[ \t]*(?:[-*+]|\d+[.)]|#|\||>)\s)"),           # before a list item, heading, table row, quote
    re.compile(r"(?m)^[ \t]*#[^\n]*(\n)"),                             # after a heading (group 1)
    re.compile(r"\|"),                                                # table cell
]


def _sentences(masked: str):
    """(start, end) of each sentence-like unit: sentences, list items, headings, table cells, paragraphs."""
    breaks = sorted({m.span(m.re.groups) for pattern in _SENTENCE_BREAKS for m in pattern.finditer(masked)})
    start = 0
    for b_start, b_end in breaks:
        if b_start >= start:
            yield start, b_start
            start = b_end
    yield start, len(masked)


def prose_numbers(source: str) -> list[ProseNumber]:
    """The numbers of a Markdown cell's text, with exemptions applied and citations recognised."""
    masked = source
    markers = [m.span() for m in CITATION.finditer(masked)]
    for start, end in markers:
        masked = masked[:start] + "\0" * (end - start) + masked[end:]
    for pattern in _EXEMPT_SPANS:
        for m in pattern.finditer(masked):
            masked = _blank(masked, *m.span())
    sentences = list(_sentences(masked))          # before list numbers are blanked: they start list items
    for pattern in _EXEMPT_NUMBERS:
        for m in pattern.finditer(masked):
            masked = _blank(masked, *m.span(1))
    found = []
    for s_start, s_end in sentences:
        for m in NUMBER.finditer(masked, s_start, s_end):
            cited = "\0" in masked[m.end():s_end]
            sentence = " ".join(source[s_start:s_end].split())
            found.append(ProseNumber(m.group(0).strip(), sentence, cited, number_keys(m)))
    return found


def output_text(cell) -> str:
    """The text of a code cell's outputs that a learner reads."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("display_data", "execute_result"):
            data = out.get("data", {})
            for mime in ("text/plain", "text/markdown"):
                value = data.get(mime, "")
                parts.append("".join(value) if isinstance(value, list) else value)
    return "\n".join(parts)


def shown_keys(nb) -> set:
    """Keys of every number printed by any output of ``nb``."""
    keys = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for m in NUMBER.finditer(output_text(cell)):
            keys |= number_keys(m, versions=True)
    # a number printed as "95%" also shows the bare 95 the prose may use in "95 điểm" etc.
    return keys | {("", value) for _, value in keys}


def drifted_numbers(nb, name: str = "notebook") -> list[str]:
    """One message per Markdown number that is neither shown by an output of ``nb`` nor cited."""
    shown = shown_keys(nb)
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for number in prose_numbers(cell.source):
            if not number.cited and not number.keys & shown:
                problems.append(f"{name}, cell {index}: {number.text!r} in «{number.sentence}»")
    return problems


HOW_TO_FIX = (
    "\nEvery number in a Markdown cell must come from this run or say where it comes from. For each number above: "
    "print it from the run (a code cell) and let the prose point to the output without repeating it; or, for a "
    "figure from a paper or the docs, or one true on every run, mark it with <sup>nguồn: …</sup> after it in the same "
    "sentence; a code value goes in a `code span`; or remove it. See CONTRIBUTING.md."
)


def drift_message(problems: list[str]) -> str:
    """The failure message: every offending number with its place and sentence, then what to do."""
    return f"{len(problems)} prose number(s) not shown by an output:\n" + "\n".join(problems) + HOW_TO_FIX


def _check(path: Path):
    nb = nbformat.read(path, as_version=4)
    problems = drifted_numbers(nb, str(path.relative_to(ROOT)))
    assert not problems, drift_message(problems)


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_prose_numbers_come_from_the_run(path):
    _check(path)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_prose_numbers_come_from_the_run(path):
    _check(path)


# ---- the rules themselves, on synthetic notebooks ----

def _notebook(markdown: str, printed: str):
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("print(accuracy)", execution_count=1)
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
    nb.cells = [code, nbformat.v4.new_markdown_cell(markdown)]
    return nb


def test_a_drifted_number_fails_and_says_where():
    problems = drifted_numbers(_notebook("Độ chính xác trên tập kiểm tra là 0.71.", "accuracy 0.61\n"), "demo.ipynb")
    assert problems == ["demo.ipynb, cell 1: '0.71' in «Độ chính xác trên tập kiểm tra là 0.71.»"]


def test_the_failure_message_says_what_to_do():
    message = drift_message(drifted_numbers(_notebook("Độ chính xác là 0.71.", "accuracy 0.61\n"), "demo.ipynb"))
    assert message.startswith("1 prose number(s) not shown by an output:\ndemo.ipynb, cell 1: '0.71'")
    for advice in ("print it from the run", "<sup>nguồn: …</sup>", "remove it"):
        assert advice in message


def test_the_printed_number_passes_with_either_decimal_mark():
    assert drifted_numbers(_notebook("Độ chính xác trên tập kiểm tra là 0.61.", "accuracy 0.61\n")) == []
    assert drifted_numbers(_notebook("Độ chính xác là 0,61 (in ở trên).", "accuracy 0.61\n")) == []
    assert drifted_numbers(_notebook("Bộ điều hợp có 2.442.240 tham số.", "2,442,240 params\n")) == []
    assert drifted_numbers(_notebook("Tốc độ học 2.0e-4 và 1e-3.", "lr=0.0002, lr=0.001\n")) == []
    assert drifted_numbers(_notebook("Loss = 0,693 lúc đầu.", "loss 0.6931\n")) != []   # rounding is not showing


def test_percent_needs_a_percent_in_the_output():
    assert drifted_numbers(_notebook("Đạt 95%.", "accuracy 95%\n")) == []
    assert drifted_numbers(_notebook("Đạt 3,63%.", "3.63%\n")) == []
    assert drifted_numbers(_notebook("Đạt 0%.", "diff 0\n")) != []


def test_the_citation_marker_covers_the_numbers_before_it_in_its_sentence():
    cited = ("Bài báo đo 1,2 TB → 350 GB<sup>nguồn: Hu và cộng sự, 2021, arXiv:2106.09685, mục 4.2</sup>. "
             "Ở 135 tham số thì khác.")
    problems = drifted_numbers(_notebook(cited, "nothing\n"))
    assert [p.split(": ", 1)[1].split(" in ")[0] for p in problems] == ["'135'"]
    assert drifted_numbers(_notebook("Số 42 <sup>nguồn: tài liệu PEFT</sup> được trích.", "")) == []
    # a marker without "nguồn:" is not a citation, and a marker covers nothing after it
    assert drifted_numbers(_notebook("Số 42<sup>1</sup> không được trích.", "")) != []
    assert drifted_numbers(_notebook("Xem<sup>nguồn: docs</sup> số 42.", "")) != []


def test_structure_code_math_links_and_names_are_not_prose_numbers():
    markdown = "\n".join([
        "## 5. Huấn luyện (Bài 2, mục 3, câu 4, bước 0)",
        "1. `LoraConfig(r=4)` với `lora_alpha=8`; ```x = 3```",
        "2) công thức $W' = W + 2 BA$ và $$y = 16 x$$",
        "- xem [bài 5](../notebooks/x5.ipynb), https://arxiv.org/abs/2106.09685, arXiv:2106.09685",
        "- <img src='a1.png' width=720/> <!-- 99 -->",
        "- B = 0 nên loss = log 2; hàng 0 đến r − 1, r + 1 thành phần, gấp 1/β lần, r=4 và r=16, alpha = 2·r",
        "- float32, bfloat16, SmolLM2-135M-Instruct, GPT-3, hạng 2r, 4-bit (Hu và cộng sự, 2021), hình 3",
        "```python", "N = 12345", "```",
    ])
    assert prose_numbers(markdown) == []


def test_numbers_in_prose_are_found_with_their_units_and_exponents():
    texts = [n.text for n in prose_numbers("Chạy 470 s, tệp 9.4 MB, 4,7M tham số, ngưỡng 10⁻³ (1,2·10⁻⁷); 95%; 55x.")]
    assert texts == ["470", "9.4", "4,7M", "10⁻³", "1,2·10⁻⁷", "95%", "55x"]
    assert [n.text for n in prose_numbers("một mô hình 7B")] == ["7B"]          # "mô hình" is not "hình 7"
    assert [n.text for n in prose_numbers("loss = 0.5, GPT-3 = 175B")] == ["0.5", "175B"]   # only one-letter symbols
    keys = {k for n in prose_numbers("ngưỡng 10⁻³") for k in n.keys}
    assert ("", "0.001") in keys
