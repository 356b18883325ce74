"""Broken adapter set-ups for the diagnosis exercise: four single faults a practitioner meets.

:func:`broken_adapter_cases` builds them from a working adapter and returns them under shuffled
letters, so the learner diagnoses each from its symptoms (its outputs, its layers, its weights),
not from the code that built it. The causes (:data:`CAUSES`):

* ``sai_mo_hinh_co_so``: the adapter loaded on another base model (here the base with another
  adapter already merged in: a fine-tuned derivative instead of the original);
* ``bo_dieu_hop_bi_tat``: the adapter loaded but switched off (``disable_adapter_layers()``);
* ``sai_lop_dich``: the adapter loaded with a config naming fewer target layers than it was
  trained on (peft then drops the other layers' weights);
* ``hop_nhat_hai_lan``: merged twice (a merged model taken for a base, the adapter loaded and
  merged again: W + 2·ΔW).
"""

from __future__ import annotations

import random
import warnings

CAUSES = {
    "sai_mo_hinh_co_so": "bộ điều hợp gắn lên sai mô hình cơ sở",
    "bo_dieu_hop_bi_tat": "bộ điều hợp đã nạp nhưng bị tắt",
    "sai_lop_dich": "bộ điều hợp gắn vào sai (thiếu) lớp đích",
    "hop_nhat_hai_lan": "bộ điều hợp bị hợp nhất hai lần",
}


def broken_adapter_cases(load_base, adapter_dir, other_adapter_dir, seed: int = 0) -> dict:
    """``{"A": model, "B": ..., "C": ..., "D": ...}``: one broken set-up per cause of :data:`CAUSES`, shuffled.

    ``load_base()`` returns a fresh base model; ``adapter_dir`` is the adapter that should be applied,
    ``other_adapter_dir`` another adapter for the same base (merged in to make the wrong base).
    """
    from peft import LoraConfig, PeftModel

    adapter_dir, other_adapter_dir = str(adapter_dir), str(other_adapter_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # peft warns about the dropped layers: that is the fault to find
        wrong_base = PeftModel.from_pretrained(load_base(), other_adapter_dir).merge_and_unload()
        disabled = PeftModel.from_pretrained(load_base(), adapter_dir)
        disabled.base_model.disable_adapter_layers()
        saved = LoraConfig.from_pretrained(adapter_dir)
        saved.target_modules = {"q_proj", "v_proj"}
        few_layers = PeftModel.from_pretrained(load_base(), adapter_dir, config=saved)
        once = PeftModel.from_pretrained(load_base(), adapter_dir).merge_and_unload()
        built = {
            "sai_mo_hinh_co_so": PeftModel.from_pretrained(wrong_base, adapter_dir),
            "bo_dieu_hop_bi_tat": disabled,
            "sai_lop_dich": few_layers,
            "hop_nhat_hai_lan": PeftModel.from_pretrained(once, adapter_dir).merge_and_unload(),
        }
    causes = list(built)
    random.Random(seed).shuffle(causes)
    return {letter: built[cause].eval() for letter, cause in zip("ABCD", causes)}
