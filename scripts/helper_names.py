"""The table of every ``lora_helpers`` name a learner meets in a notebook: name, what it does, which lessons use it.

Read from the notebooks themselves (their ``from lora_helpers... import`` lines and the ``numbers`` module's
attributes used through its alias), so it cannot drift from them; ``tests/test_repository.py`` checks that
``docs/helpers.md`` is this script's output and that the count of names does not grow.

    python scripts/helper_names.py           # print the table
    python scripts/helper_names.py --write   # write docs/helpers.md
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "helpers.md"


def _code(notebook: Path) -> str:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] == "code":
            lines += [line for line in "".join(cell["source"]).splitlines() if not line.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def _defining_module(module: str, name: str) -> str:
    """The module that defines ``name`` when a notebook imports it from the package's top level (re-exports)."""
    if module != "lora_helpers":
        return module
    import lora_helpers

    obj = getattr(lora_helpers, name, None)
    defined = getattr(obj, "__module__", None) if callable(obj) else None
    if name in getattr(lora_helpers, "_MODULE_OF", {}):
        return f"lora_helpers.{lora_helpers._MODULE_OF[name]}"
    return defined if defined and defined.startswith("lora_helpers") else module


def names_used() -> dict[tuple[str, str], set[str]]:
    """(module, name) -> the lesson slugs whose lesson, solutions or exercises notebook uses it."""
    used: dict[tuple[str, str], set[str]] = defaultdict(set)
    for folder, suffix in (("notebooks", ""), ("solutions", "_solutions"), ("exercises", "_exercises")):
        for notebook in sorted((ROOT / folder).glob("*.ipynb")):
            slug = notebook.stem.removesuffix(suffix)
            tree = ast.parse(_code(notebook))
            aliases = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lora_helpers"):
                    for alias in node.names:
                        module = node.module
                        if importlib.util.find_spec(f"{module}.{alias.name}") if module == "lora_helpers" else False:
                            aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
                            continue
                        used[(_defining_module(module, alias.name), alias.name)].add(slug)
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                    used[(aliases[node.value.id], node.attr)].add(slug)
    return used


def _summary(module: str, name: str) -> str:
    obj = getattr(importlib.import_module(module), name)
    doc = inspect.getdoc(obj) if (inspect.isfunction(obj) or inspect.isclass(obj)) else None
    if not doc:
        return "(hằng số)" if not callable(obj) else ""
    return doc.split("\n\n")[0].replace("\n", " ").replace("|", "\\|")


def table() -> str:
    used = names_used()
    lessons = sorted({slug for slugs in used.values() for slug in slugs})
    helpers = {k: v for k, v in used.items() if not k[0].startswith("lora_helpers.checks")}
    checks = {k: v for k, v in used.items() if k[0].startswith("lora_helpers.checks")}
    out = [
        "# Các hàm của `lora_helpers` mà người học gặp",
        "",
        "Sinh bởi `python scripts/helper_names.py --write` từ chính các notebook (bài học, lời giải, bài tập); đừng sửa "
        "tay. Cột \"bài\" là tên notebook. Mỗi hàm chỉ lo phần vặt (tìm mô hình ngoại tuyến, đo, vẽ, chấm); lời gọi "
        "`transformers`/`peft`/`trl` mà bài dạy luôn được viết ra trong bài.",
        "",
        f"{len(helpers)} tên trợ giúp và {len(checks)} hàm kiểm tra bài tập, dùng trong {len(lessons)} bài. Mọi tên "
        "trợ giúp được nhập từ chính `lora_helpers` (`from lora_helpers import ...`); cột \"mô-đun\" là nơi viết "
        "ra nó, để đọc cách làm. Số tên trợ giúp mỗi bài gặp (bài học, lời giải và bài tập của nó):",
        "",
        *(f"- {slug}: {sum(slug in slugs for slugs in helpers.values())}" for slug in lessons),
        "",
        "## Trợ giúp",
        "",
        "| tên | mô-đun | làm gì (docstring) | bài |",
        "|---|---|---|---|",
    ]
    for (module, name), slugs in sorted(helpers.items(), key=lambda kv: (kv[0][1].lower(), kv[0][0])):
        out.append(f"| `{name}` | `{module}` | {_summary(module, name)} | {', '.join(sorted(slugs))} |")
    out += ["", "## Kiểm tra bài tập (`lora_helpers.checks`)", "", "| tên | làm gì (docstring) | bài |", "|---|---|---|"]
    for (module, name), slugs in sorted(checks.items(), key=lambda kv: kv[0][1]):
        out.append(f"| `{name}` | {_summary(module, name)} | {', '.join(sorted(slugs))} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write docs/helpers.md")
    args = parser.parse_args(argv)
    text = table()
    if args.write:
        TARGET.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
