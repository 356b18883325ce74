"""How fast is this machine for the course, in fp32 and in bf16? A benchmark, not a test.

    python scripts/benchmark_cpu.py                      # print a Markdown report
    python scripts/benchmark_cpu.py --out docs/benchmark_cpu.md

It measures, on this machine:

* matmul throughput (GFLOP/s) in fp32 and bf16 for a 768x576x1536 product (SmolLM2-135M's MLP shape);
* seconds per training step of the course recipe (batch of ``ngay_thang`` examples, plain PyTorch loop with AdamW)
  for LoRA and for full finetuning, in fp32 and under bf16 autocast (fp32 weights, bf16 compute);
* the fraction of the matmul rate a training step achieves (FLOPs counted from the model's size and the batch's
  tokens: 6·N·T for full finetuning, 4·N·T for LoRA, which skips the weight gradients of the frozen W);
* greedy generation tokens per second (the lessons' evaluation) in both precisions;
* which precision ``lora_helpers.env.precision_profile()`` chooses here, and why.

bf16 work is skipped, and the report says so, where bf16 is emulated: there a single training step can take
minutes (measured on the matmul first).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from lora_helpers.data import make_task_splits, prompts_of
from lora_helpers.env import cpu_bf16_native, device_name, library_versions, precision_profile, seed_everything
from lora_helpers.evaluation import generate
from lora_helpers.models import find_base_model
from lora_helpers.recipe import RECIPE

SHAPE = (768, 576, 1536)


def matmul_gflops(dtype, repeats: int = 10, budget_s: float = 5.0) -> float:
    m, k, n = SHAPE
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b  # warm-up
    times, start = [], time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return 2 * m * k * n / statistics.median(times) / 1e9


def autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def batch_of(tokenizer, n: int):
    rows = make_task_splits("ngay_thang")["train"].select(range(n))
    texts = [tokenizer.apply_chat_template(m, tokenize=False) for m in rows["messages"]]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return batch


def seconds_per_step(model, batch, bf16: bool, steps: int) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=RECIPE.learning_rate)
    model.train()
    times = []
    for i in range(steps + 1):  # the first step (allocation, kernel choice) is not timed
        start = time.perf_counter()
        with autocast(bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per measurement")
    parser.add_argument("--out", type=Path, help="also write the report to this Markdown file")
    args = parser.parse_args(argv)
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seed_everything(0)
    lines = []
    say = lines.append
    profile = precision_profile("cpu")
    native = cpu_bf16_native()
    say("# CPU benchmark of the course recipe\n")
    say(f"- machine: {device_name('cpu')} ({platform.machine()}), {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}")
    say(f"- libraries: {', '.join(f'{k} {v}' for k, v in library_versions().items() if k != 'python')}")
    say(f"- native bf16 on this CPU: {native.native} ({native.evidence})")
    say(f"- precision the course chooses here: {profile.describe()}\n")

    fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    say(f"| matmul {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} | GFLOP/s |\n|---|---|")
    say(f"| fp32 | {fp32:.1f} |\n| bf16 | {bf16:.1f} |\n")
    run_bf16 = native.native and bf16 > fp32
    if not run_bf16:
        say(f"bf16 training and generation are **skipped**: bf16 is emulated here (matmul {fp32 / bf16:.0f}x slower "
            "than fp32), so one step would take minutes; the course trains in fp32 on this CPU.\n")

    path = find_base_model(verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    batch = batch_of(tokenizer, RECIPE.batch_size)
    tokens = int(batch["attention_mask"].sum())
    say(f"Training step: batch {RECIPE.batch_size}, {tokens} tokens (padded {batch['input_ids'].numel()}), "
        f"AdamW, median of {args.steps} steps after one untimed step.\n")
    say("| run | precision | s/step | achieved GFLOP/s | fraction of matmul rate |\n|---|---|---|---|---|")
    precisions = [("fp32", False, fp32)] + ([("bf16 autocast", True, bf16)] if run_bf16 else [])
    for kind in ("LoRA", "full"):
        for name, use_bf16, rate in precisions:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
            n_params = sum(p.numel() for p in model.parameters())
            if kind == "LoRA":
                model = get_peft_model(model, RECIPE.lora_config())
            flops = (4 if kind == "LoRA" else 6) * n_params * batch["input_ids"].numel()
            sec = seconds_per_step(model, batch, use_bf16, args.steps)
            achieved = flops / sec / 1e9
            say(f"| {kind} r={RECIPE.r} | {name} | {sec:.2f} | {achieved:.1f} | {achieved / rate:.0%} |"
                if kind == "LoRA" else f"| {kind} | {name} | {sec:.2f} | {achieved:.1f} | {achieved / rate:.0%} |")
            del model
    say("")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = prompts_of(make_task_splits("ngay_thang")["test"].select(range(16)))
    say("| greedy generation (16 prompts, 16 new tokens) | precision | tokens/s |\n|---|---|---|")
    for name, use_bf16, _ in precisions:
        generate(model, tokenizer, prompts[:2], max_new_tokens=4)  # warm-up
        start = time.perf_counter()
        with autocast(use_bf16):
            answers = generate(model, tokenizer, prompts, max_new_tokens=16)
        sec = time.perf_counter() - start
        n_new = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
        say(f"| batch of 16 | {name} | {n_new / sec:.1f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report, encoding="utf-8")
        print(f"written {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
