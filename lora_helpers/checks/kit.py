"""The check kit: every exercise check is a table of known mistakes.

A check is a function decorated with :func:`check`. It gets the learner's answer and whatever reference it
needs, computes the truth itself (never trusting a number the learner could have typed), and returns a
:class:`Table`:

* ``guard``: rows that make the answer unreadable (wrong type, missing key); tried first;
* ``right``: a predicate: the answer is right. Left out, an answer is right when no row matches;
* ``slips``: the known mistakes, in order; the first whose ``when`` holds is reported;
* ``otherwise``: (problem, hint) for a wrong answer that matches no known slip;
* ``ok``: the message of a right answer (identical on every run), ``measured`` the run's numbers.

:func:`check` adds what every check does the same way: ``None`` means "not done yet", and an answer the
table cannot even read is reported as wrong, never raised. The tests walk the same tables: the reference
answer passes, and every row's ``example`` (a wrong answer made from the reference one) is reported with that
row's hint (``tests/test_checks_kit.py``, :func:`table_of`).

What the tables share: :class:`Verdict` (raised while a table is built: a result known before any row, such as an
earlier answer not ready), :func:`first_wrong` (rows used as preconditions), :func:`edited_copy` and
:func:`scratch_dir` (a model or a folder for a row's example, never the learner's own).

Read as a teacher: each row is one sentence "if the learner did *this*, tell them *that*, and suggest *this*".
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._common import CheckResult, Verdict, _ok, _todo, _unreadable, _wrong

__all__ = ["Mistake", "Table", "Verdict", "check", "edited_copy", "first_wrong", "part_replaced", "scratch_dir", "table_of"]

_NO_VALUE = object()
_SCRATCH: list[tempfile.TemporaryDirectory] = []


@dataclass(frozen=True)
class Mistake:
    """One known mistake: ``when(answer)`` says the answer shows it; the learner reads ``problem`` and ``hint``.

    ``example(reference)`` builds an answer with this mistake from the reference answer, for the tests; a
    row made by :meth:`value` has its wrong value as example.
    """

    when: Callable[[Any], bool]
    problem: str
    hint: str
    example: Callable[[Any], Any] | None = None

    @classmethod
    def value(cls, wrong_value, problem: str, hint: str, *, truth=_NO_VALUE, same=None) -> Mistake:
        """The slip that gives exactly ``wrong_value`` (never reported when it equals ``truth``)."""
        same = same or (lambda a, b: a == b)

        def when(answer) -> bool:
            return (truth is _NO_VALUE or not same(wrong_value, truth)) and same(answer, wrong_value)

        return cls(when, problem, hint, example=lambda _reference: wrong_value)


@dataclass(frozen=True)
class Table:
    """What a check decides from: see the module docstring."""

    ok: str
    slips: Sequence[Mistake] = ()
    guard: Sequence[Mistake] = ()
    right: Callable[[Any], bool] | None = None
    otherwise: tuple[str, str] | None = None
    measured: str | None = None
    rows: list[Mistake] = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "rows", [*self.guard, *self.slips])

    def judge(self, answer) -> CheckResult:
        found = first_wrong(self.guard, answer)
        if found is not None:
            return found
        if self.right is not None and self.right(answer):
            return _ok(self.ok, self.measured)
        found = first_wrong(self.slips, answer)
        if found is not None:
            return found
        if self.right is None:
            return _ok(self.ok, self.measured)
        return _wrong(*(self.otherwise or ("đáp án chưa khớp.", "Đọc lại đề bài và làm lại từng bước.")))


def first_wrong(rows: Sequence[Mistake], answer) -> CheckResult | None:
    """The "wrong" message of the first of ``rows`` that ``answer`` shows, else None (rows used as preconditions)."""
    row = next((row for row in rows if row.when(answer)), None)
    return None if row is None else _wrong(row.problem, row.hint)


def check(build: Callable[..., Table | CheckResult]):
    """Make ``build(answer, *reference) -> Table`` an exercise check: ``None`` is "not done yet", and any error
    while reading an odd answer becomes a "wrong" message (a learner never sees a traceback from a check).

    ``build`` may return a :class:`CheckResult` itself where a table does not fit (a reference that is not
    ready, say), or raise :class:`Verdict` with one. The table stays reachable for the tests: ``table_of(check_x, answer, *reference)``.
    """

    @functools.wraps(build)
    def wrapper(answer, *args, **kwargs) -> CheckResult:
        if answer is None:
            return _todo()
        try:
            table = build(answer, *args, **kwargs)
            return table if isinstance(table, CheckResult) else table.judge(answer)
        except Verdict as early:
            return early.result
        except Exception as exc:  # noqa: BLE001 - any failure reading the answer is reported to the learner
            return _unreadable(exc)

    wrapper.build = build
    return wrapper


def edited_copy(model, edit):
    """A deep copy of ``model`` changed by ``edit(copy)`` under ``no_grad``: how a row's example builds a wrong
    answer from the reference model without touching the learner's model."""
    import copy

    import torch

    twin = copy.deepcopy(model)
    with torch.no_grad():
        edit(twin)
    return twin


def part_replaced(i: int, value):
    """A row's example for a check whose answer is a tuple of parts: the reference with part ``i`` replaced by
    ``value(reference)``."""
    return lambda reference: tuple(value(reference) if j == i else part for j, part in enumerate(reference))


def scratch_dir() -> Path:
    """A new temporary folder for a row's example (a saved adapter, a folder copy), removed when Python exits."""
    folder = tempfile.TemporaryDirectory()
    _SCRATCH.append(folder)  # kept alive until exit: the walk reads the folder after the example returns
    return Path(folder.name)


def table_of(check_function, answer, *args, **kwargs) -> Table:
    """The table a check decides ``answer`` from (for tests and for a teacher reading the rows)."""
    return check_function.build(answer, *args, **kwargs)
