"""Source of solutions/02_lora_finetuning_solutions.ipynb (exercises of notebooks/lora_finetuning.ipynb).

`python scripts/make_exercises.py --solutions` writes it (and its exercise twin); then execute both."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import NotebookBuilder, write  # noqa: E402

NAME = "02_lora_finetuning_solutions.ipynb"


def build():
    nb = NotebookBuilder(NAME)
    nb.header(
        title="Bài tập 2: Đếm tham số, huấn luyện và mổ xẻ một lớp LoRA",
        lesson="lora_finetuning.ipynb",
        lesson_title="Bài 2: Tinh chỉnh mô hình bằng LoRA với TRL",
        what="Bạn sẽ tự tính số tham số huấn luyện được (trainable parameters) của một `LoraConfig`, huấn luyện một bộ "
             "điều hợp (adapter) với hạng (rank) và tập lớp khác rồi so đường mất mát (loss), và tính tay "
             "ΔW = (alpha/r)·B·A của một lớp.",
        runtime="bản có lời giải khoảng nửa phút đến một phút trên CPU 2 nhân (hai lần huấn luyện, mỗi lần 6 bước); "
                "bản chưa làm khoảng 10 giây (các ô huấn luyện chỉ chạy khi bạn đã làm bài).",
    )
    nb.md("## Chuẩn bị: thư viện, mô hình cơ sở, dữ liệu")
    nb.code("""
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

import datasets
import matplotlib.pyplot as plt
import torch
import transformers
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
from trl import SFTTrainer

from lora_helpers.adapters import course_root, demo_adapter_path
from lora_helpers.checks import (check_curve_comparison, check_delta_weight, check_lora_config_spec,
                                 check_lora_output, check_lora_param_count, check_trained_lora)
from lora_helpers.data import make_task_splits, to_prompt_completion
from lora_helpers.env import pick_device, pick_dtype, seed_everything
from lora_helpers.models import find_base_model
from lora_helpers.plotting import plot_loss_curves
from lora_helpers.training import loss_history, sft_config

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
datasets.disable_progress_bars()
seed_everything(0)
DEVICE = pick_device()
DTYPE = pick_dtype(DEVICE)
""")
    nb.code("""
TASK = "ngay_thang"
SEED = 0
SO_BUOC = 6 if DEVICE == "cpu" else 30     # số bước của mỗi lần huấn luyện ở bài 3
BATCH_SIZE = 4
OUT = course_root() / "outputs" / "bai_tap_02"   # thư mục tạm, .gitignore bỏ qua

BASE_PATH = find_base_model()
tokenizer = AutoTokenizer.from_pretrained(BASE_PATH)
train_ds = to_prompt_completion(make_task_splits(TASK, n_train=64, n_val=8, n_test=8, seed=SEED)["train"])

def load_base(dtype=DTYPE):
    \"\"\"A fresh copy of the base model (training wraps the model it is given, so each run needs its own).\"\"\"
    return AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=dtype).to(DEVICE)

mo_hinh = load_base()
""")
    nb.md("Kích thước các lớp tuyến tính của SmolLM2-135M: đây là mọi thứ bạn cần cho bài 1 và 2.")
    nb.code("""
# NBVAL_CHECK_OUTPUT
print("Số khối (block) Transformer:", mo_hinh.config.num_hidden_layers)
print("Các lớp tuyến tính trong mỗi khối (W có kích thước d_out × d_in):")
for name, layer in mo_hinh.model.layers[0].named_modules():
    if isinstance(layer, torch.nn.Linear):
        print(f"  {name:<16} d_in = {layer.in_features:>4}   d_out = {layer.out_features:>4}")
""")

    # ------------------------------------------------------------------ exercise 1
    nb.md("""
## 🐢 Bài 1: Tính tay số tham số của một LoraConfig

LoRA gắn vào mỗi lớp được chọn hai ma trận: A (r × d_in) và B (d_out × r). Tính số tham số huấn luyện được mà cấu hình dưới đây thêm vào **toàn bộ** mô hình. Viết phép tính bằng các con số ở bảng trên (đừng gọi peft: ô kiểm tra sẽ đếm bằng peft để so).
""")
    nb.code("""
cau_hinh_qv = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
""")
    nb.code("""
### BEGIN SOLUTION
so_tham_so_qv = 30 * 4 * ((576 + 576) + (576 + 192))
### END SOLUTION
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_lora_param_count(so_tham_so_qv, mo_hinh, cau_hinh_qv)
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** Mỗi khối có `q_proj` (576 → 576) và `v_proj` (576 → 192): `v_proj` nhỏ hơn vì SmolLM2 dùng *grouped-query attention* (3 đầu key/value cho 9 đầu query). Mỗi lớp thêm r·(d_in + d_out) tham số, nhân với 30 khối. Sai thường gặp: coi `v_proj` là 576 × 576, hoặc nhân với r ± 1.
<!-- END SOLUTION -->
""")

    # ------------------------------------------------------------------ exercise 2
    nb.md("""
## 🐢 Bài 2: Cả bảy lớp tuyến tính (`"all-linear"`)

Cấu hình của hai bộ điều hợp mẫu: r = 8, gắn vào mọi lớp tuyến tính của mỗi khối (`lm_head` không tính). Số tham số là bao nhiêu?
""")
    nb.code("""
cau_hinh_all = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")
""")
    nb.code("""
### BEGIN SOLUTION
so_tham_so_all = 30 * 8 * (
    (576 + 576) + (576 + 192) + (576 + 192) + (576 + 576)      # q, k, v, o
    + (576 + 1536) + (576 + 1536) + (1536 + 576)                # gate, up, down
)
### END SOLUTION
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_lora_param_count(so_tham_so_all, mo_hinh, cau_hinh_all)
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** Ba lớp MLP (`gate_proj`, `up_proj`, `down_proj`) chiếm gần 2/3 số tham số LoRA vì chúng rộng (1536). Đây cũng là số tham số của mỗi bộ điều hợp mẫu trong `adapters/` (so với mục 7 của bài học 1).
<!-- END SOLUTION -->
""")

    # ------------------------------------------------------------------ exercise 3
    nb.md("""
## 🐕 Bài 3: Hạng nhỏ hơn, ít lớp hơn: học có chậm hơn?

(a) Tạo `cau_hinh`: một `LoraConfig` với r = 4, lora_alpha = 8 (giữ alpha/r = 2 như cấu hình mốc), chỉ gắn vào bốn lớp attention `q_proj`, `k_proj`, `v_proj`, `o_proj`. Thêm `lora_dropout=0.0, task_type="CAUSAL_LM"` như bài học.
""")
    nb.code("""
### BEGIN SOLUTION
cau_hinh = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
### END SOLUTION
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_lora_config_spec(cau_hinh, r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
""")
    nb.md("""
Ô dưới huấn luyện **cấu hình mốc** (r = 8, all-linear) trong `SO_BUOC` bước trên tác vụ `ngay_thang` (chỉ chạy khi bạn đã làm phần a). Đọc kỹ: bạn sẽ viết một ô giống nó.
""")
    nb.code("""
lich_su = None
if cau_hinh is not None:
    seed_everything(SEED)
    trainer_moc = SFTTrainer(
        model=load_base(),
        args=sft_config(str(OUT / "moc"), max_steps=SO_BUOC, batch_size=BATCH_SIZE, eval_steps=None, seed=SEED),
        train_dataset=train_ds,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules="all-linear"),
    )
    trainer_moc.remove_callback(PrinterCallback)      # không in từng dòng log; ta vẽ đồ thị
    trainer_moc.train()
    lich_su = {"r=8, all-linear": loss_history(trainer_moc)}
    print(f"Mốc: {SO_BUOC} bước, loss huấn luyện ở bước cuối {lich_su['r=8, all-linear']['train'][-1][1]:.3f}")
""")
    nb.md("""
(b) Huấn luyện `cau_hinh` của bạn **y như mốc** (cùng hạt giống `SEED`, cùng dữ liệu, cùng `sft_config(...)` nhưng thư mục `OUT / "cua_ban"`, một mô hình cơ sở mới từ `load_base()`). Đặt trainer vào `trainer_cua_ban` và gọi `.train()`.
""")
    nb.code("""
### BEGIN SOLUTION
seed_everything(SEED)
trainer_cua_ban = SFTTrainer(
    model=load_base(),
    args=sft_config(str(OUT / "cua_ban"), max_steps=SO_BUOC, batch_size=BATCH_SIZE, eval_steps=None, seed=SEED),
    train_dataset=train_ds,
    processing_class=tokenizer,
    peft_config=cau_hinh,
)
trainer_cua_ban.remove_callback(PrinterCallback)
trainer_cua_ban.train()
print(f"Xong {trainer_cua_ban.state.global_step} bước")
### END SOLUTION
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_trained_lora(trainer_cua_ban, r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], steps=SO_BUOC)
""")
    nb.code("""
if trainer_cua_ban is not None and lich_su is not None:
    lich_su["r=4, attention"] = loss_history(trainer_cua_ban)
    for ten, h in lich_su.items():
        print(f"{ten:<16} loss: " + "  ".join(f"{loss:.2f}" for _, loss in h["train"]))
    plot_loss_curves(lich_su, title=f"{TASK}: {SO_BUOC} bước, cùng dữ liệu và hạt giống")
    plt.show()
""")
    nb.md("""
(c) Lần chạy nào kết thúc với loss huấn luyện thấp hơn ở bước cuối? Gán **tên** của nó (một khoá của `lich_su`) cho `chay_tot_hon`.
""")
    nb.code("""
### BEGIN SOLUTION
chay_tot_hon = min(lich_su, key=lambda ten: lich_su[ten]["train"][-1][1])
### END SOLUTION
""")
    nb.code("""
check_curve_comparison(chay_tot_hon, lich_su)
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** Hai lần chạy thấy đúng cùng các lô dữ liệu theo cùng thứ tự (cùng `SEED`), nên so loss từng bước là công bằng. Cấu hình attention-only với r = 4 có ít tham số hơn nhiều và không chạm tới các lớp MLP; ô kiểm tra so các con số của chính lần chạy này. Sáu bước là rất ít: đây là so sánh *tốc độ học lúc đầu*, không phải chất lượng cuối cùng. Muốn kết luận chắc hơn: chạy lâu hơn, đo loss trên tập kiểm định (validation set) và độ chính xác trên tập kiểm tra (test set), và lặp với vài hạt giống.
<!-- END SOLUTION -->
""")

    # ------------------------------------------------------------------ exercise 4
    nb.md("""
## 🦁 Bài 4: Mổ xẻ một lớp LoRA đã huấn luyện

Ta nạp bộ điều hợp mẫu `ngay_thang` (đã huấn luyện) và lấy lớp `v_proj` của khối đầu tiên. Trong lớp này: `lop.base_layer.weight` là W (đóng băng), `lop.lora_A["default"].weight` là A, `lop.lora_B["default"].weight` là B, và `lop.scaling["default"]` là hệ số alpha/r.

(a) Tính `delta_w` = ΔW = (alpha/r)·B·A, cùng kích thước với W.
""")
    nb.code("""
mo_hinh_nt = PeftModel.from_pretrained(load_base(torch.float32), demo_adapter_path("ngay_thang")).eval()
lop = mo_hinh_nt.base_model.model.model.layers[0].self_attn.v_proj
print("W:", tuple(lop.base_layer.weight.shape), " A:", tuple(lop.lora_A["default"].weight.shape),
      " B:", tuple(lop.lora_B["default"].weight.shape))
""")
    nb.code("""
### BEGIN SOLUTION
delta_w = lop.scaling["default"] * lop.lora_B["default"].weight @ lop.lora_A["default"].weight
### END SOLUTION
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_delta_weight(delta_w, lop)
""")
    nb.md("""
(b) Với đầu vào `x` (2 vector, mỗi vector d_in = 576 số), tính **bằng tay** đầu ra của lớp LoRA, `y_tu_tinh` = W·x + (alpha/r)·B·A·x, không gọi `lop(x)`. Nhớ rằng trong PyTorch mỗi hàng của `x` là một vector, nên W·x viết là `x @ W.T`.
""")
    nb.code("""
x = torch.randn(2, lop.in_features, generator=torch.Generator().manual_seed(0))
""")
    nb.code("""
### BEGIN SOLUTION
y_tu_tinh = x @ lop.base_layer.weight.T + lop.scaling["default"] * (x @ lop.lora_A["default"].weight.T @ lop.lora_B["default"].weight.T)
### END SOLUTION
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_lora_output(y_tu_tinh, lop, x)
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** Khi suy luận, peft không bao giờ dựng ΔW (d_out × d_in): nó tính `x @ A.T` (chỉ r = 8 số mỗi vector) rồi `@ B.T`, rẻ hơn nhiều. Dựng ΔW chỉ cần khi *hợp nhất* (merge): W' = W + ΔW, chủ đề của bài học tiếp theo. Phần (b) cũng cho thấy vì sao hợp nhất không đổi kết quả: `x @ (W + ΔW).T` bằng `x @ W.T + x @ ΔW.T` (đúng trong toán học; trên máy tính chỉ lệch ở mức làm tròn).
<!-- END SOLUTION -->
""")
    nb.md("""
## Tóm tắt
- Số tham số LoRA = Σ r·(d_in + d_out) trên các lớp được gắn; đọc d_in, d_out từ chính mô hình (grouped-query attention làm `k_proj`, `v_proj` nhỏ hơn).
- Đổi hạng hoặc tập lớp thì đổi cả số tham số lẫn tốc độ học; so sánh công bằng cần cùng dữ liệu, cùng hạt giống, cùng số bước.
- Một lớp LoRA tính W·x + (alpha/r)·B·(A·x); ΔW = (alpha/r)·B·A chỉ cần dựng khi hợp nhất.

Quay lại bài học: [Bài 2: Tinh chỉnh mô hình bằng LoRA với TRL](../notebooks/lora_finetuning.ipynb).
""")
    return nb.notebook()


if __name__ == "__main__":
    write(build(), NAME)
