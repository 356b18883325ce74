"""scripts/train_lora.py: the lora_finetuning recipe as a command-line script, on one or several processes.

What each test covers:

* ``test_refuses_to_overwrite_before_loading_anything`` (fast): an output directory that already
  holds files is refused unless ``--overwrite``, before torch or the model is even imported.
* ``test_helpers_*`` (fast): the adapter checksum, the argument checks, the warning for
  ``accelerate launch --cpu`` (which starts a single process whatever ``--num_processes`` says).
* ``test_accelerate_configs_are_valid_for_the_installed_accelerate`` (fast): scripts/accelerate_configs/*.yaml.
* ``test_two_processes_train_one_adapter`` (heavy: real SmolLM2-135M, 2 CPU processes with the gloo
  backend, about 30 s on 2 cores): ``accelerate launch --config_file scripts/accelerate_configs/ddp.yaml
  --num_processes 2`` (a MULTI_GPU config; on a CPU-only machine the script trains on CPU with gloo).
  Checks that the two processes saw different batches yet ended with bit-identical LoRA weights (so the
  gradients were averaged across them), that the saved adapter is those weights, loads with
  ``PeftModel.from_pretrained`` and has trained (non-zero) B matrices, and that metrics.json reports the run.

Heavy: run it under the CPU lock, e.g. ``flock /tmp/lora_cpu.lock env HF_HUB_OFFLINE=1
.venv/bin/python -m pytest tests/test_train_script.py -q -p no:randomly``.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lora_helpers import CourseError
from lora_helpers.models import HUB_ID
from lora_helpers.recipe import RECIPE
from lora_helpers.training import read_metrics
from scripts import train_lora as script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_lora.py"
CONFIGS = ROOT / "scripts" / "accelerate_configs"


def _env():
    """The test's environment without launcher variables; the script finds lora_helpers as an installed package."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                        "PYTHONPATH"}}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def test_refuses_to_overwrite_before_loading_anything(tmp_path):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "ghi_chu.txt").write_text("của tôi", encoding="utf-8")
    # Run the script as __main__ and report which heavy libraries it had imported when it stopped.
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['train_lora.py', '--output-dir', {str(out)!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules]\n"
        "print('RC', code, 'HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=_env(), capture_output=True,
                            text=True, timeout=120, check=False)
    assert "RC 2 HEAVY []" in result.stdout, result.stdout + result.stderr
    assert "đã có dữ liệu" in result.stderr and "--overwrite" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ghi_chu.txt"]
    assert (out / "ghi_chu.txt").read_text(encoding="utf-8") == "của tôi"


def test_helpers_checksum_and_arguments():
    import torch

    a = {"x.lora_A.weight": torch.ones(2, 3), "x.lora_B.weight": torch.zeros(3, 2)}
    same_other_order = {"x.lora_B.weight": torch.zeros(3, 2), "x.lora_A.weight": torch.ones(2, 3)}
    assert script.lora_checksum(a) == script.lora_checksum(same_other_order)
    changed = {k: v.clone() for k, v in a.items()}
    changed["x.lora_B.weight"][0, 0] = 1e-7
    assert script.lora_checksum(changed) != script.lora_checksum(a)
    assert script.lora_checksum({"w": torch.zeros(2, dtype=torch.bfloat16)}) != script.lora_checksum(
        {"w": torch.zeros(2, dtype=torch.float32)})

    assert script.target_modules_of("all-linear") == "all-linear"
    assert script.target_modules_of(" q_proj, v_proj ") == ["q_proj", "v_proj"]
    with pytest.raises(CourseError):
        script.target_modules_of(" , ")
    for bad in (["--max-steps", "0"], ["--batch-size", "-1"], ["--n-test", "0"], ["--dropout", "1.5"],
                ["--task", "khong_co"], ["--eval-steps", "-1"]):
        with pytest.raises(CourseError):
            script.validate_args(script.parse_args(["--output-dir", "x", *bad]))
    defaults = script.parse_args(["--output-dir", "x"])
    script.validate_args(defaults)
    assert script.recipe_of(defaults) == RECIPE  # the command line's defaults are the course recipe
    changed = script.recipe_of(script.parse_args(["--output-dir", "x", "--r", "4", "--target-modules", "q_proj,v_proj",
                                                  "--max-steps", "7", "--n-test", "5"]))
    assert changed == RECIPE.replace(r=4, target_modules=("q_proj", "v_proj"), max_steps=7, n_test=5)


def test_every_recipe_field_has_a_flag_that_reaches_the_recipe():
    """The flags are made from the recipe: each field has one (with Vietnamese help), and a value given on the
    command line is the value the recipe trains with."""
    import dataclasses

    from lora_helpers.recipe import FIELD_HELP, Recipe

    fields = [f.name for f in dataclasses.fields(Recipe)]
    assert sorted(FIELD_HELP) == sorted(fields)
    changed = {"r": 2, "lora_alpha": 3, "lora_dropout": 0.25, "target_modules": ("k_proj",), "learning_rate": 5e-4,
               "max_steps": 9, "batch_size": 3, "grad_accum": 2, "lr_scheduler_type": "cosine", "warmup_steps_max": 1,
               "warmup_every": 4, "eval_steps": 3, "eval_batch_size": 5, "max_length": 99, "seed": 7, "n_train": 11,
               "n_val": 6, "n_test": 4}
    assert sorted(changed) == sorted(fields) and all(changed[k] != getattr(RECIPE, k) for k in fields)
    argv = ["--output-dir", "x"]
    for name, value in changed.items():
        argv += [script.flag_of(name), ",".join(value) if isinstance(value, tuple) else str(value)]
    assert script.recipe_of(script.parse_args(argv)) == Recipe(**changed)
    # the older short names still work
    assert script.recipe_of(script.parse_args(["--output-dir", "x", "--lr", "5e-4", "--alpha", "4"])) == \
        RECIPE.replace(learning_rate=5e-4, lora_alpha=4)


def test_helpers_warn_when_accelerate_cpu_starts_one_process(monkeypatch, capsys):
    for key in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "ACCELERATE_USE_CPU"):
        monkeypatch.delenv(key, raising=False)
    script.warn_single_process_launch(is_main=True)
    assert capsys.readouterr().err == ""  # plain `python scripts/train_lora.py`
    # What accelerate 1.15's simple launcher exports for `accelerate launch --cpu --num_processes 2`:
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    script.warn_single_process_launch(is_main=True)
    assert "MỘT tiến trình" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")  # a real multi-process launch (torchrun) sets WORLD_SIZE
    script.warn_single_process_launch(is_main=True)
    assert capsys.readouterr().err == ""


def test_accelerate_configs_are_valid_for_the_installed_accelerate(monkeypatch):
    """ddp.yaml and fsdp.yaml load with accelerate's own parser, every fsdp_* key is one accelerate knows
    (an unknown one would be silently ignored), and the FSDP plugin builds from what the launcher exports."""
    import accelerate.utils.dataclasses as accelerate_dataclasses
    import torch
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin, patch_environment
    from accelerate.utils.launch import prepare_multi_gpu_env

    parser = launch_command_parser()
    known = {action.dest for action in parser._actions}
    expected = {"ddp": ("MULTI_GPU", True, False), "fsdp": ("FSDP", False, True)}
    for name, (kind, multi_gpu, use_fsdp) in expected.items():
        path = CONFIGS / f"{name}.yaml"
        config = load_config_from_file(str(path))  # raises on unknown top-level keys
        assert str(config.distributed_type).endswith(kind)
        unknown = [key for key in config.fsdp_config if key not in known]
        assert not unknown, f"{name}.yaml: keys accelerate does not know: {unknown}"
        args = parser.parse_args(["--config_file", str(path), str(SCRIPT), "--output-dir", "x"])
        args, _, _ = _validate_launch_command(args)
        assert (args.multi_gpu, args.use_fsdp) == (multi_gpu, use_fsdp)
        env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_USE_ORIG_PARAMS"] == "false"
    # The plugin asks for a GPU only to pick a device for sync_module_states: pretend there is one.
    monkeypatch.setattr(accelerate_dataclasses, "is_cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with patch_environment(**{k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_"))}):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 1 and plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    assert "FULL_SHARD" in str(plugin.sharding_strategy) and plugin.use_orig_params is False
    assert plugin.cpu_ram_efficient_loading and plugin.sync_module_states


@pytest.mark.slow
def test_two_processes_train_one_adapter(tmp_path):
    import torch
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from lora_helpers.models import find_base_model

    out = tmp_path / "adapter_ddp"
    # A directory left by an earlier run: --overwrite may write into it, and stale rank files must go.
    (out / script.CHECKSUM_DIR).mkdir(parents=True)
    (out / script.CHECKSUM_DIR / "rank7.json").write_text("{}", encoding="utf-8")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "ddp.yaml"),
        "--num_processes", "2", str(SCRIPT), "--task", "ngay_thang", "--max-steps", "2", "--batch-size", "2",
        "--n-train", "16", "--n-val", "4", "--n-test", "4", "--eval-steps", "2", "--output-dir", str(out),
        "--overwrite", "--debug-rank-checksums",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    ranks = [json.loads((out / script.CHECKSUM_DIR / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(p.name for p in (out / script.CHECKSUM_DIR).iterdir()) == ["rank0.json", "rank1.json"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["global_step"] == 2 for r in ranks)
    # Different data on each process (the first collated batch is the first training batch)...
    assert ranks[0]["batches"][0] != ranks[1]["batches"][0]
    assert ranks[0]["batches"] != ranks[1]["batches"]
    # ...and still the same weights: the gradients were averaged across the two processes.
    assert ranks[0]["checksum"] == ranks[1]["checksum"]

    metrics = read_metrics(out)  # the format scripts/build_adapters.py writes too
    assert metrics == json.loads((out / script.METRICS_FILE).read_text(encoding="utf-8"))
    assert metrics["settings"] == {**RECIPE.replace(max_steps=2, batch_size=2, n_train=16, n_val=4, n_test=4,
                                                    eval_steps=2).as_dict(), "base_model": HUB_ID}
    assert metrics["world_size"] == 2 and metrics["distributed_type"] == "MULTI_CPU"
    assert metrics["steps"] == 2 and metrics["effective_batch_size"] == 2 * 2 * 1
    assert metrics["device"].startswith("cpu") and metrics["n_test"] == 4
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    for key in ("train_loss_last_step", "train_loss_mean", "eval_loss"):
        assert math.isfinite(metrics[key]) and metrics[key] > 0
    assert metrics["train_seconds"] > 0
    assert result.stdout.count("Đã lưu bộ điều hợp") == 1  # only the main process prints the summary

    base = AutoModelForCausalLM.from_pretrained(find_base_model(verbose=False), dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, str(out))
    saved = get_peft_model_state_dict(loaded, save_embedding_layers=False)
    assert script.lora_checksum(saved) == ranks[0]["checksum"]  # the saved adapter is what the processes trained
    b_norms = [m.lora_B["default"].weight.abs().sum().item() for m in loaded.modules() if hasattr(m, "lora_B")]
    assert len(b_norms) == 30 * 7  # SmolLM2-135M: 30 layers x 7 linear layers (all-linear)
    assert all(n > 0 for n in b_norms)  # B starts at zero: every B moved away from its initialization
