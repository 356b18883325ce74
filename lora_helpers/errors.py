"""The one exception type the course raises for learner mistakes.

Messages are written in Vietnamese (the learner's language) and always say
what went wrong *and* what to do next.
"""


class CourseError(Exception):
    """A learner-facing error with a Vietnamese message that names the fix."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        message = problem if fix is None else f"{problem}\n👉 Cách sửa: {fix}"
        super().__init__(message)
