"""Show the course's pre-drawn figures (images/, made by scripts/make_figures.py) in a notebook."""

from __future__ import annotations

from pathlib import Path

from .adapters import course_root
from .errors import CourseError


def figure_path(name: str) -> Path:
    """Path of ``images/<name>``; raises a Vietnamese :class:`CourseError` when the file is missing."""
    path = course_root() / "images" / name
    if not path.is_file():
        raise CourseError(
            f"Không tìm thấy hình `images/{name}`.",
            "Vẽ lại các hình: chạy `python scripts/make_figures.py` ở thư mục gốc của khoá học "
            "(hoặc `make images`). Hình vẽ từ số đo thật chỉ có sau khi bài học tương ứng đã ghi số đo; "
            "script sẽ in ra bài nào cần chạy.",
        )
    return path


def show_figure(name: str, width: int | None = None) -> None:
    """Display ``images/<name>`` (PNG, JPEG or SVG) in the notebook; ``width`` in pixels, optional."""
    from IPython.display import SVG, Image, display

    path = figure_path(name)
    if path.suffix.lower() == ".svg":
        display(SVG(filename=str(path)))
    else:
        display(Image(filename=str(path), width=width))
