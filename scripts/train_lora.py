"""Train a LoRA adapter on a course task from the command line: one CPU, one GPU, or several processes.

The recipe is the course's (``lora_helpers.recipe.RECIPE``: the command-line defaults), trained by the same
function as scripts/build_adapters.py, ``lora_helpers.training.train_lora_adapter``:
``lora_helpers.data.make_task_splits`` + ``to_prompt_completion`` for the data,
``lora_helpers.training.sft_config`` for the ``SFTConfig`` that fits the device, and
``SFTTrainer(model, args, train_dataset, eval_dataset, processing_class=tokenizer, peft_config=LoraConfig(...))``.

    # one process (CPU, or the GPU when there is one)
    python scripts/train_lora.py --task ngay_thang --output-dir outputs/lora_ngay_thang

    # N GPUs, data parallel (DDP): every process trains on its own share of each batch
    accelerate launch --num_processes N scripts/train_lora.py --task ngay_thang --output-dir outputs/lora_ddp
    accelerate launch --config_file scripts/accelerate_configs/ddp.yaml --num_processes N scripts/train_lora.py ...

    # several processes on a CPU-only machine (the script then trains on CPU with the gloo backend).
    # Not `accelerate launch --cpu --num_processes 2`: accelerate 1.15 then starts ONE process.
    accelerate launch --config_file scripts/accelerate_configs/ddp.yaml --num_processes 2 scripts/train_lora.py ...
    python -m torch.distributed.run --standalone --nproc_per_node 2 scripts/train_lora.py ...

Only the main process saves the adapter (``lora_helpers.adapters.save_adapter``, which refuses to overwrite a
non-empty directory unless ``--overwrite``), measures the test metric and writes ``metrics.json``
(``lora_helpers.training.write_metrics``, the format scripts/build_adapters.py writes too).
See docs/multi_gpu.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

# Light imports only (no torch / transformers yet): a wrong argument is refused in a blink.
from lora_helpers.data import TASKS, get_task
from lora_helpers.errors import CourseError
from lora_helpers.recipe import FIELD_HELP, RECIPE, Recipe
from lora_helpers.training import METRICS_FILE

CHECKSUM_DIR = "rank_checksums"


class _HelpFormatter(argparse.HelpFormatter):
    """argparse help with the defaults shown, in Vietnamese."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (mặc định: %(default)s)"
        return text


def _targets_text(targets) -> str:
    return targets if isinstance(targets, str) else ",".join(targets)


def flag_of(field: str) -> str:
    """The command-line flag of a recipe field: ``max_steps`` -> ``--max-steps``."""
    return "--" + field.replace("_", "-")


SHORT_FLAGS = {"lora_alpha": ["--alpha"], "lora_dropout": ["--dropout"], "learning_rate": ["--lr"]}  # older names


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Huấn luyện một bộ điều hợp (adapter) LoRA trên tác vụ của khoá học, "
                    "chạy được trên 1 CPU, 1 GPU hoặc nhiều GPU/tiến trình (accelerate launch).",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--task", default="ngay_thang", help="tác vụ: " + " hoặc ".join(sorted(TASKS)))
    parser.add_argument("--model", default=None, help="thư mục hoặc tên Hub của mô hình cơ sở "
                        "(mặc định: find_base_model(), tức SmolLM2-135M-Instruct)")
    parser.add_argument("--output-dir", required=True, help="thư mục lưu bộ điều hợp và metrics.json")
    parser.add_argument("--overwrite", action="store_true", help="cho phép ghi đè thư mục đã có dữ liệu")
    # One flag per recipe field, made from the recipe itself (lora_helpers.recipe.FIELD_HELP): a new field gets a flag.
    for field in dataclasses.fields(Recipe):
        default = getattr(RECIPE, field.name)
        names = [flag_of(field.name)] + SHORT_FLAGS.get(field.name, [])
        if field.name == "target_modules":
            parser.add_argument(*names, dest=field.name, default=_targets_text(default), help=FIELD_HELP[field.name])
        else:
            kind = int if field.name == "eval_steps" else type(default)
            parser.add_argument(*names, dest=field.name, type=kind, default=0 if default is None else default,
                                help=FIELD_HELP[field.name])
    parser.add_argument("--cpu", action="store_true", help="chạy trên CPU kể cả khi có GPU")
    parser.add_argument("--debug-rank-checksums", action="store_true",
                        help=f"mỗi tiến trình ghi mã băm trọng số LoRA của nó vào {CHECKSUM_DIR}/ (kiểm tra DDP)")
    return parser.parse_args(argv)


def validate_args(args) -> None:
    """Cheap checks of the numbers, before anything heavy is imported or loaded."""
    for name in ("r", "max_steps", "batch_size", "grad_accum", "eval_batch_size", "max_length", "n_train", "n_val",
                 "n_test", "warmup_every"):
        value = getattr(args, name)
        if value < 1:
            flag = "--" + name.replace("_", "-")
            raise CourseError(f"{flag} phải là số nguyên dương, bạn đưa {value}.", f"Ví dụ: {flag} 8.")
    get_task(args.task)  # unknown task: Vietnamese error listing the valid names
    if args.eval_steps < 0:
        raise CourseError(f"--eval-steps không được âm, bạn đưa {args.eval_steps}.", "Dùng 0 để chỉ đánh giá ở cuối.")
    if not 0.0 <= args.lora_dropout < 1.0:
        raise CourseError(f"--lora-dropout phải nằm trong [0, 1), bạn đưa {args.lora_dropout}.",
                          "Thường dùng 0.0 hoặc 0.05.")


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse early (before the model is loaded) to train into a directory that already holds files.

    Read-only: every process runs it before training starts, and nothing is created here;
    ``save_adapter`` makes the directory at the end.
    """
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        shown = ", ".join(sorted(p.name for p in path.iterdir())[:4]) if path.is_dir() else "một tệp"
        raise CourseError(
            f"`{path}` đã có dữ liệu ({shown}). Script không ghi đè lên thứ bạn đã lưu.",
            "Chọn --output-dir khác, hoặc thêm --overwrite nếu bạn chắc chắn muốn ghi đè.",
        )


def target_modules_of(text: str):
    text = text.strip()
    if text == "all-linear":
        return "all-linear"
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise CourseError("--target-modules rỗng.", 'Dùng "all-linear" hoặc ví dụ q_proj,v_proj.')
    return names


def recipe_of(args):
    """The course recipe with the command line's settings (every field of the recipe has its flag)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)}
    values["target_modules"] = target_modules_of(args.target_modules)
    return RECIPE.replace(**values)


def lora_checksum(state_dict) -> str:
    """SHA-256 of an adapter state dict: names, dtypes, shapes and raw bytes, in sorted name order."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class BatchRecorder:
    """Wraps the trainer's data collator and keeps a digest of every batch this process built.

    Under DDP each process sees a different share of the data; identical weights at the end then
    show that the gradients were averaged across processes (two independent runs on the same data
    would also end identical, which is why the digests are recorded).
    """

    def __init__(self, collator):
        self.collator = collator
        self.digests: list[str] = []

    def __call__(self, features):
        batch = self.collator(features)
        ids = batch["input_ids"]
        self.digests.append(hashlib.sha256(ids.detach().cpu().numpy().tobytes()).hexdigest()[:16])
        return batch


def main(argv=None) -> int:
    args = parse_args(argv)
    is_main = int(os.environ.get("RANK", "0")) == 0  # before torch.distributed is set up
    try:
        validate_args(args)
        check_output_dir(Path(args.output_dir), args.overwrite)
        return train(args, is_main)
    except CourseError as exc:
        print(f"❌ {exc}", file=sys.stderr)
        return 2


def warn_single_process_launch(is_main: bool) -> None:
    """`accelerate launch --cpu --num_processes N` (N > 1) runs ONE process: say so instead of staying silent.

    accelerate 1.x's simple launcher (used with --cpu) sets MASTER_ADDR when N > 1 but starts a single
    python process without RANK/WORLD_SIZE (verified in accelerate/utils/launch.py).
    """
    if is_main and os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in os.environ \
            and "WORLD_SIZE" not in os.environ:
        print("⚠️  `accelerate launch --cpu` chỉ khởi động MỘT tiến trình, dù --num_processes lớn hơn 1. "
              "Để chạy nhiều tiến trình trên CPU: `accelerate launch --config_file "
              "scripts/accelerate_configs/ddp.yaml --num_processes N ...` "
              "hoặc `python -m torch.distributed.run --standalone --nproc_per_node N ...`.", file=sys.stderr)


def train(args, is_main: bool) -> int:
    import torch
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from lora_helpers.adapters import adapter_base_model
    from lora_helpers.training import train_lora_adapter, write_metrics

    warn_single_process_launch(is_main)
    spec = get_task(args.task)
    recipe = recipe_of(args)
    out = Path(args.output_dir)
    recorder = None

    def before_training(run):
        nonlocal recorder
        trainer = run.trainer
        if args.debug_rank_checksums:
            if trainer.is_fsdp_enabled:
                raise CourseError("--debug-rank-checksums chỉ dùng với DDP: với FSDP mỗi tiến trình giữ một mảnh "
                                  "trọng số.", "Bỏ --debug-rank-checksums khi chạy với fsdp.yaml.")
            recorder = trainer.data_collator = BatchRecorder(trainer.data_collator)
        if is_main:
            world_size = trainer.args.world_size
            effective = recipe.batch_size * world_size * recipe.grad_accum
            print(f"Tác vụ {args.task} ({spec.title}) · {len(run.data['train'])} ví dụ huấn luyện · "
                  f"{world_size} tiến trình trên {trainer.args.device} · batch hiệu dụng {recipe.batch_size} × "
                  f"{world_size} × {recipe.grad_accum} = {effective}", flush=True)

    # 1-3. The recipe, on every process (the function shared with scripts/build_adapters.py).
    run = train_lora_adapter(args.task, recipe, base_model=args.model, device="cpu" if args.cpu else None,
                             verbose=is_main, before_training=before_training,
                             disable_tqdm=False)  # Trainer's progress bar (drawn by the main process only)
    trainer = run.trainer

    # 4. Save (main process only; under FSDP every process helps gather the weights first).
    if run.is_main_process:
        shutil.rmtree(out / CHECKSUM_DIR, ignore_errors=True)  # stale files of an earlier run (with --overwrite)
    run.save(out, overwrite=args.overwrite)

    if recorder is not None:
        rank = trainer.accelerator.process_index
        (out / CHECKSUM_DIR).mkdir(exist_ok=True)
        record = {"rank": rank, "world_size": trainer.args.world_size, "global_step": trainer.state.global_step,
                      "checksum": lora_checksum(get_peft_model_state_dict(run.model)), "batches": recorder.digests}
        (out / CHECKSUM_DIR / f"rank{rank}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    # 5. Test metric and metrics.json (main process only).
    if run.is_main_process:
        eval_model = None
        if trainer.is_fsdp_enabled:  # generation needs the whole model: reload the saved adapter on one process
            eval_model = PeftModel.from_pretrained(
                AutoModelForCausalLM.from_pretrained(run.model_path, dtype=run.dtype).to(trainer.args.device), str(out))
        test = run.evaluate_test(eval_model)
        metrics = run.metrics(base_model=adapter_base_model(out))
        write_metrics(out, metrics)
        print(f"\nXong: {metrics['steps']} bước trong {run.train_seconds:.1f} s trên {metrics['world_size']} tiến trình "
              f"({metrics['device']}).")
        print(f"Loss huấn luyện (bước cuối): {metrics['train_loss_last_step']:.3f} · "
              f"loss kiểm định: {metrics['eval_loss']:.3f}")
        print(f"Độ chính xác trên {test['n']} câu kiểm tra ({spec.metric}): {test['accuracy']:.0%}")
        print(f"Đã lưu bộ điều hợp và {METRICS_FILE} vào {out}")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
