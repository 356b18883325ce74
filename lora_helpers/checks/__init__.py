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
``olora_finetuning``, ``lora_from_scratch_and_variants``, ``trl_peft_preference``, ``lora_silent_failures``): that
notebook's checks, tested in ``tests/test_checks_<the same name>.py``.

Everything is re-exported here, so notebooks and tests import from ``lora_helpers.checks``.
"""

from . import load_lora_adapter_example as _adapters
from . import lora_finetuning as _finetuning
from . import lora_from_scratch_and_variants as _scratch
from . import lora_silent_failures as _silent
from . import merge_lora_adapters as _merge
from . import olora_finetuning as _olora
from . import serving_many_adapters as _serving
from . import trl_peft_preference as _preference
from ._common import OK, TODO, WRONG, CheckResult, _as_int, _ok, _todo, _wrong  # noqa: F401 - the private ones for tests

# Each lesson module's public functions (its checks and the helpers its notebook calls) are re-exported by name.
__all__ = ["OK", "TODO", "WRONG", "CheckResult"]
for _module in (_adapters, _finetuning, _scratch, _merge, _olora, _serving, _preference, _silent):
    _public = [n for n, f in vars(_module).items() if callable(f) and getattr(f, "__module__", "") == _module.__name__
               and not n.startswith("_")]
    globals().update({n: getattr(_module, n) for n in _public})
    __all__ += _public
