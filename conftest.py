"""Run order of the whole suite: the longest notebooks first.

`make test` spreads test files and notebooks over two workers (pytest-xdist, ``--dist loadscope``), which take
them roughly in collection order. A long notebook collected last leaves one worker running it alone at the end,
so the longest notebooks (by the execution times their committed outputs record) go first, the unit-test modules
next, the short notebooks last, where they fill the gaps.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

LONG_NOTEBOOK_S = 300  # notebooks whose recorded run took longer go before the unit tests


def recorded_seconds(path: Path) -> float:
    """Seconds the notebook's committed outputs took to compute (cell execution metadata); 0 when not recorded."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return 0.0
    total = 0.0
    for cell in cells:
        timing = cell.get("metadata", {}).get("execution", {})
        start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if start and end:
            total += (datetime.fromisoformat(end.replace("Z", "+00:00"))
                      - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
    return total


def pytest_collection_modifyitems(session, config, items):
    import pytest

    seconds, first_seen = {}, {}
    for index, item in enumerate(items):
        path = Path(str(item.path))
        if path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
        if path not in first_seen:
            first_seen[path] = index
            seconds[path] = recorded_seconds(path) if path.suffix == ".ipynb" else None

    def rank(item):
        path = Path(str(item.path))
        s = seconds[path]
        if s is None:
            group = 1                               # unit-test modules, in their usual order
        else:
            group = 0 if s >= LONG_NOTEBOOK_S else 2  # long notebooks first, short ones last
        return (group, -(s or 0.0), first_seen[path])

    items.sort(key=rank)  # stable: a file's items keep their order and stay together
