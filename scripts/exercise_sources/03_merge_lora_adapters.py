"""Source of solutions/03_merge_lora_adapters_solutions.ipynb (exercises of notebooks/merge_lora_adapters.ipynb).

`python scripts/make_exercises.py --solutions` writes it (and its exercise twin); then execute both."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import NotebookBuilder, write  # noqa: E402

NAME = "03_merge_lora_adapters_solutions.ipynb"


def build():
    nb = NotebookBuilder(NAME)
    nb.header(
        title="Bài tập 3: Hợp nhất bộ điều hợp và chứng minh mô hình không đổi",
        lesson="merge_lora_adapters.ipynb",
        lesson_title="Bài 3: Hợp nhất bộ điều hợp vào mô hình, lưu, và kiểm chứng",
        what="Bạn sẽ hợp nhất (merge) bộ điều hợp (adapter) mẫu `ngay_thang` vào mô hình cơ sở (base model) mà không làm "
             "hỏng mô hình tham chiếu, cố ý hợp nhất ở sai độ chính xác số (dtype) rồi bắt lỗi đó bằng phép kiểm tra "
             "khớp (`lora_helpers.parity.check_parity`), và tự viết phép hợp nhất không cần peft.",
        runtime="bản có lời giải khoảng nửa phút đến một phút trên CPU 2 nhân; bản chưa làm khoảng 10 giây.",
    )
    nb.md("## Chuẩn bị: thư viện, mô hình tham chiếu, dữ liệu")
    nb.code("""
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")
warnings.filterwarnings("ignore", category=FutureWarning)

import torch
import transformers
from peft import PeftModel
from transformers import AutoModelForCausalLM

from lora_helpers.adapters import demo_adapter_path
from lora_helpers.checks import check_drift_detected, check_merged_model, check_parity_passed
from lora_helpers.data import make_task_splits
from lora_helpers.env import pick_device, seed_everything
from lora_helpers.models import find_base_model, load_tokenizer
from lora_helpers.parity import check_parity

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
seed_everything(0)
DEVICE = pick_device()
""")
    nb.code("""
TASK = "ngay_thang"
N_PARITY = 8                      # số câu của tập kiểm tra (test set) dùng cho phép kiểm tra khớp
BASE_PATH = find_base_model()
tokenizer = load_tokenizer(BASE_PATH)
TEST = make_task_splits(TASK)["test"].select(range(N_PARITY))

def load_base(dtype=torch.float32):
    \"\"\"A fresh copy of the base model in ``dtype``.\"\"\"
    return AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=dtype).to(DEVICE).eval()

# Mô hình tham chiếu của mọi phép so sánh: float32 + bộ điều hợp, CHƯA hợp nhất. Đừng hợp nhất chính nó.
mo_hinh_bo_dieu_hop = PeftModel.from_pretrained(load_base(), demo_adapter_path(TASK)).eval()
""")

    # ------------------------------------------------------------------ exercise 1
    nb.md("""
## 🐢 Bài 1: Hợp nhất mà vẫn giữ mô hình tham chiếu

Tạo `mo_hinh_hop_nhat`: bộ điều hợp `ngay_thang` đã hợp nhất vào trọng số (weights) của mô hình cơ sở, ở float32. Cẩn thận: `merge_and_unload()` sửa mô hình **tại chỗ**; nếu gọi nó trên `mo_hinh_bo_dieu_hop`, bạn mất luôn mô hình tham chiếu. Hãy nạp một mô hình cơ sở mới (`load_base()`), gắn bộ điều hợp (`demo_adapter_path(TASK)`) rồi hợp nhất.
""")
    nb.code("""
### BEGIN SOLUTION
mo_hinh_hop_nhat = PeftModel.from_pretrained(load_base(), demo_adapter_path(TASK)).merge_and_unload()
### END SOLUTION
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_merged_model(mo_hinh_hop_nhat, mo_hinh_bo_dieu_hop)
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** Ô kiểm tra so từng lớp: trọng số của mô hình hợp nhất phải bằng W + (alpha/r)·B·A tính từ mô hình tham chiếu. Nó phân biệt được `unload()` (gỡ bộ điều hợp, **bỏ** ΔW: trọng số trở về W) với `merge_and_unload()` (cộng ΔW vào W). Cách khác để giữ tham chiếu: `merge_checked(mo_hinh_bo_dieu_hop, copy=True)` của `lora_helpers.merging` hợp nhất một bản sao.
<!-- END SOLUTION -->
""")
    nb.md("Phép kiểm tra khớp (parity) so hai mô hình trên đầu ra: logits, câu sinh tham lam (greedy) và độ chính xác. Với bản hợp nhất đúng ở float32 (ô này chỉ chạy khi bạn đã làm bài 1):")
    nb.code("""
# NBVAL_CHECK_OUTPUT
if mo_hinh_hop_nhat is not None:
    print(check_parity(mo_hinh_bo_dieu_hop, mo_hinh_hop_nhat, tokenizer, dataset=TEST).verdict())
""")

    # ------------------------------------------------------------------ exercise 2
    nb.md("""
## 🐕 Bài 2: Hợp nhất ở sai độ chính xác số, và bắt được lỗi đó

Trên GPU người ta hay nạp mô hình ở bfloat16 rồi hợp nhất luôn ở đó. Hãy làm đúng điều đó:

1. `mo_hinh_sai_dtype`: mô hình cơ sở nạp ở `torch.bfloat16`, gắn bộ điều hợp `ngay_thang`, hợp nhất.
2. `kiem_tra_dtype`: kết quả của `check_parity(tham_chiếu, mô_hình_cần_kiểm_tra, tokenizer, dataset=TEST)`, với tham chiếu là `mo_hinh_bo_dieu_hop` (float32, chưa hợp nhất). Giữ ngưỡng (tolerance) mặc định: câu hỏi là bản hợp nhất có *giống* mô hình bạn đã kiểm tra không.
""")
    nb.code("""
### BEGIN SOLUTION
mo_hinh_sai_dtype = PeftModel.from_pretrained(load_base(torch.bfloat16), demo_adapter_path(TASK)).merge_and_unload()
kiem_tra_dtype = check_parity(mo_hinh_bo_dieu_hop, mo_hinh_sai_dtype, tokenizer, dataset=TEST)
### END SOLUTION
""")
    nb.code("""
if kiem_tra_dtype is not None:
    print(kiem_tra_dtype.details())
""")
    nb.code("""
check_drift_detected(kiem_tra_dtype, mo_hinh_sai_dtype)
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** bfloat16 chỉ giữ khoảng 2–3 chữ số có nghĩa: W bị làm tròn khi nạp, ΔW nhỏ bị làm tròn mất một phần khi cộng vào W, và mọi phép tính sau đó cũng ở bfloat16. Chênh lệch logits vì thế lớn hơn ngưỡng float32 rất nhiều, và đọc `details()` để biết các câu sinh có đổi không. Nới ngưỡng cho "qua" là tự lừa mình; cách đúng: hợp nhất ở float32 (độ chính xác đã huấn luyện và kiểm tra), kiểm tra khớp, rồi mới đổi sang bfloat16 nếu cần, và kiểm tra lại mô hình bfloat16 đó với ngưỡng của bfloat16 (`default_tolerance(torch.bfloat16)`) như bài học làm.
<!-- END SOLUTION -->
""")

    # ------------------------------------------------------------------ exercise 3
    nb.md("""
## 🦁 Bài 3: Tự hợp nhất, không dùng `merge_and_unload`

Viết phép hợp nhất bằng tay: nạp một mô hình cơ sở mới `mo_hinh_tay = load_base()`, rồi với **mọi** lớp LoRA của `mo_hinh_bo_dieu_hop` (những module có thuộc tính `lora_A`, duyệt bằng `mo_hinh_bo_dieu_hop.base_model.model.named_modules()`: tên của chúng trùng với tên lớp tương ứng trong `mo_hinh_tay`), cộng ΔW = (alpha/r)·B·A vào `weight` của lớp cùng tên trong `mo_hinh_tay` (trong `torch.no_grad()`). Cuối cùng chứng minh bằng `check_parity` (ngưỡng mặc định) rằng `mo_hinh_tay` khớp mô hình tham chiếu; lưu kết quả vào `kiem_tra_tay`.
""")
    nb.code("""
### BEGIN SOLUTION
mo_hinh_tay = load_base()
with torch.no_grad():
    for ten, lop in mo_hinh_bo_dieu_hop.base_model.model.named_modules():
        if hasattr(lop, "lora_A"):
            A, B = lop.lora_A["default"].weight, lop.lora_B["default"].weight
            mo_hinh_tay.get_submodule(ten).weight += lop.scaling["default"] * (B @ A)
kiem_tra_tay = check_parity(mo_hinh_bo_dieu_hop, mo_hinh_tay, tokenizer, dataset=TEST)
### END SOLUTION
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_merged_model(mo_hinh_tay, mo_hinh_bo_dieu_hop)
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_parity_passed(kiem_tra_tay)
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** Đó chính là việc `merge_and_unload()` làm cho từng lớp (cộng thêm vài kiểm tra: `safe_merge=True` xem tổng có NaN không, rồi thay lớp LoRA bằng lớp thường). Quên một lớp, quên hệ số alpha/r, hay cộng hai lần đều làm logits lệch xa hơn ngưỡng float32, và ô kiểm tra trọng số chỉ ra lớp sai.
<!-- END SOLUTION -->
""")
    nb.md("""
## Tóm tắt
- `merge_and_unload()` cộng ΔW vào W **tại chỗ**; muốn giữ mô hình tham chiếu thì hợp nhất một mô hình khác (hoặc một bản sao). `unload()` thì bỏ ΔW.
- Hợp nhất ở độ chính xác số thấp (bfloat16, float16) làm mô hình lệch khỏi mô hình đã kiểm tra; phép kiểm tra khớp với ngưỡng của tham chiếu bắt được lỗi đó, đừng nới ngưỡng để nó "qua".
- Hợp nhất chỉ là W' = W + (alpha/r)·B·A ở mỗi lớp; một phép kiểm tra khớp chứng minh bản hợp nhất (của peft hay của bạn) tương đương mô hình có bộ điều hợp.

Quay lại bài học: [Bài 3: Hợp nhất bộ điều hợp vào mô hình, lưu, và kiểm chứng](../notebooks/merge_lora_adapters.ipynb).
""")
    return nb.notebook()


if __name__ == "__main__":
    write(build(), NAME)
