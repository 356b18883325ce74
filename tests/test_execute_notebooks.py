"""`make notebooks` executes notebooks in place, a few at a time, each with the torch threads it was given."""

import nbformat
import pytest

from scripts import execute_notebooks


def tiny_notebook(path, code):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, str(path))


@pytest.mark.slow
def test_notebooks_run_in_place_in_parallel_with_one_thread(tmp_path, capsys):
    good = [tmp_path / f"ok{i}.ipynb" for i in range(2)]
    for path in good:
        tiny_notebook(path, "import os\nprint('threads', os.environ['OMP_NUM_THREADS'], os.environ['HF_HUB_OFFLINE'])")
    assert execute_notebooks.main([str(p) for p in good] + ["--jobs", "2", "--threads", "1"]) == 0
    for path in good:
        cell = nbformat.read(str(path), as_version=4).cells[0]
        assert cell.execution_count == 1 and cell.outputs[0]["text"] == "threads 1 1\n"
    out = capsys.readouterr().out
    assert out.count("== ") == 2 and "1 luồng torch, 2 notebook cùng lúc" in out


@pytest.mark.slow
def test_a_failing_notebook_fails_the_run(tmp_path, capsys):
    bad = tmp_path / "bad.ipynb"
    tiny_notebook(bad, "raise ValueError('hỏng')")
    assert execute_notebooks.main([str(bad), "--jobs", "1"]) == 1
    assert "THẤT BẠI" in capsys.readouterr().out
    assert execute_notebooks.main([]) == 0  # nothing to execute (make exercises when nothing changed)
