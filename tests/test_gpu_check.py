"""The GPU rehearsal (scripts/gpu_check.py), as far as a CPU can test it: what it runs, its report, its refusal."""

from pathlib import Path

from scripts import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def test_it_runs_every_lesson_and_solutions_notebook():
    notebooks = gpu_check.course_notebooks()
    assert len(notebooks) == 2 * len(list((ROOT / "notebooks").glob("*.ipynb")))
    assert all(n.startswith(("notebooks/", "solutions/")) for n in notebooks)


def test_committed_report_is_the_not_run_report_or_a_real_run():
    text = (ROOT / "docs" / "gpu_check.md").read_text(encoding="utf-8")
    if gpu_check.NOT_RUN in text.split("\n\n")[2]:
        assert text == gpu_check.report(None, "", "", 0, None)
    else:  # a real run names its GPU and has one row per notebook
        assert "GPU:" in text and all(f"`{n}`" in text for n in gpu_check.course_notebooks())


def test_report_of_a_run(tmp_path):
    results = [gpu_check.Result("notebooks/a.ipynb", True, 90.0, 2048.0),
               gpu_check.Result("solutions/a_solutions.ipynb", False, 30.0, None, "RuntimeError: x | y")]
    text = gpu_check.report(results, "NVIDIA H200", "hỗn hợp bf16", 4, 120.0)
    assert "1/2 notebook chạy hết" in text and "| `notebooks/a.ipynb` | chạy hết | 1.5 | 2048 |" in text
    assert "lỗi: RuntimeError: x / y" in text and "| ? |" in text and "NVIDIA H200" in text


def test_refuses_without_cuda(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    assert "Không thấy GPU CUDA" in capsys.readouterr().err
