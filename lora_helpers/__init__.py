"""Helpers for the Vietnamese LoRA course: plumbing only (finding the model, data, measuring, checking).

The lessons call transformers, peft and trl directly; this package hides what is not worth learning (where the
offline model lives, how to time a call, how to plot). A lesson imports every helper it uses from here
(``from lora_helpers import make_task_splits, check_parity``); :data:`EXPORTS` says which module defines each
one (read it there to see how it is done), and ``docs/helpers.md`` lists them with the lessons that use them.
The exercise checks live in :mod:`lora_helpers.checks`, the number style in :mod:`lora_helpers.numbers`
(imported as ``fmt``). Names are resolved on first use, so ``import lora_helpers`` stays light (no torch).
"""

from __future__ import annotations

import importlib

from .errors import CourseError
from .lesson import start_lesson

# module -> the names a learner meets from it (tests/test_repository.py: each is used by some notebook, and every
# notebook imports its helpers from here).
EXPORTS = {
    "adapters": ("check_adapter_base", "course_root", "demo_adapter_path", "DEMO_ADAPTERS", "directory_size",
                 "display_path", "human_size", "load_adapter_checked", "save_adapter", "set_adapter_checked"),
    "bench": ("compare_generation_latency",),
    "broken": ("broken_adapter_cases", "CAUSES"),
    "data": ("check_messages_dataset", "get_task", "make_task_splits", "make_unseen_split", "parse_json_object",
             "prompts_of", "TASKS", "to_prompt_completion"),
    "env": ("autocast_wrapped", "seed_everything"),
    "evaluation": ("evaluate_task", "evaluate_task_fast", "generate", "score_answer", "teacher_forced_scores"),
    "figures": ("show_figure",),
    "health": ("adapter_health",),
    "merging": ("available_memory", "lora_layers", "merge_checked", "merge_memory_breakdown", "save_merged"),
    "models": ("find_base_model", "load_tokenizer"),
    "olora": ("base_weight_changes", "effective_update_norm", "moving_average"),
    "params": ("lora_param_count", "lora_param_table", "PeakMemory", "trainable_parameters",
               "training_memory_estimate", "training_state_bytes"),
    "parity": ("check_parity", "default_tolerance", "max_logit_diff"),
    "plotting": ("plot_histograms", "plot_loss_curves", "plot_metric_curves"),
    "preferences": ("ANSWER_KINDS", "check_preference_dataset", "classify_date_answer", "completion_logps",
                    "dpo_log_curves", "implicit_reward_margins", "make_preference_splits",
                    "MISTAKES", "preference_accuracy"),
    "quantization": ("requantization_loss",),
    "recipe": ("RECIPE",),
    "records": ("read_records", "stale_records", "sweep_specs", "VARIANT_RUN", "VARIANT_SEEDS"),
    "serving": ("BASE", "check_request_adapters", "compare_answers", "evaluate_router", "generate_batch",
                "hotswap_checked", "parameter_bytes", "serve_by_switching", "serve_merged", "serve_mixed",
                "TABLE_HEADER"),
    "stats": ("accuracy", "accuracy_of", "BETTER", "compare_independent", "compare_paired", "compare_seeds",
              "UNRESOLVED", "WORSE"),
    "training": ("check_lora_config", "estimate_callback", "loss_history", "read_metrics", "sft_config",
                 "steps_to_reach", "train_lora_adapter"),
    "variants": ("lora_scaling", "make_batches", "merge_parity", "step_seconds", "train_variant", "variant_config",
                 "variant_data", "VARIANT_LABELS"),
}
_MODULE_OF = {name: module for module, names in EXPORTS.items() for name in names}

__all__ = ["CourseError", "start_lesson", *sorted(_MODULE_OF, key=str.lower)]
__version__ = "0.1.0"


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'lora_helpers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_MODULE_OF))
