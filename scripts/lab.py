"""Open JupyterLab on the course (run by `make lab` with the venv's python).

JupyterLab starts in the repository root and opens the course map (README.md), rendered. When run as root (Docker images,
classroom VMs, CI machines), ``--allow-root`` is added, with a one-line note, because JupyterLab refuses to start as
root otherwise. Extra arguments are passed through, e.g. ``python scripts/lab.py --no-browser --port 8890``
(``make lab ARGS="--no-browser --port 8890"``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COURSE_MAP = "README.md"
ROOT_NOTE = ("lab: đang chạy với quyền root (thường gặp trong Docker, máy ảo phòng học, CI) nên thêm --allow-root; "
             "không có cờ này JupyterLab từ chối khởi động")


def current_euid() -> int | None:
    """The effective user id, or None where the OS has none (Windows)."""
    return os.geteuid() if hasattr(os, "geteuid") else None


def lab_command(
    extra_args: Sequence[str] = (),
    euid: int | None = None,
    python: str = sys.executable,
    root: Path = ROOT,
) -> tuple[list[str], str | None]:
    """The JupyterLab command line and the note to print (None when there is nothing to say).

    ``extra_args`` come last, so they can override the defaults set here (traitlets: the last value wins).
    """
    command = [python, "-m", "jupyterlab", f"--notebook-dir={root}", f"--LabApp.default_url=/lab/tree/{COURSE_MAP}"]
    note = None
    if euid == 0 and "--allow-root" not in extra_args:
        command.append("--allow-root")
        note = ROOT_NOTE
    return command + list(extra_args), note


MARKDOWN_PREVIEW = {"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Markdown Preview"}}}


def show_markdown_rendered(prefix: Path = Path(sys.prefix)) -> Path:
    """Make JupyterLab open Markdown files (the course map) rendered, in this environment only.

    Writes JupyterLab's documented ``share/jupyter/lab/settings/overrides.json`` of ``prefix`` (the venv), keeping any
    other override already there.
    """
    path = prefix / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    settings = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    plugin = settings.setdefault("@jupyterlab/docmanager-extension:plugin", {})
    plugin.setdefault("defaultViewers", {}).setdefault("markdown", "Markdown Preview")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> None:
    show_markdown_rendered()
    command, note = lab_command(sys.argv[1:] if argv is None else argv, euid=current_euid())
    if note:
        print(note, flush=True)
    sys.stdout.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
