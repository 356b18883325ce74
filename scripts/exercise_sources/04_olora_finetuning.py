"""Source of solutions/04_olora_finetuning_solutions.ipynb (exercises of notebooks/olora_finetuning.ipynb).

`python scripts/make_exercises.py --solutions` writes it (and its exercise twin); then execute both."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import NotebookBuilder, write  # noqa: E402

NAME = "04_olora_finetuning_solutions.ipynb"
LESSON_TITLE = "Bài 4: OLoRA: khởi tạo bộ điều hợp từ phân rã QR"


def build():
    nb = NotebookBuilder(NAME)
    nb.header(
        title="Bài tập 4: OLoRA bằng tay, trọng số bị dịch, và chuyển đổi sang LoRA thường",
        lesson="olora_finetuning.ipynb",
        lesson_title=LESSON_TITLE,
        what="Bạn sẽ tự tính phép khởi tạo OLoRA trên một lớp (phân rã QR (QR decomposition) của trọng số (weights) "
             "rồi dịch trọng số), đếm xem `get_peft_model` đã sửa bao nhiêu lớp của mô hình cơ sở (base model) ngay "
             "trong bộ nhớ, rồi lưu một bộ điều hợp (adapter) OLoRA đã huấn luyện thành bộ điều hợp LoRA thường và "
             "chứng minh bằng phép kiểm tra khớp (`check_parity`) rằng nó cho cùng kết quả trên mô hình cơ sở gốc.",
        runtime="bản có lời giải dưới một phút trên CPU 2 nhân (phần lớn là 6 bước huấn luyện ở bài 3); "
                "bản chưa làm khoảng 10 giây (việc huấn luyện nằm trong phần bạn tự viết).",
    )
    nb.md("## Chuẩn bị: thư viện, mô hình gốc, dữ liệu")
    nb.code("""
import json
import shutil
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

import datasets
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, PrinterCallback
from trl import SFTTrainer

from lora_helpers.adapters import course_root, display_path
from lora_helpers.checks import (check_olora_conversion, check_olora_init, check_olora_parity,
                                 check_shifted_layer_count)
from lora_helpers.data import make_task_splits, prompts_of, to_prompt_completion
from lora_helpers.env import pick_device, seed_everything
from lora_helpers.models import find_base_model, load_tokenizer
from lora_helpers.parity import check_parity, default_tolerance, max_logit_diff
from lora_helpers.training import loss_history, sft_config

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
datasets.disable_progress_bars()
START = time.perf_counter()
seed_everything(0)
DEVICE = pick_device()
""")
    nb.code("""
TASK = "ngay_thang"
SEED = 0
LORA_R, LORA_ALPHA = 4, 8           # cả ba bài: hạng r = 4, hệ số tỉ lệ s = alpha/r = 2
TARGETS = ["q_proj", "v_proj"]
SO_BUOC = 6 if DEVICE == "cpu" else 30      # số bước huấn luyện ở bài 3
BATCH_SIZE = 8
N_PARITY = 8                        # số câu của tập kiểm tra (test set) dùng cho phép kiểm tra khớp
OUT = course_root() / "outputs" / "bai_tap_04"   # thư mục tạm của riêng bài tập này, .gitignore bỏ qua
INIT_DIR = OUT / "olora_khoi_tao"                 # không có dấu chấm: peft dùng tên thư mục làm tên bộ điều hợp
CONVERTED_DIR = OUT / "olora_chuyen_doi"
if OUT.exists():
    shutil.rmtree(OUT)              # chạy lại cả notebook thì bắt đầu sạch (chỉ xoá thư mục tạm này)
print("Bài 3 lưu bộ điều hợp vào:", display_path(OUT))

BASE_PATH = find_base_model()
tokenizer = load_tokenizer(BASE_PATH)
SPLITS = make_task_splits(TASK, seed=SEED)
train_ds = to_prompt_completion(SPLITS["train"])
TEST = SPLITS["test"].select(range(N_PARITY))

def load_base():
    \"\"\"A fresh copy of the base model in float32 (parity is checked at the fp32 tolerance).\"\"\"
    return AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=torch.float32).to(DEVICE).eval()

# Mô hình gốc: mốc của mọi phép so sánh. Đừng bao giờ đưa chính nó vào get_peft_model.
mo_hinh_goc = load_base()
""")

    # ------------------------------------------------------------------ exercise 1
    nb.md("""
## 🐢 Bài 1: OLoRA bằng tay trên một lớp

OLoRA (`LoraConfig(init_lora_weights="olora")`) không khởi tạo A ngẫu nhiên và B = 0 như LoRA thường. Với trọng số W (d_out × d_in) của một lớp, nó:

1. phân rã QR: W = Q·R (Q có các cột trực chuẩn (orthonormal), R là ma trận tam giác trên (upper triangular)), tính ở float32;
2. lấy `B` = r **cột** đầu của Q (d_out × r) và `A` = r **hàng** đầu của R (r × d_in);
3. **dịch** trọng số cơ sở: W' = W − s·B·A với s = lora_alpha / r, để ở bước 0 mô hình vẫn cho đúng đầu ra cũ (W'x + s·B·A·x = Wx).

Làm lại ba bước đó cho lớp `q_proj` của khối (block) `model.layers[3]`, với r = `LORA_R` = 4 và lora_alpha = `LORA_ALPHA` = 8, bằng `torch.linalg.qr`. Đặt kết quả vào `A`, `B` và `W_dich` (tức W'). Làm trên bản sao `W` bên dưới, đừng sửa `lop.weight` của mô hình.
""")
    nb.code("""
lop = mo_hinh_goc.model.layers[3].self_attn.q_proj
W = lop.weight.detach().clone()     # bản sao: sửa W không đụng tới mô hình gốc
print("W:", tuple(W.shape), W.dtype)
""")
    nb.code("""
### BEGIN SOLUTION
Q, R = torch.linalg.qr(W.float())   # phân rã rút gọn: Q (d_out × k), R (k × d_in), k = min(d_out, d_in)
A = R[:LORA_R]                      # r hàng đầu của R
B = Q[:, :LORA_R]                   # r cột đầu của Q
W_dich = W - (LORA_ALPHA / LORA_R) * B @ A
### END SOLUTION
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_olora_init(A, B, W_dich, lop.weight, LORA_R, LORA_ALPHA)
""")
    nb.md("Ô dưới (chỉ chạy khi bạn đã làm bài 1) đo hai điều: W' khác W bao nhiêu, và ở bước 0 lớp OLoRA có cho đúng đầu ra của lớp gốc không, trên vài vector ngẫu nhiên.")
    nb.code("""
if W_dich is not None:
    x = torch.randn(4, W.shape[1], generator=torch.Generator().manual_seed(SEED))
    s = LORA_ALPHA / LORA_R
    chenh_buoc_0 = (x @ W_dich.T + s * (x @ A.T) @ B.T - x @ W.T).abs().max().item()
    print(f"‖W‖ = {W.norm():.2f}   ‖W_dich‖ = {W_dich.norm():.2f}   ‖W − W_dich‖ = {(W - W_dich).norm():.2f}")
    print(f"Đầu ra ở bước 0: W_dich·x + s·B·A·x lệch W·x nhiều nhất {chenh_buoc_0:.1e} "
          f"(đầu ra lớn cỡ {(x @ W.T).abs().max().item():.0f})")
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** `torch.linalg.qr` mặc định cho phân rã *rút gọn*; `R[:r]` là r hàng đầu (hàng 0 đến r−1) và `Q[:, :r]` là r cột đầu. Ô kiểm tra so với `olora_factors` của `lora_helpers.olora`, hàm làm lại đúng các bước của peft (`LoraLayer.olora_init`). Các sai thường gặp, mỗi cái có thông báo riêng: đổi chỗ A và B, lấy hàng của Q thay vì cột, giữ cả Q và R, lấy r + 1 thành phần, quên hệ số s trong phép dịch (chỉ trừ B·A), trừ sai dấu.

Để ý ‖W_dich‖ = ‖W‖ dù phần bị trừ rất lớn: B·A = Q_r·Q_rᵀ·W là hình chiếu của W lên r cột đầu của Q, nên với s = 2, W' = (I − 2·Q_r·Q_rᵀ)·W là một phép phản xạ: giữ độ dài, đổi hướng. Đầu ra ở bước 0 chỉ lệch ở mức làm tròn float32, nhưng trọng số trong bộ nhớ đã khác xa bản gốc.
<!-- END SOLUTION -->
""")

    # ------------------------------------------------------------------ exercise 2
    nb.md("""
## 🐕 Bài 2: `get_peft_model` đã dịch bao nhiêu lớp của mô hình cơ sở?

peft làm phép dịch của bài 1 cho **mọi** lớp được gắn bộ điều hợp, và ghi W' thẳng vào `base_layer.weight` của chúng.

(a) Tạo `mo_hinh_olora`: `get_peft_model` trên một mô hình cơ sở **mới** (`load_base()`), với `LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, init_lora_weights="olora", target_modules=TARGETS, lora_dropout=0.0, task_type="CAUSAL_LM")`.

(b) Tự viết vòng lặp đếm `so_lop_bi_dich`: số lớp có bộ điều hợp mà trọng số cơ sở (`lop.base_layer.weight`) khác trọng số của lớp cùng tên trong `mo_hinh_goc`. Duyệt `mo_hinh_olora.base_model.model.named_modules()` và giữ các module có thuộc tính `lora_A`: tên của chúng trùng với tên lớp trong `mo_hinh_goc` (`mo_hinh_goc.get_submodule(tên)`); so bằng `torch.equal`. (Đừng gọi `base_weight_changes` của bài học: ô kiểm tra dùng nó để so với bạn.)

Cẩn thận: `get_peft_model` sửa **tại chỗ** mô hình bạn truyền vào.
""")
    nb.code("""
### BEGIN SOLUTION
mo_hinh_olora = get_peft_model(load_base(), LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, init_lora_weights="olora",
                                                       target_modules=TARGETS, lora_dropout=0.0, task_type="CAUSAL_LM"))
so_lop_bi_dich = 0
for ten, lop_lora in mo_hinh_olora.base_model.model.named_modules():
    if hasattr(lop_lora, "lora_A"):
        if not torch.equal(lop_lora.base_layer.weight, mo_hinh_goc.get_submodule(ten).weight):
            so_lop_bi_dich += 1
### END SOLUTION
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_shifted_layer_count(so_lop_bi_dich, mo_hinh_olora, mo_hinh_goc, r=LORA_R, target_modules=TARGETS)
""")
    nb.md("Đầu ra của cả mô hình (chỉ chạy khi bạn đã làm bài 2): ở bước 0, mô hình OLoRA so với mô hình gốc; rồi **tắt** bộ điều hợp (`disable_adapter()`), khi đó chỉ còn lại các trọng số đã bị dịch W'.")
    nb.code("""
if mo_hinh_olora is not None:
    PROBE = tokenizer([tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts_of(TEST)],
                      return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    buoc_0 = max_logit_diff(mo_hinh_goc, mo_hinh_olora, PROBE["input_ids"], PROBE["attention_mask"])
    with mo_hinh_olora.disable_adapter():
        khi_tat = max_logit_diff(mo_hinh_goc, mo_hinh_olora, PROBE["input_ids"], PROBE["attention_mask"])
    print(f"Bước 0, mô hình OLoRA vs mô hình gốc: chênh lệch logits lớn nhất {buoc_0:.1e} "
          f"(ngưỡng float32 {default_tolerance(torch.float32):g})")
    print(f"Tắt bộ điều hợp OLoRA (chỉ còn W'): chênh lệch logits lớn nhất {khi_tat:.1f}")
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** Mỗi khối có hai lớp được gắn bộ điều hợp (`q_proj`, `v_proj`), nên mọi lớp đó đều bị dịch; các lớp khác (`k_proj`, `o_proj`, MLP) không đổi. Bẫy kinh điển: viết `mo_hinh_olora = get_peft_model(mo_hinh_goc, ...)` rồi so `mo_hinh_olora` với `mo_hinh_goc`. Hai biến khi đó trỏ tới cùng các trọng số (đã bị dịch tại chỗ), nên đếm ra 0 và ta kết luận sai rằng OLoRA "không đổi gì". Muốn so với bản gốc thì phải có một bản gốc **nạp riêng** mà không bao giờ bọc bộ điều hợp. Ô trên cho thấy hệ quả: bật bộ điều hợp thì logits gần như trùng mô hình gốc, tắt đi thì lệch hàng chục, vì thứ còn lại là W' chứ không phải W.
<!-- END SOLUTION -->
""")

    # ------------------------------------------------------------------ exercise 3
    nb.md("""
## 🦁 Bài 3: Chuyển OLoRA thành LoRA thường, và chứng minh nó khớp

Bộ điều hợp OLoRA đã huấn luyện chỉ đúng khi đi cùng W' (nằm trong bộ nhớ của bạn); người khác chỉ có W. peft chuyển nó thành một bộ điều hợp LoRA thường dùng thẳng trên W (hạng 2r: ghép [A; A₀] và [B, −B₀]) nếu bạn giữ lại bản **lúc khởi tạo**. Làm theo thứ tự:

1. `mo_hinh_huan_luyen`: một mô hình OLoRA mới, cấu hình như bài 2, trên `load_base()`.
2. Lưu nó vào `INIT_DIR` (`save_pretrained`) **trước** khi huấn luyện.
3. Huấn luyện bằng hàm `huan_luyen(mo_hinh_huan_luyen)` ở ô dưới (`SO_BUOC` bước, tốc độ học (learning rate) 1e-3, lô (batch) 8 câu).
4. Lưu bản chuyển đổi vào `CONVERTED_DIR`: `save_pretrained(..., path_initial_model_for_weight_conversion=str(INIT_DIR))`.
5. `mo_hinh_chuyen_doi`: nạp bản chuyển đổi lên một mô hình cơ sở **mới** bằng `PeftModel.from_pretrained`.
6. `kiem_tra_chuyen_doi`: kết quả của phép kiểm tra khớp (parity check) `check_parity(mo_hinh_huan_luyen, mo_hinh_chuyen_doi, tokenizer, dataset=TEST)`, giữ ngưỡng mặc định.

(Truyền đường dẫn dạng chuỗi: `str(INIT_DIR)`.)
""")
    nb.code("""
def huan_luyen(peft_model):
    \"\"\"Train ``peft_model`` (a PeftModel, modified in place) for SO_BUOC steps on the task; return the loss per step.\"\"\"
    seed_everything(SEED)
    trainer = SFTTrainer(
        model=peft_model,
        args=sft_config(str(OUT / "huan_luyen"), max_steps=SO_BUOC, learning_rate=1e-3, batch_size=BATCH_SIZE,
                        eval_steps=None, seed=SEED),
        train_dataset=train_ds,
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)      # không in từng dòng log
    start = time.perf_counter()
    trainer.train()
    peft_model.eval()
    losses = [loss for _, loss in loss_history(trainer)["train"]]
    print(f"Huấn luyện {SO_BUOC} bước trong {time.perf_counter() - start:.0f} s; loss huấn luyện "
          + " → ".join(f"{loss:.2f}" for loss in losses))
    return losses
""")
    nb.code("""
### BEGIN SOLUTION
mo_hinh_huan_luyen = get_peft_model(load_base(), LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, init_lora_weights="olora",
                                                            target_modules=TARGETS, lora_dropout=0.0, task_type="CAUSAL_LM"))
mo_hinh_huan_luyen.save_pretrained(str(INIT_DIR))           # bản lúc khởi tạo, TRƯỚC khi huấn luyện
huan_luyen(mo_hinh_huan_luyen)
mo_hinh_huan_luyen.save_pretrained(str(CONVERTED_DIR), path_initial_model_for_weight_conversion=str(INIT_DIR))
mo_hinh_chuyen_doi = PeftModel.from_pretrained(load_base(), str(CONVERTED_DIR)).eval()
kiem_tra_chuyen_doi = check_parity(mo_hinh_huan_luyen, mo_hinh_chuyen_doi, tokenizer, dataset=TEST)
### END SOLUTION
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_olora_conversion(CONVERTED_DIR, LORA_R, LORA_ALPHA, target_modules=TARGETS)
""")
    nb.code("""
if kiem_tra_chuyen_doi is not None:
    print(kiem_tra_chuyen_doi.details())
    cfg = json.loads((CONVERTED_DIR / "adapter_config.json").read_text(encoding="utf-8"))
    print(f"{display_path(CONVERTED_DIR)}: r = {cfg['r']}, lora_alpha = {cfg['lora_alpha']}, "
          f"init_lora_weights = {cfg['init_lora_weights']!r}")
""")
    nb.code("""
# NBVAL_CHECK_OUTPUT
check_olora_parity(kiem_tra_chuyen_doi, mo_hinh_huan_luyen, mo_hinh_chuyen_doi, r=LORA_R)
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** W' + s·B·A = W + s·(B·A − B₀·A₀) = W + s·[B, −B₀]·[A; A₀]: vì vậy peft cần A₀, B₀ (bản trong `INIT_DIR`) và bản chuyển đổi có hạng 2r; peft nhân đôi cả r lẫn `lora_alpha` nên s = alpha/r giữ nguyên, và ghi `init_lora_weights: true` để khi nạp **không** dịch trọng số cơ sở nữa. Hai ô kiểm tra bắt các sai thường gặp:
- lưu thường, không chuyển đổi: `adapter_config.json` còn `r = 4`, `init_lora_weights: "olora"`; nạp lên mô hình cơ sở, peft tính lại QR và dịch W lần nữa. Nó cũng "khớp", nhưng bằng cách sửa mô hình cơ sở của người dùng;
- lưu `INIT_DIR` **sau** khi huấn luyện: A₀ = A, B₀ = B, nên ΔW của bản chuyển đổi bằng 0 và phép kiểm tra khớp thất bại (bản chuyển đổi chỉ là mô hình gốc);
- nới ngưỡng, hoặc so nhầm cặp mô hình. Chênh lệch logits của cặp đúng nhỏ nhưng **khác 0**: hai mô hình tính W'x + s·B(Ax) và Wx + s·B'(A'x), bằng nhau trên giấy nhưng làm tròn khác nhau; chênh lệch đúng bằng 0 là dấu hiệu đã so một mô hình với chính nó.
<!-- END SOLUTION -->
""")
    nb.md("""
## Thử thêm (không có ô kiểm tra)
- Lưu `mo_hinh_huan_luyen` theo cách thường (không có `path_initial_model_for_weight_conversion`) vào một thư mục khác trong `OUT`, nạp nó lên `load_base()`, rồi đếm các lớp có trọng số cơ sở bị thay đổi bằng `base_weight_changes(mo_hinh_goc, ...)` (`from lora_helpers.olora import base_weight_changes`). Làm y như vậy với `mo_hinh_chuyen_doi`: bản nào sửa mô hình cơ sở của người dùng?
- Huấn luyện một bộ LoRA thường và một bộ OLoRA cùng cấu hình, ở tốc độ học 2e-4 thay vì 1e-3, rồi so số bước mỗi bên cần để loss xuống dưới một ngưỡng (`steps_to_reach` của `lora_helpers.training`). Bài học cho thấy lợi thế của OLoRA phụ thuộc tốc độ học: kết quả của bạn có giống không?
- Làm lại bài 3 với `init_lora_weights="pissa"` (phân rã SVD thay cho QR): công thức chuyển đổi y hệt.
""")
    nb.code("""
print(f"Cả notebook chạy trong {time.perf_counter() - START:.0f} s trên {DEVICE}")
""")
    nb.md(f"""
## Tóm tắt
- OLoRA: W = Q·R, B = Q[:, :r], A = R[:r], rồi trọng số cơ sở bị dịch thành W' = W − (alpha/r)·B·A, để đầu ra ở bước 0 không đổi.
- `get_peft_model` ghi W' vào mọi lớp được gắn bộ điều hợp, **tại chỗ**: muốn so với mô hình gốc phải nạp một bản riêng; tắt bộ điều hợp không trả về mô hình gốc.
- Để chia sẻ bộ điều hợp OLoRA: `save_pretrained(INIT_DIR)` trước khi huấn luyện, rồi `save_pretrained(thư_mục, path_initial_model_for_weight_conversion=INIT_DIR)`; kết quả là một bộ LoRA thường hạng 2r, nạp lên mô hình cơ sở gốc và khớp mô hình đã huấn luyện dưới ngưỡng float32.

Quay lại bài học: [{LESSON_TITLE}](../notebooks/olora_finetuning.ipynb).
""")
    return nb.notebook()


if __name__ == "__main__":
    write(build(), NAME)
