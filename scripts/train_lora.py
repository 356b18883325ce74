"""Train a LoRA adapter on a course task from the command line: one CPU, one GPU, or several processes.

The recipe is the one of the lora_finetuning lesson and of scripts/build_adapters.py:
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
non-empty directory unless ``--overwrite``), measures the test metric and writes ``metrics.json``.
See docs/multi_gpu.md.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import inspect
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_helpers.data import get_task, make_task_splits, to_prompt_completion  # noqa: E402  (light: no datasets yet)
from lora_helpers.errors import CourseError  # noqa: E402

CHECKSUM_DIR = "rank_checksums"
METRICS_FILE = "metrics.json"


class _HelpFormatter(argparse.HelpFormatter):
    """argparse help with the defaults shown, in Vietnamese."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (mặc định: %(default)s)"
        return text


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Huấn luyện một bộ điều hợp (adapter) LoRA trên tác vụ của khoá học, "
                    "chạy được trên 1 CPU, 1 GPU hoặc nhiều GPU/tiến trình (accelerate launch).",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--task", default="ngay_thang", help="tác vụ: ngay_thang hoặc don_hang")
    parser.add_argument("--model", default=None, help="thư mục hoặc tên Hub của mô hình cơ sở "
                        "(mặc định: find_base_model(), tức SmolLM2-135M-Instruct)")
    parser.add_argument("--output-dir", required=True, help="thư mục lưu bộ điều hợp và metrics.json")
    parser.add_argument("--overwrite", action="store_true", help="cho phép ghi đè thư mục đã có dữ liệu")
    parser.add_argument("--r", type=int, default=8, help="hạng (rank) r của LoRA")
    parser.add_argument("--alpha", type=float, default=16, help="lora_alpha (hệ số tỉ lệ alpha/r)")
    parser.add_argument("--dropout", type=float, default=0.0, help="lora_dropout")
    parser.add_argument("--target-modules", default="all-linear",
                        help='"all-linear" hoặc danh sách tên lớp cách nhau bằng dấu phẩy, ví dụ q_proj,v_proj')
    parser.add_argument("--lr", type=float, default=1e-3, help="tốc độ học (learning rate)")
    parser.add_argument("--max-steps", type=int, default=30, help="số bước tối ưu")
    parser.add_argument("--batch-size", type=int, default=8, help="batch trên MỖI thiết bị/tiến trình")
    parser.add_argument("--grad-accum", type=int, default=1, help="số bước tích luỹ gradient")
    parser.add_argument("--eval-steps", type=int, default=10,
                        help="đánh giá loss trên tập kiểm định mỗi N bước (0: chỉ đánh giá ở cuối)")
    parser.add_argument("--seed", type=int, default=0, help="hạt giống cho dữ liệu, khởi tạo LoRA và thứ tự batch")
    parser.add_argument("--n-train", type=int, default=400, help="số ví dụ huấn luyện")
    parser.add_argument("--n-val", type=int, default=40, help="số ví dụ kiểm định (validation)")
    parser.add_argument("--n-test", type=int, default=50, help="số câu của tập kiểm tra dùng để đo độ chính xác (≤ 50)")
    parser.add_argument("--cpu", action="store_true", help="chạy trên CPU kể cả khi có GPU")
    parser.add_argument("--debug-rank-checksums", action="store_true",
                        help=f"mỗi tiến trình ghi mã băm trọng số LoRA của nó vào {CHECKSUM_DIR}/ (kiểm tra DDP)")
    return parser.parse_args(argv)


def validate_args(args) -> None:
    """Cheap checks of the numbers, before anything heavy is imported or loaded."""
    for name in ("max_steps", "batch_size", "grad_accum", "n_train", "n_val", "n_test"):
        value = getattr(args, name)
        if value < 1:
            flag = "--" + name.replace("_", "-")
            raise CourseError(f"{flag} phải là số nguyên dương, bạn đưa {value}.", f"Ví dụ: {flag} 8.")
    get_task(args.task)  # unknown task: Vietnamese error listing the valid names
    n_test_split = inspect.signature(make_task_splits).parameters["n_test"].default
    if args.n_test > n_test_split:
        raise CourseError(f"--n-test tối đa là {n_test_split} (kích thước tập kiểm tra), bạn đưa {args.n_test}.",
                          f"Dùng --n-test {n_test_split}.")
    if args.eval_steps < 0:
        raise CourseError(f"--eval-steps không được âm, bạn đưa {args.eval_steps}.", "Dùng 0 để chỉ đánh giá ở cuối.")
    if not 0.0 <= args.dropout < 1.0:
        raise CourseError(f"--dropout phải nằm trong [0, 1), bạn đưa {args.dropout}.", "Thường dùng 0.0 hoặc 0.05.")


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
    from peft import LoraConfig, PeftModel
    from peft.utils import get_peft_model_state_dict
    from transformers import AutoModelForCausalLM
    from transformers.training_args import ParallelMode
    from trl import SFTTrainer

    from lora_helpers.adapters import adapter_base_model, record_base_model, save_adapter
    from lora_helpers.env import pick_device, pick_dtype, seed_everything
    from lora_helpers.evaluation import evaluate_task
    from lora_helpers.models import CACHE_NAME, HUB_ID, cache_dir, find_base_model, load_tokenizer
    from lora_helpers.training import check_lora_config, sft_config

    warn_single_process_launch(is_main)
    spec = get_task(args.task)
    out = Path(args.output_dir)
    device = "cpu" if args.cpu else pick_device()
    dtype = pick_dtype(device)
    world_size_env = int(os.environ.get("WORLD_SIZE", "1"))
    seed_everything(args.seed)

    # 1. The SFTConfig of the lesson, fitted to the device. Creating it also sets up torch.distributed
    #    when the script was started by a launcher (accelerate launch / torchrun).
    overrides = dict(
        disable_tqdm=False,                    # Trainer's progress bar (drawn by the main process only)
        gradient_accumulation_steps=args.grad_accum,
        ddp_find_unused_parameters=False,      # every LoRA matrix gets a gradient at every step
    )
    if device == "cpu":
        # use_cpu=True makes accelerate choose DistributedType.MULTI_CPU (gloo) when a launcher started several
        # processes; without it each process of a CPU-only machine would silently train on its own.
        overrides.update(use_cpu=True, bf16=False, fp16=False, ddp_backend="gloo" if world_size_env > 1 else None)
    trainer_dir = tempfile.mkdtemp(prefix="train_lora-")  # Trainer's scratch folder; nothing is saved there
    atexit.register(shutil.rmtree, trainer_dir, ignore_errors=True)
    config = sft_config(trainer_dir, max_steps=args.max_steps, learning_rate=args.lr, batch_size=args.batch_size,
                        eval_steps=args.eval_steps or None, seed=args.seed, **overrides)
    if world_size_env > 1 and (config.world_size != world_size_env or config.parallel_mode != ParallelMode.DISTRIBUTED):
        # e.g. several processes on a CPU-only machine without use_cpu: the process group exists but the model
        # would not be wrapped in DDP, so each process would train alone (verified with transformers 5.23).
        raise CourseError(
            f"Trình khởi chạy mở {world_size_env} tiến trình nhưng Trainer không chạy song song dữ liệu (DDP) "
            f"({config.parallel_mode.value}, {config.world_size} tiến trình): mỗi tiến trình sẽ huấn luyện riêng.",
            "Trên máy chỉ có CPU, TrainingArguments cần use_cpu=True (script tự đặt khi không thấy GPU hoặc khi có "
            "--cpu); trên máy có GPU, kiểm tra rằng mọi tiến trình đều thấy GPU (CUDA_VISIBLE_DEVICES).",
        )

    # 2. Model, tokenizer and data. The main process finds the model first (it may convert the bundled
    #    GGUF into the cache once); the others then read the cached copy.
    with config.main_process_first(desc="find the base model"):
        model_path = find_base_model(args.model, verbose=is_main)
    tokenizer = load_tokenizer(model_path)
    data = make_task_splits(args.task, n_train=args.n_train, n_val=args.n_val, seed=args.seed)
    test_rows = data["test"].select(range(args.n_test))
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)

    # 3. LoRA, checked against the model before any time is spent training.
    lora_config = LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=args.dropout,
                             target_modules=target_modules_of(args.target_modules), task_type="CAUSAL_LM")
    check_lora_config(model, lora_config)
    trainer = SFTTrainer(model=model, args=config, train_dataset=to_prompt_completion(data["train"]),
                         eval_dataset=to_prompt_completion(data["validation"]), processing_class=tokenizer,
                         peft_config=lora_config)
    world_size = trainer.args.world_size
    recorder = None
    if args.debug_rank_checksums:
        if trainer.is_fsdp_enabled:
            raise CourseError("--debug-rank-checksums chỉ dùng với DDP: với FSDP mỗi tiến trình giữ một mảnh trọng số.",
                              "Bỏ --debug-rank-checksums khi chạy với fsdp.yaml.")
        recorder = trainer.data_collator = BatchRecorder(trainer.data_collator)

    if is_main:
        effective = args.batch_size * world_size * args.grad_accum
        print(f"Tác vụ {args.task} ({spec.title}) · {len(data['train'])} ví dụ huấn luyện · "
              f"{world_size} tiến trình trên {trainer.args.device} · batch hiệu dụng {args.batch_size} × "
              f"{world_size} × {args.grad_accum} = {effective}", flush=True)
    start = time.perf_counter()
    train_output = trainer.train()
    train_seconds = time.perf_counter() - start
    log = trainer.state.log_history
    evals = [e for e in log if "eval_loss" in e]
    if not evals or evals[-1]["step"] != trainer.state.global_step:
        trainer.evaluate()  # collective: every process joins; the loss is averaged over all of them
        evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    train_losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]

    # 4. Save (main process only). Under FSDP the weights are sharded: every process takes part in
    #    gathering the full state dict first (accelerate hands it to the main process).
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    save_kwargs = {}
    if trainer.is_fsdp_enabled:  # not run by this repository's tests (they have no GPU); see docs/multi_gpu.md
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        save_kwargs["state_dict"] = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.accelerator.is_main_process:
        shutil.rmtree(out / CHECKSUM_DIR, ignore_errors=True)  # stale files of an earlier run (with --overwrite)
        save_adapter(unwrapped, out, overwrite=args.overwrite, **save_kwargs)
        if Path(model_path) == cache_dir() / CACHE_NAME:  # the course model, converted from the bundled GGUF:
            record_base_model(out, HUB_ID)  # record its public name, not this machine's cache path
    trainer.accelerator.wait_for_everyone()  # the adapter is saved before any process writes beside it

    if recorder is not None:
        rank = trainer.accelerator.process_index
        (out / CHECKSUM_DIR).mkdir(exist_ok=True)
        record = dict(rank=rank, world_size=world_size, global_step=trainer.state.global_step,
                      checksum=lora_checksum(get_peft_model_state_dict(unwrapped)), batches=recorder.digests)
        (out / CHECKSUM_DIR / f"rank{rank}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    # 5. Test metric and metrics.json (main process only).
    if trainer.accelerator.is_main_process:
        if trainer.is_fsdp_enabled:  # generation needs the whole model: reload the saved adapter on one process
            eval_model = PeftModel.from_pretrained(
                AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(trainer.args.device), str(out))
        else:
            eval_model = unwrapped
        start_eval = time.perf_counter()
        test = evaluate_task(eval_model, tokenizer, test_rows, task=args.task)
        metrics = dict(
            task=args.task,
            train_loss_last_step=train_losses[-1] if train_losses else math.nan,
            train_loss_mean=train_output.training_loss,
            eval_loss=evals[-1]["eval_loss"],
            steps=trainer.state.global_step,
            train_seconds=round(train_seconds, 2),
            world_size=world_size,
            device=str(trainer.args.device),
            distributed_type=str(trainer.accelerator.distributed_type).split(".")[-1],
            effective_batch_size=args.batch_size * world_size * args.grad_accum,
            test_metric=spec.metric,
            test_accuracy=test["accuracy"],
            n_test=test["n"],
            test_seconds=round(time.perf_counter() - start_eval, 2),
            settings=dict(r=args.r, lora_alpha=args.alpha, lora_dropout=args.dropout,
                          target_modules=args.target_modules, learning_rate=args.lr, max_steps=args.max_steps,
                          batch_size=args.batch_size, grad_accum=args.grad_accum, eval_steps=args.eval_steps,
                          seed=args.seed, n_train=args.n_train, n_val=args.n_val,
                          base_model=adapter_base_model(out)),
        )
        if "valid_json" in test:
            metrics["test_valid_json"] = test["valid_json"]
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nXong: {metrics['steps']} bước trong {train_seconds:.1f} s trên {world_size} tiến trình "
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
