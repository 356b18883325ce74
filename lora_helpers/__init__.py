"""Helpers for the Vietnamese LoRA course: plumbing only (finding the model, data, measuring, checking).

The lessons call transformers, peft and trl directly; this package hides what is not
worth learning (where the offline model lives, how to time a call, how to plot).
"""

from .errors import CourseError
from .lesson import start_lesson

__all__ = ["CourseError", "start_lesson"]
__version__ = "0.1.0"
