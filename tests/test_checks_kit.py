"""The check kit itself: the result object, odd answers reported (never raised), run numbers off the compared line, a test for every check."""

import re
from pathlib import Path

from lora_helpers import checks


# --------------------------------------------------------------------------- the result object
def test_result_prints_its_message_in_ipython(capsys):
    result = checks._ok("xong")
    assert bool(result) and str(result) == repr(result) == "✅ Đúng rồi! xong"
    result._ipython_display_()
    assert capsys.readouterr().out.strip() == "✅ Đúng rồi! xong"
    assert not checks._wrong("a", "b") and not checks._todo("x")


def test_check_messages_keep_run_numbers_off_the_compared_line():
    """nbval compares check cells: the numbers of a run go on the line tests/sanitize.cfg masks."""
    import configparser

    from lora_helpers.checks._common import MEASURED, _ok

    message = _ok("Đúng ý.", "loss 0.123").message
    assert message.splitlines()[0] == "✅ Đúng rồi! Đúng ý." and message.splitlines()[1].startswith(MEASURED)
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).parent / "sanitize.cfg", encoding="utf-8")
    pattern = next(cfg[s]["regex"] for s in cfg.sections() if MEASURED.strip() in cfg[s]["regex"])
    masked = re.sub(pattern, "X", message)
    assert "0.123" not in masked and "Đúng ý" in masked


def test_every_check_has_a_test():
    """A new check without a test in tests/test_checks*.py is a defect: list them all there."""
    from pathlib import Path

    here = Path(__file__).parent
    source = "\n".join(p.read_text(encoding="utf-8") for p in sorted(here.glob("test_checks*.py")))
    names = [n for n, f in vars(checks).items() if n.startswith("check_") and callable(f)]
    assert len(names) >= 14
    for name in names:
        walked = source.count(f"walk_table({name},")  # a table walk tests every row of the check
        assert walked or source.count(f"{name}(") >= 3, f"{name} has no accept/reject tests"


def test_one_slug_per_lesson_for_checks_and_their_tests():
    """Each lesson's checks live in lora_helpers/checks/<notebook>.py and are tested in tests/test_checks_<notebook>.py;
    their docstrings name lessons by notebook, never by a number that goes stale when lessons are reordered."""
    root = Path(__file__).resolve().parent.parent
    slugs = {p.stem for p in (root / "notebooks").glob("*.ipynb")}
    modules = {p.stem for p in (root / "lora_helpers" / "checks").glob("*.py")} - {"__init__", "_common", "kit"}
    assert modules == slugs
    tests = {p.stem.removeprefix("test_checks_") for p in (root / "tests").glob("test_checks_*.py")} - {"kit"}
    assert tests == slugs
    numbered = re.compile(r"\b(lesson|bài)[ -]\d", re.IGNORECASE)
    for path in [*(root / "lora_helpers" / "checks").glob("*.py"), *(root / "tests").glob("test_checks_*.py")]:
        assert not numbered.findall(path.read_text(encoding="utf-8")), f"{path.name} names a lesson by number"


def test_kit_helpers_preconditions_verdict_and_scratch_folders():
    """first_wrong reports the first row shown; a Verdict raised while a table is built is the check's result;
    scratch_dir gives a new, empty folder each time."""
    from lora_helpers.checks.kit import Mistake, Table, Verdict, check, first_wrong, scratch_dir

    rows = [Mistake(lambda a: a < 0, "âm.", "dương"), Mistake(lambda a: a < 10, "nhỏ.", "lớn")]
    assert first_wrong(rows, 20) is None and "nhỏ." in first_wrong(rows, 5).message

    @check
    def check_big(answer) -> Table:
        if answer == "?":
            raise Verdict(checks._todo("chưa rõ"))
        return Table(slips=rows, ok="lớn.")

    assert check_big(20) and "chưa rõ" in check_big("?").message and "không đọc được" in check_big([]).message
    first, second = scratch_dir(), scratch_dir()
    assert first != second and first.is_dir() and not any(first.iterdir())
