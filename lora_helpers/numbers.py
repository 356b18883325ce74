"""The course's one number style, for every number a learner reads: prose, printed lines, tables, figures.

Vietnamese writes the decimal mark as a comma and groups thousands with a dot ("10.000" is ten thousand), while
Python, the libraries and every log a learner will meet print "10000" and "0.5". Mixing the two is what makes
"1,400 GB" read as 1.4 GB. The course therefore follows ISO 80000-1, which reads the same in both traditions:

* the decimal mark is a point, as Python prints it: ``0.693``, ``1.82%``;
* digits are grouped by three with a narrow no-break space (U+202F) from five digits up: ``2 442 240``,
  ``10 000``; four digits stay whole: ``1400``;
* never a comma inside a number (``tests/test_number_style.py`` scans every notebook's Markdown and outputs);
* sizes in bytes: ``MB`` is 10⁶ bytes and ``GB`` 10⁹ (:func:`megabytes`), as disks and the Hub count them; where
  a lesson means 2²⁰ it writes ``MiB``.

This module formats them: :func:`count` (whole numbers), :func:`number` (decimals), :func:`duration` (seconds as
a learner reads them), :func:`megabytes`.
"""

from __future__ import annotations

GROUP = "\u202f"  # narrow no-break space: groups digits, never breaks a line inside a number
MB = 10**6
GB = 10**9


def _group(digits: str) -> str:
    if len(digits) < 5:
        return digits
    head = len(digits) % 3 or 3
    return GROUP.join([digits[:head]] + [digits[i:i + 3] for i in range(head, len(digits), 3)])


def number(x: float, digits: int = 0) -> str:
    """``x`` with ``digits`` decimals, thousands grouped: ``number(37234.4)`` is "37 234", ``number(0.6931, 3)``
    is "0.693"."""
    text = f"{abs(x):.{digits}f}"
    whole, _, frac = text.partition(".")
    sign = "-" if x < 0 and float(text) != 0 else ""
    return sign + _group(whole) + (f".{frac}" if frac else "")


def count(n: int) -> str:
    """A whole number, thousands grouped: ``count(2442240)`` is "2 442 240", ``count(1400)`` is "1400"."""
    return number(int(n), 0)


def signed_count(n: int) -> str:
    """A whole-number difference with its sign: "+23 040", "-5", "0"."""
    return ("+" if n > 0 else "") + count(n)


def megabytes(n_bytes: float, digits: int = 1) -> str:
    """Bytes as megabytes (10⁶ bytes): ``megabytes(538060032)`` is "538.1 MB"."""
    return f"{number(n_bytes / MB, digits)} MB"


def duration(seconds: float) -> str:
    """Seconds as a learner reads them: "40 giây" under 90 s, else whole minutes: "3 phút"."""
    return f"{seconds:.0f} giây" if seconds < 90 else f"{seconds / 60:.0f} phút"
