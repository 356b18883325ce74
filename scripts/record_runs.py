"""Record the runs of a sweep (lora_helpers.records), one committed JSON file per run, skipping those already there.

    python scripts/record_runs.py rank_seeds            # train and record every run whose file is missing
    python scripts/record_runs.py rank_seeds --list     # what the sweep holds and what is recorded, nothing run
    python scripts/record_runs.py rank_seeds --keys r8_seed0,r8_seed1

An SFT run is ``lora_helpers.training.train_lora_adapter`` with the run's task and recipe (validation loss at the
end), then ``lora_helpers.evaluation.teacher_forced_scores`` on the recipe's ``n_test`` test rows: accuracy (the
greedy verdict, exact for the exact-string task ``ngay_thang``) and the mean log-probability per gold token (the
low-noise number to compare runs with). A variant run is ``lora_helpers.variants.train_variant`` on
``variants.variant_data`` with the run's settings (lesson 6 does the same calls), measured the same way. The record holds the configuration, its hash and where it was measured
(``records.provenance``). Measure alone: a run's seconds are part of its record.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from lora_helpers import records
from lora_helpers.errors import CourseError


def run_variant(spec: records.RunSpec, device: str | None = None) -> dict:
    """Train and measure a variant run (lesson 6); the ``results`` of its record."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lora_helpers.env import pick_device
    from lora_helpers.models import find_base_model
    from lora_helpers.variants import train_variant, variant_data

    s = spec.settings
    device = device or pick_device()
    base_path = find_base_model()
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    _, train_examples, val_batches, test_rows = variant_data(spec.task, tokenizer, s["n_train"], s["n_val"],
                                                             s["n_test"], s["max_length"], seed=s["data_seed"])
    run = train_variant(s["variant"], lambda: AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).to(device),
                        tokenizer, train_examples, val_batches, test_rows, r=s["r"], lora_alpha=s["lora_alpha"],
                        target_modules=tuple(s["target_modules"]), steps=s["steps"], batch_size=s["batch_size"],
                        learning_rate=s["learning_rate"], seed=s["seed"])
    return {"eval_loss": run.val_loss, "train_losses": run.losses, "test_accuracy": run.test_accuracy,
            "test_correct": run.test_correct, "n_test": run.n_test,
            "test_gold_logprob_per_token": run.test_gold_logprob_per_token, "steps": len(run.losses),
            "seconds_per_step": round(run.seconds_per_step, 3), "trainable": run.trainable}


def run_one(spec: records.RunSpec, device: str | None = None) -> dict:
    """Train ``spec`` and measure it; the ``results`` of its record."""
    if spec.variant_run is not None:
        return run_variant(spec, device)
    from lora_helpers.evaluation import teacher_forced_scores
    from lora_helpers.training import train_lora_adapter

    run = train_lora_adapter(spec.task, spec.recipe, device=device, validate=True, verbose=False)
    scores = teacher_forced_scores(run.model, run.tokenizer, run.test_rows)
    log = run.trainer.state.log_history
    evals = [e["eval_loss"] for e in log if "eval_loss" in e]
    per_token = [lp / n for lp, n in zip(scores["gold_logprob"], scores["gold_tokens"])]
    return {
        "eval_loss": evals[-1] if evals else None,
        "train_loss_last_step": [e["loss"] for e in log if "loss" in e][-1],
        "test_accuracy": scores["accuracy"],
        "test_correct": scores["correct"],
        "n_test": scores["n"],
        "test_gold_logprob_per_token": statistics.fmean(per_token),
        "steps": run.trainer.state.global_step,
        "train_seconds": round(run.train_seconds, 2),
    }


def main(argv=None, root=None, device: str | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="tên loạt chạy: " + ", ".join(sorted(records.SWEEPS)))
    parser.add_argument("--keys", default=None, help="chỉ các lần chạy này (cách nhau bằng dấu phẩy)")
    parser.add_argument("--list", action="store_true", help="chỉ liệt kê, không chạy gì")
    args = parser.parse_args(argv)
    try:
        specs = records.sweep_specs(args.sweep)
    except CourseError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.keys:
        wanted = set(args.keys.split(","))
        unknown = wanted - {s.key for s in specs}
        if unknown:
            print(f"Loạt chạy {args.sweep} không có: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        specs = [s for s in specs if s.key in wanted]
    stale = records.stale_records(root)
    if stale:
        print("Kết quả đã ghi không còn khớp mã (xoá rồi ghi lại):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    todo = [s for s in specs if not records.record_path(s, root).exists()]
    for spec in specs:
        print(f"{spec.key:<16} {'chưa ghi' if spec in todo else 'đã ghi'}  {records.config_hash(spec.config())}")
    if args.list:
        return 0
    for i, spec in enumerate(todo, 1):
        results = run_one(spec, device=device)
        path = records.write_record(spec, results, root, device=device)
        print(f"[{i}/{len(todo)}] {spec.key}: loss kiểm định {results['eval_loss']:.4f}, "
              f"độ chính xác {results['test_accuracy']:.0%} trên {results['n_test']} câu, "
              f"{results.get('train_seconds', results.get('seconds_per_step', 0) * results['steps']):.0f} s → {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
