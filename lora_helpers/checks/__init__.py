"""Checks for the exercise notebooks: each says, in Vietnamese, whether an answer is right.

Every ``check_*`` function takes the learner's answer (plus whatever reference it needs)
and returns a :class:`CheckResult`. Shown in a notebook (the last line of a cell), the
result prints one message:

* ``✅ Đúng rồi! ...`` when the answer is right;
* ``❌ Chưa đúng: <what is wrong>`` followed by ``💡 Gợi ý: <hint>`` when it is not;
* ``⏳ Câu này chưa làm ...`` when the answer is still ``None`` (the placeholder of
  an unanswered exercise notebook), so an unanswered notebook runs top to bottom.

A check never raises on a strange answer: anything it cannot read is reported as wrong,
with what it expected.

Each check is a table of known mistakes (:mod:`.kit`: ``@check``, ``Table``, ``Mistake``): the truth is computed
from the model or data, never taken from the learner; each row says "if the answer shows this slip, tell the
learner this problem and this hint". The tests walk the same tables (``tests/test_checks_<notebook>.py``): the
reference answer passes and every row's example is reported by that row.

Layout: the kit, one shared module, and one module per lesson named after its notebook
(``load_lora_adapter_example``, ``lora_finetuning``, ``merge_lora_adapters``, ``serving_many_adapters``,
``olora_finetuning``, ``lora_from_scratch_and_variants``, ``trl_peft_preference``): that notebook's checks, tested
in ``tests/test_checks_<the same name>.py``.

Everything is re-exported here, so notebooks and tests import from ``lora_helpers.checks``.
"""

from ._common import OK, TODO, WRONG, CheckResult
from ._common import _as_int as _as_int
from ._common import _never_raises as _never_raises
from ._common import _ok as _ok
from ._common import _todo as _todo
from ._common import _wrong as _wrong
from .load_lora_adapter_example import (
    answer_format,
    check_adapter_choice,
    check_loaded_adapters,
    check_reload_parity,
    check_routed_answers,
    check_router,
    check_task_scores,
    check_weighted_adapter,
)
from .lora_finetuning import (
    check_curve_comparison,
    check_delta_weight,
    check_lora_budget,
    check_lora_config_spec,
    check_lora_output,
    check_lora_param_count,
    check_sft_config,
    check_trained_lora,
    sft_brief,
)
from .lora_from_scratch_and_variants import (
    check_lora_forward,
    check_scaling,
    check_scratch_parity,
    check_seed_verdict,
)
from .merge_lora_adapters import (
    check_diagnosis,
    check_drift_detected,
    check_merge_decision,
    check_merged_model,
    check_parity_passed,
)
from .olora_finetuning import (
    check_olora_conversion,
    check_olora_init,
    check_olora_parity,
    check_olora_share_decision,
    check_shifted_layer_count,
)
from .serving_many_adapters import (
    check_manual_routes,
    check_mixed_batch,
    check_safe_hotswap,
    manual_routing_requests,
    mixed_batch_requests,
)
from .trl_peft_preference import _eval_logps as _eval_logps
from .trl_peft_preference import (
    check_dpo_decision,
    check_dpo_numbers,
    check_dpo_trainer,
    check_preference_pairs,
    check_reference_logps,
)

__all__ = [
    "OK", "TODO", "WRONG", "CheckResult", "answer_format", "check_adapter_choice", "check_curve_comparison",
    "check_delta_weight", "check_diagnosis", "check_dpo_decision", "check_olora_share_decision", "check_lora_budget", "check_merge_decision", "check_reload_parity",
    "check_sft_config",
    "check_dpo_numbers", "check_dpo_trainer", "check_drift_detected", "check_loaded_adapters", "check_lora_config_spec",
    "check_lora_output", "check_lora_param_count", "check_merged_model", "check_olora_conversion", "check_olora_init",
    "check_olora_parity", "check_parity_passed", "check_preference_pairs", "check_reference_logps",
    "check_routed_answers", "check_router", "check_shifted_layer_count", "check_task_scores", "check_trained_lora",
    "check_weighted_adapter", "sft_brief", "check_manual_routes", "check_mixed_batch", "check_safe_hotswap",
    "manual_routing_requests", "mixed_batch_requests",
    "check_scaling", "check_lora_forward", "check_scratch_parity", "check_seed_verdict",
]
