"""Source of solutions/01_load_lora_adapter_solutions.ipynb (exercises of notebooks/load_lora_adapter_example.ipynb).

`python scripts/make_exercises.py --solutions` writes it (and its exercise twin); then execute both."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import NotebookBuilder, write  # noqa: E402

NAME = "01_load_lora_adapter_solutions.ipynb"


def build():
    nb = NotebookBuilder(NAME)
    nb.header(
        title="Bài tập 1: Nạp, định tuyến và kết hợp bộ điều hợp LoRA",
        lesson="load_lora_adapter_example.ipynb",
        lesson_title="Bài 1: Nạp và chuyển đổi bộ điều hợp LoRA",
        what="Bạn sẽ nạp hai bộ điều hợp (adapter) mẫu `don_hang` và `ngay_thang` lên cùng một mô hình cơ sở (base model), "
             "viết hàm định tuyến (routing) gửi mỗi câu hỏi tới đúng bộ điều hợp, rồi kết hợp hai bộ điều hợp bằng "
             "`add_weighted_adapter` và đo xem bộ kết hợp làm từng tác vụ tốt đến đâu.",
        runtime="bản có lời giải khoảng nửa phút đến một phút trên CPU 2 nhân; bản chưa làm khoảng 10 giây.",
    )
    nb.md("## Chuẩn bị: thư viện, mô hình cơ sở, dữ liệu")
    nb.code("""
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")
warnings.filterwarnings("ignore", category=FutureWarning)

import torch
import transformers
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from lora_helpers.adapters import DEMO_ADAPTERS, demo_adapter_path
from lora_helpers.checks import (check_loaded_adapters, check_routed_answers, check_router, check_task_scores,
                                 check_weighted_adapter)
from lora_helpers.data import make_task_splits
from lora_helpers.env import pick_device, pick_dtype, seed_everything
from lora_helpers.evaluation import evaluate_task, generate
from lora_helpers.models import find_base_model

transformers.utils.logging.disable_progress_bar()
seed_everything(0)
DEVICE = pick_device()
DTYPE = pick_dtype(DEVICE)
""")
    nb.code("""
BASE_PATH = find_base_model()
ADAPTERS = {task: demo_adapter_path(task) for task in DEMO_ADAPTERS}   # {"don_hang": thư mục, "ngay_thang": thư mục}
N_EVAL = 8 if DEVICE == "cpu" else 50        # số câu của tập kiểm tra (test set) mỗi tác vụ ở bài 4
TEST = {task: make_task_splits(task)["test"].select(range(N_EVAL)) for task in DEMO_ADAPTERS}

mo_hinh_co_so = AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=DTYPE).to(DEVICE).eval()
tokenizer = AutoTokenizer.from_pretrained(BASE_PATH)
tokenizer.padding_side = "left"
""")

    # ------------------------------------------------------------------ exercise 1
    nb.md("""
## 🐢 Bài 1: Nạp hai bộ điều hợp lên một mô hình

Tạo `mo_hinh`: mô hình cơ sở `mo_hinh_co_so` mang **cả hai** bộ điều hợp trong `ADAPTERS`, mỗi bộ mang đúng tên tác vụ của nó (`"don_hang"`, `"ngay_thang"`).

Nhắc lại: bộ thứ nhất dùng `PeftModel.from_pretrained(mô_hình, thư_mục, adapter_name=...)`, bộ thứ hai dùng `mo_hinh.load_adapter(thư_mục, adapter_name=...)`.
""")
    nb.code("""
### BEGIN SOLUTION
mo_hinh = PeftModel.from_pretrained(mo_hinh_co_so, ADAPTERS["don_hang"], adapter_name="don_hang")
mo_hinh.load_adapter(ADAPTERS["ngay_thang"], adapter_name="ngay_thang")
print("Các bộ điều hợp đã nạp:", list(mo_hinh.peft_config))
### END SOLUTION
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_loaded_adapters(mo_hinh)
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** Nếu quên `adapter_name`, peft đặt tên `default` và bộ thứ hai sẽ không biết gọi tên gì; nếu tráo thư mục với tên, mọi thứ vẫn chạy nhưng `set_adapter("don_hang")` lại bật bộ ngày tháng. Ô kiểm tra so từng tensor LoRA trong mô hình với tệp `adapter_model.safetensors` của thư mục cùng tên nên phát hiện được cả hai lỗi.
<!-- END SOLUTION -->
""")

    # ------------------------------------------------------------------ exercise 2
    nb.md("""
## 🐕 Bài 2: Hàm định tuyến (routing)

Một hệ thống nhiều bộ điều hợp phải chọn bộ điều hợp cho từng yêu cầu. Viết hàm `chon_bo_dieu_hop(cau_hoi)`: nhận **nội dung** câu hỏi (một chuỗi) và trả về `"don_hang"` hoặc `"ngay_thang"`.

Ô kiểm tra thử hàm của bạn trên 40 câu hỏi **mới** (không có trong notebook này). Hai câu ví dụ, mỗi tác vụ một câu:
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
for task in DEMO_ADAPTERS:
    print(f"{task:>10}: {TEST[task][0]['messages'][0]['content']}")
""")
    nb.code("""
### BEGIN SOLUTION
def chon_bo_dieu_hop(cau_hoi):
    \"\"\"Route by the instruction that opens every course prompt.\"\"\"
    return "don_hang" if cau_hoi.startswith("Trích đơn hàng") else "ngay_thang"
### END SOLUTION
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_router(chon_bo_dieu_hop)
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** Câu hỏi của mỗi tác vụ mở đầu bằng một lời dặn riêng, nên nhìn phần mở đầu là đủ. Trong hệ thống thật, lời dặn không cố định: người ta định tuyến bằng một bộ phân loại nhỏ, hoặc để người gọi chỉ rõ bộ điều hợp (ví dụ tham số `adapter_names` của peft cho từng dòng trong một lô).
<!-- END SOLUTION -->
""")

    # ------------------------------------------------------------------ exercise 3
    nb.md("""
## 🐕 Bài 3: Trả lời một lô câu hỏi lẫn lộn

`CAU_HOI` trộn câu hỏi của hai tác vụ. Với **mỗi** câu: bật bộ điều hợp mà `chon_bo_dieu_hop` chọn (`mo_hinh.set_adapter(...)`), rồi sinh câu trả lời bằng `generate(mo_hinh, tokenizer, [tin_nhắn], max_new_tokens=80)` (hàm trả về một danh sách chuỗi). Gom các câu trả lời, đúng thứ tự, vào danh sách `tra_loi`.

Mỗi dòng của `CAU_HOI` là một ví dụ của tập dữ liệu: `row["messages"][:-1]` là tin nhắn của người dùng (bỏ câu trả lời mẫu ở cuối), `row["messages"][0]["content"]` là nội dung câu hỏi.
""")
    nb.code("""
CAU_HOI = [TEST[task][i] for i in range(3) for task in ("ngay_thang", "don_hang")]
print(len(CAU_HOI), "câu hỏi")
""")
    nb.code("""
### BEGIN SOLUTION
tra_loi = []
for row in CAU_HOI:
    mo_hinh.set_adapter(chon_bo_dieu_hop(row["messages"][0]["content"]))
    tra_loi += generate(mo_hinh, tokenizer, [row["messages"][:-1]], max_new_tokens=80)
### END SOLUTION
""")
    nb.code("""
if tra_loi is not None:
    for row, answer in zip(CAU_HOI, tra_loi):
        print(f"[{row['task']:>10}] {answer[:90]}")
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_routed_answers(tra_loi, CAU_HOI)
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** Ô kiểm tra nhận ra câu đi nhầm bộ điều hợp qua *định dạng*: bộ `ngay_thang` trả một ngày `YYYY-MM-DD` kể cả khi được hỏi về đơn hàng, còn bộ `don_hang` trả JSON. Đúng định dạng chưa có nghĩa là đúng nội dung: độ chính xác thì đo như bài 4.

Sinh từng câu một thì chậm; khi có nhiều câu, gom các câu cùng bộ điều hợp thành một lô, hoặc dùng `mo_hinh.generate(..., adapter_names=[...])` để mỗi dòng trong lô dùng một bộ điều hợp.
<!-- END SOLUTION -->
""")

    # ------------------------------------------------------------------ exercise 4
    nb.md("""
## 🦁 Bài 4: Kết hợp hai bộ điều hợp bằng `add_weighted_adapter`

Liệu một bộ điều hợp duy nhất có làm được cả hai tác vụ? peft có `add_weighted_adapter` để tạo một bộ điều hợp mới từ các bộ đã nạp.

1. Tạo bộ điều hợp tên `"ket_hop"` có ΔW **đúng bằng** ΔW(don_hang) + ΔW(ngay_thang) (trọng số 1.0 và 1.0) trong mọi lớp, rồi bật nó. Đọc docstring của `add_weighted_adapter`: kiểu kết hợp (`combination_type`) nào cho tổng chính xác, kiểu nào chỉ xấp xỉ?
2. Đo độ chính xác của bộ `"ket_hop"` trên `TEST[task]` của từng tác vụ bằng `evaluate_task(mo_hinh, tokenizer, TEST[task])`, lưu vào dict `ket_qua = {task: kết_quả}`.
""")
    nb.code("""
### BEGIN SOLUTION
mo_hinh.add_weighted_adapter(["don_hang", "ngay_thang"], [1.0, 1.0], adapter_name="ket_hop", combination_type="cat")
mo_hinh.set_adapter("ket_hop")
### END SOLUTION
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_weighted_adapter(mo_hinh, "ket_hop", ["don_hang", "ngay_thang"], [1.0, 1.0])
""")
    nb.code("""
### BEGIN SOLUTION
ket_qua = {task: evaluate_task(mo_hinh, tokenizer, TEST[task]) for task in DEMO_ADAPTERS}
### END SOLUTION
""")
    nb.code("""
check_task_scores(ket_qua, TEST)
""")
    nb.md("So sánh với từng bộ điều hợp riêng lẻ trên chính tác vụ của nó (ô này chỉ chạy khi bạn đã có `ket_qua`):")
    nb.code("""
if ket_qua is not None:
    print(f"{'tác vụ':<12}{'bộ riêng':>10}{'bộ ket_hop':>12}   (trên {N_EVAL} câu mỗi tác vụ)")
    for task in DEMO_ADAPTERS:
        mo_hinh.set_adapter(task)
        alone = evaluate_task(mo_hinh, tokenizer, TEST[task])["accuracy"]
        print(f"{task:<12}{alone:>10.0%}{ket_qua[task]['accuracy']:>12.0%}")
    for task in DEMO_ADAPTERS:
        print(f"\\nVí dụ `{task}` với bộ ket_hop: {ket_qua[task]['predictions'][0][:90]!r}")
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** `combination_type="cat"` ghép các ma trận A (nhân sẵn trọng số và hệ số alpha/r) và các ma trận B của hai bộ, nên B·A của bộ mới đúng bằng tổng hai ΔW, với hạng bằng tổng hai hạng (8 + 8 = 16). `"svd"` (mặc định) cắt tổng về hạng nhỏ hơn, `"linear"` trộn A với A, B với B: cả hai chỉ xấp xỉ tổng, nên ô kiểm tra báo sai.

Cộng đúng hai ΔW vẫn không cho "hai bộ trong một": mỗi ΔW được huấn luyện khi bộ kia **không** có mặt, nên khi cộng, một bộ có thể lấn át bộ kia. Đọc bảng trên: tác vụ nào giữ được độ chính xác, tác vụ nào mất, và câu trả lời ví dụ có đúng định dạng của tác vụ không. Đó là lý do bài học chọn cách *định tuyến* (bài 2, 3): giữ các bộ điều hợp riêng và bật đúng bộ cho từng yêu cầu. Muốn một bộ làm được cả hai, hãy huấn luyện nó trên dữ liệu trộn của hai tác vụ.
<!-- END SOLUTION -->
""")
    nb.md("""
## Tóm tắt
- Một mô hình cơ sở mang được nhiều bộ điều hợp, mỗi bộ một tên; `set_adapter` chọn bộ đang bật.
- Định tuyến = chọn đúng bộ điều hợp cho từng yêu cầu; sai bộ thì sai cả định dạng câu trả lời.
- `add_weighted_adapter(..., combination_type="cat")` cộng chính xác các ΔW; cộng được không có nghĩa là giữ được cả hai kỹ năng: luôn đo lại trên từng tác vụ.

Quay lại bài học: [Bài 1: Nạp và chuyển đổi bộ điều hợp LoRA](../notebooks/load_lora_adapter_example.ipynb).
""")
    return nb.notebook()


if __name__ == "__main__":
    write(build(), NAME)
