"""Builder of notebooks/olora_finetuning.ipynb (lesson 4: OLoRA, QR initialisation, conversion to LoRA).

`python scripts/notebook_sources/olora_finetuning.py` writes the unexecuted notebook (then execute it
with `make notebooks`); `--smoke OUT` writes a tiny-step variant to OUT for a quick check."""
from _builder import SETUP_CELL, SMOKE, code, md, write_notebook

md("""
# Bài 4: OLoRA: khởi tạo bộ điều hợp từ phân rã QR

<a href="https://colab.research.google.com/github/lora-course-vi/lora-course-vi/blob/main/notebooks/olora_finetuning.ipynb" target="_parent"><img src="https://colab.research.google.com/assets/colab-badge.svg" alt="Mở trong Colab"/></a>

**Bạn sẽ học được:**
- OLoRA (`LoraConfig(init_lora_weights="olora")`) khởi tạo bộ điều hợp (adapter) từ phân rã QR (QR decomposition) của từng trọng số (weights) W, rồi **dịch** W để đầu ra của mô hình ở bước 0 không đổi; ta làm lại từng bước trên một lớp;
- vì sao sau đó trọng số của mô hình cơ sở (base model) **trong bộ nhớ** không còn là trọng số gốc;
- kiểm chứng lời hứa "OLoRA hội tụ nhanh hơn" trên chính mô hình và tác vụ của khoá học: cùng dữ liệu, hạt giống, hạng (rank, r), tốc độ học, số bước; ở hai tốc độ học;
- lưu bộ điều hợp OLoRA sao cho dùng được trên mô hình cơ sở **gốc** (`save_pretrained(..., path_initial_model_for_weight_conversion=...)`), nạp lại và chứng minh nó cho cùng kết quả; vì sao bộ điều hợp sau khi chuyển đổi có hạng 2r;
- khi nào **không** nên dùng OLoRA.

**Thời gian chạy:** khoảng 5 phút trên CPU 2 nhân; khoảng 1 phút trên GPU Colab.

Tác vụ: `ngay_thang` như bài 2: đọc một câu tiếng Việt có ngày tháng và trả lời đúng một ngày dạng `YYYY-MM-DD`.
""")
code(SETUP_CELL)
md("## 1. Thư viện, hạt giống ngẫu nhiên, thiết bị")
code("""
import copy
import json
import shutil
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")   # thanh tiến trình của tqdm trong Jupyter

import matplotlib.pyplot as plt
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTTrainer

from lora_helpers.adapters import course_root, demo_adapter_path, directory_size, human_size
from lora_helpers.data import make_task_splits, prompts_of, to_prompt_completion
from lora_helpers.env import pick_device, print_environment, seed_everything
from lora_helpers.evaluation import evaluate_task, generate
from lora_helpers.models import find_base_model
from lora_helpers.olora import base_weight_changes, effective_update_norm, moving_average, olora_factors
from lora_helpers.parity import check_parity, default_tolerance
from lora_helpers.plotting import plot_loss_curves
from lora_helpers.training import check_lora_config, loss_history, sft_config, steps_to_reach

import datasets
from transformers import PrinterCallback

transformers.utils.logging.set_verbosity_error()          # bớt thông báo không cần thiết
transformers.utils.logging.disable_progress_bar()
datasets.disable_progress_bars()
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

LESSON_START = time.perf_counter()
seed_everything(0)
DEVICE = pick_device()
DTYPE = torch.float32          # cả bài ở float32: phép so sánh logits cần độ chính xác số (dtype) cao
print_environment()
""")
md("## 2. Cấu hình\nMọi hằng số của bài nằm ở đây. Trên CPU ta dùng ít bước để cả bài chạy trong khoảng 5 phút; trên GPU có thể tăng lên.")
if SMOKE:
    steps = ("2", "1", "2", "4", "16", "1", "2")
else:
    steps = ("10 if DEVICE == \"cpu\" else 60", "2 if DEVICE == \"cpu\" else 10", "8 if DEVICE == \"cpu\" else 40", "20 if DEVICE == \"cpu\" else 50",
             "400", "3", "8")
code(f"""
TASK = "ngay_thang"
SEED = 0
MAX_STEPS = {steps[0]}          # số bước huấn luyện của MỖI lần chạy (LoRA và OLoRA như nhau)
EVAL_STEPS = {steps[1]}                               # đánh giá trên tập kiểm định sau mỗi EVAL_STEPS bước
N_VAL = {steps[2]}              # số ví dụ tập kiểm định
N_TEST = {steps[3]}             # số ví dụ tập kiểm tra
N_TRAIN_ROWS = {steps[4]}
BATCH_SIZE = 8
MAX_NEW_TOKENS = 16             # câu trả lời chỉ khoảng 10 token
LORA_R, LORA_ALPHA = 8, 16      # như bài 2: hệ số tỉ lệ s = alpha/r = 2
LEARNING_RATES = (1e-3, 2e-4)   # tốc độ học của bài 2, và một tốc độ nhỏ hơn 5 lần
SMOOTH = {steps[5]}                                   # làm mượt loss huấn luyện: trung bình SMOOTH bước liên tiếp
N_PARITY = {steps[6]}           # số câu của tập kiểm tra dùng để so khớp sau khi chuyển đổi
TOL = default_tolerance(DTYPE)  # ngưỡng chênh lệch logits "bằng nhau ở mức làm tròn float32" (giải thích ở dưới)
OUT = course_root() / "outputs" / "olora_finetuning"   # thư mục bị .gitignore bỏ qua

BASE_PATH = find_base_model()
splits = make_task_splits(TASK, n_train=N_TRAIN_ROWS, n_val=N_VAL, n_test=N_TEST, seed=SEED)
train_ds = to_prompt_completion(splits["train"])
val_ds = to_prompt_completion(splits["validation"])
test_ds = splits["test"]
if OUT.exists():
    shutil.rmtree(OUT)               # bắt đầu sạch mỗi lần chạy lại cả bài
OUT.mkdir(parents=True)
""")
code("""
# NBVAL_CHECK_OUTPUT
print({k: len(v) for k, v in splits.items()})
print("Một ví dụ huấn luyện:")
print("  prompt    :", train_ds[0]["prompt"][-1]["content"])
print("  completion:", train_ds[0]["completion"][0]["content"])
""")
code("""
def load_base():
    \"\"\"A fresh copy of the base model (float32) and its tokenizer.\"\"\"
    m = AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=DTYPE).to(DEVICE)
    tok = AutoTokenizer.from_pretrained(BASE_PATH)
    tok.padding_side = "left"
    return m, tok

original, tokenizer = load_base()      # bản gốc, KHÔNG bao giờ bọc bộ điều hợp: dùng làm mốc so sánh
probe_prompts = prompts_of(test_ds)[:N_PARITY]       # các câu dùng để so logits trong cả bài
probe = tokenizer([tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in probe_prompts],
                  return_tensors="pt", padding=True, add_special_tokens=False).to(DEVICE)

def logits_of(m):
    \"\"\"Logits of ``m`` on the probe prompts (float32, on CPU).\"\"\"
    m.eval()
    with torch.no_grad():
        return m(**probe).logits.float().cpu()

base_logits = logits_of(original)
""")
md("""
**"Bằng nhau" ở float32 nghĩa là gì?** Trong bài này ta sẽ nhiều lần so hai mô hình bằng nhau *trên giấy* nhưng tính theo thứ tự khác (ví dụ `W'x + s·BAx` và `Wx`). Ở float32 (epsilon ≈ 1,2·10⁻⁷) chúng **không** cho kết quả giống từng bit, nên ta cần một ngưỡng. Thước đo tự nhiên: chính mô hình cơ sở ở float32 lệch bao xa so với cùng phép tính ở float64 (gần như chính xác). Đó là "mức làm tròn" của mô hình này.
""")
code("""
exact = copy.deepcopy(original).double()           # cùng trọng số, tính ở float64
with torch.no_grad():
    exact_logits = exact(**probe).logits.cpu()
fp32_rounding = (base_logits.double() - exact_logits).abs().max().item()
del exact
print(f"Logits lớn nhất: {exact_logits.abs().max().item():.1f}; "
      f"mô hình cơ sở ở float32 lệch bản float64 tới {fp32_rounding:.1e}")
""")
code("""
# NBVAL_CHECK_OUTPUT
print(f"Ngưỡng TOL = {TOL:g}; sai số làm tròn float32 của chính mô hình cơ sở nhỏ hơn TOL:", fp32_rounding < TOL)
""")
md("""
Logits của mô hình này lớn tới vài chục và đi qua 30 lớp, nên sai số làm tròn float32 của chính nó đã cỡ vài phần vạn (số đo ở ô trên). Hai phép tính float32 *khác thứ tự*, mỗi phép lệch giá trị đúng tới mức ấy, có thể lệch nhau tới gấp đôi mức ấy. Vì vậy ta dùng **TOL = 10⁻³**, ngưỡng mặc định của `check_parity` cho float32 (bài 3): cỡ gấp đôi mức làm tròn đo ở trên, nhưng nhỏ hơn hàng vạn lần những lỗi thật mà ta sẽ gặp dưới đây (tắt bộ điều hợp khi trọng số đã bị dịch, chạy bộ điều hợp trên sai mô hình cơ sở: logits lệch hàng chục).

## 3. OLoRA trên một lớp: Q, R, A, B và trọng số bị dịch

LoRA thường (bài 2) khởi tạo `A` ngẫu nhiên và `B = 0`, nên ΔW = s·B·A = 0 lúc đầu (s = alpha/r). OLoRA (Büyükakyüz, 2024) làm khác:

1. Phân rã QR trọng số của lớp: $W = QR$, với $W \\in \\mathbb{R}^{d_\\text{out} \\times d_\\text{in}}$, $Q$ có các cột trực chuẩn ($Q^\\top Q = I$), $R$ tam giác trên.
2. Lấy $r$ cột đầu của $Q$ làm $B$ và $r$ hàng đầu của $R$ làm $A$: $B = Q_{:, :r}$, $A = R_{:r, :}$.
3. Vì bây giờ $s\\,BA \\neq 0$, để mô hình ở bước 0 vẫn y như cũ, peft **dịch trọng số cơ sở**: $W' = W - s\\,BA$. Khi đó $W'x + s\\,BAx = Wx$.

Chi tiết trong mã của peft (`LoraLayer.olora_init`): QR tính ở float32, phép trừ làm ở float32 rồi đổi về dtype của lớp; hệ số tỉ lệ `s` **có** mặt trong phép dịch (với alpha = 2r, ta trừ *hai lần* thành phần QR đầu tiên khỏi W). `olora_factors` trong `lora_helpers.olora` làm lại đúng các bước ấy để ta nhìn từng mảnh.
""")
code("""
W = original.model.layers[0].self_attn.q_proj.weight.detach()
SCALING = LORA_ALPHA / LORA_R
f = olora_factors(W, LORA_R, SCALING)
print(f"W: {tuple(W.shape)}  Q: {tuple(f.Q.shape)}  R: {tuple(f.R.shape)}")
print(f"B = Q[:, :r]: {tuple(f.B.shape)}   A = R[:r]: {tuple(f.A.shape)}   s = alpha/r = {SCALING:g}")
print(f"‖QR − W‖ lớn nhất: {(f.Q @ f.R - W).abs().max().item():.2e}")
print(f"‖BᵀB − I‖ lớn nhất: {(f.B.T @ f.B - torch.eye(LORA_R)).abs().max().item():.2e}")
print(f"Độ lớn (chuẩn Frobenius): ‖W‖ = {W.norm():.2f}, ‖s·B·A‖ = {(SCALING * f.B @ f.A).norm():.2f}, "
      f"‖W'‖ = {f.shifted.norm():.2f}")
""")
code("""
# NBVAL_CHECK_OUTPUT
print("Q·R tái tạo W (sai số làm tròn):", torch.allclose(f.Q @ f.R, W, atol=1e-5))
print("Các cột của B trực chuẩn:", torch.allclose(f.B.T @ f.B, torch.eye(LORA_R), atol=1e-5))
print("R tam giác trên:", torch.equal(torch.triu(f.R), f.R))
print("B và A đều khác 0 ngay từ đầu:", bool(f.B.abs().sum() > 0 and f.A.abs().sum() > 0))
""")
md("""
Để ý ‖W'‖ = ‖W‖ trong khi phần bị trừ đi, ‖s·B·A‖, còn lớn hơn cả W. Lý do: QᵀW = R nên B·A = Q_r R_r = Q_r Q_rᵀ W là hình chiếu của W lên r cột đầu của Q; với s = 2, W' = (I − 2Q_rQ_rᵀ)W là một **phép phản xạ** của W, không đổi độ dài nhưng đổi hướng. Trọng số cơ sở trong bộ nhớ sẽ khác xa bản gốc.

Bây giờ kiểm tra điều quan trọng nhất: ở bước 0, lớp có bộ điều hợp OLoRA (trọng số dịch W' cộng nhánh s·B·A) cho **cùng đầu ra** với lớp gốc. Ta đưa vào một lô vector ngẫu nhiên.
""")
code("""
torch.manual_seed(SEED)
x = torch.randn(4, W.shape[1])
y_original = x @ W.T
y_olora = x @ f.shifted.T + SCALING * (x @ f.A.T) @ f.B.T
layer_diff = (y_olora - y_original).abs().max().item()
print(f"Đầu ra lớp gốc: độ lớn cỡ {y_original.abs().max().item():.1f}; "
      f"chênh lệch lớn nhất OLoRA vs gốc ở bước 0: {layer_diff:.2e}")
""")
code("""
# NBVAL_CHECK_OUTPUT
print(f"Bước 0, một lớp: đầu ra OLoRA khớp lớp gốc (≤ {TOL:g}):", layer_diff <= TOL)
""")
md("""
Đó là công thức. Bây giờ để peft làm thật trên cả mô hình: `LoraConfig(init_lora_weights="olora")` rồi `get_peft_model`. Ta so A, B và trọng số cơ sở của lớp `q_proj` đầu tiên với bản tự làm ở trên, rồi so logits của cả mô hình với mô hình gốc.
""")
code("""
olora_config = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear",
                          task_type="CAUSAL_LM", init_lora_weights="olora")
model, _ = load_base()
check_lora_config(model, olora_config)
start = time.perf_counter()
olora_demo = get_peft_model(model, olora_config)      # tính QR cho từng lớp được gắn bộ điều hợp
olora_init_seconds = time.perf_counter() - start
q = olora_demo.base_model.model.model.layers[0].self_attn.q_proj
step0_diff = (logits_of(olora_demo) - base_logits).abs().max().item()
print(f"Khởi tạo OLoRA cho cả mô hình: {olora_init_seconds:.1f} s")
print(f"Chênh lệch logits lớn nhất, mô hình OLoRA ở bước 0 vs mô hình gốc: {step0_diff:.2e}")
""")
code("""
# NBVAL_CHECK_OUTPUT
print("A của peft = R[:r] tự tính:", torch.equal(q.lora_A["default"].weight, f.A))
print("B của peft = Q[:, :r] tự tính:", torch.equal(q.lora_B["default"].weight, f.B))
print("Trọng số cơ sở của peft = W − s·B·A tự tính:", torch.equal(q.base_layer.weight, f.shifted))
print(f"Bước 0, cả mô hình: logits OLoRA khớp mô hình gốc (≤ {TOL:g}):", step0_diff <= TOL)
""")
md("""
**Trọng số cơ sở trong bộ nhớ đã bị sửa.** `get_peft_model` ghi W' = W − s·B·A thẳng vào `base_layer.weight` của từng lớp, tức là sửa *tại chỗ* chính đối tượng `model` ta truyền vào. Đầu ra không đổi chỉ vì nhánh bộ điều hợp cộng lại đúng phần đã trừ. Hệ quả:
- tắt bộ điều hợp (`with model.disable_adapter():`) **không** trả về mô hình gốc mà trả về W', một mô hình hỏng;
- muốn so sánh với mô hình gốc, phải **nạp lại** mô hình cơ sở từ đĩa (như biến `original` ở trên);
- một bộ điều hợp LoRA khác gắn lên mô hình này sẽ chạy trên W' chứ không phải W.

Đếm trên cả mô hình, so với LoRA thường (không sửa gì):
""")
code("""
olora_changes = base_weight_changes(original, olora_demo)
lora_demo = get_peft_model(load_base()[0], LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules="all-linear",
                                                      task_type="CAUSAL_LM"))
lora_changes = base_weight_changes(original, lora_demo)
with olora_demo.disable_adapter():
    disabled_diff = (logits_of(olora_demo) - base_logits).abs().max().item()
print(f"OLoRA: phần tử trọng số cơ sở bị dịch nhiều nhất một lượng {olora_changes['max_abs_change']:.3f}")
print(f"Tắt bộ điều hợp OLoRA: logits lệch mô hình gốc tới {disabled_diff:.1f}")
""")
code("""
# NBVAL_CHECK_OUTPUT
print(f"LoRA thường : {lora_changes['n_changed']}/{lora_changes['n_layers']} lớp có trọng số cơ sở bị thay đổi")
print(f"OLoRA       : {olora_changes['n_changed']}/{olora_changes['n_layers']} lớp có trọng số cơ sở bị thay đổi")
print("Tắt bộ điều hợp OLoRA có trả về mô hình gốc không:", disabled_diff <= TOL)
""")
code("""
del olora_demo, lora_demo, model, q
""")

md("""
## 4. Huấn luyện LoRA và OLoRA trong cùng điều kiện

Để so sánh công bằng, hai lần chạy chỉ khác **một** dòng: `init_lora_weights`. Cùng dữ liệu và thứ tự lô (cùng hạt giống), cùng r = 8, alpha = 16, cùng các lớp (`all-linear`), cùng tốc độ học, cùng số bước. Mỗi tốc độ học trong `LEARNING_RATES` chạy một cặp, để xem khoảng cách có bền vững hay chỉ là một lần chạy may mắn.

Lần này ta gọi `get_peft_model` **trước**, rồi đưa `PeftModel` vào `SFTTrainer(model=peft_model, ...)` (không truyền `peft_config`). Lý do: với OLoRA ta cần lưu bộ điều hợp **lúc khởi tạo, trước khi huấn luyện** (`peft_model.save_pretrained(...)`), để sau này chuyển đổi được (mục 6).
""")
code("""
def train_run(init, lr, save_init_to=None):
    \"\"\"Train one adapter (LoRA if init is True, OLoRA if init == "olora"); return (peft_model, history, seconds).

    ``save_init_to``: where to save the adapter as initialised, before training (needed to convert OLoRA).\"\"\"
    seed_everything(SEED)
    base, _ = load_base()
    config = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear",
                        task_type="CAUSAL_LM", init_lora_weights=init)
    check_lora_config(base, config)
    peft_model = get_peft_model(base, config)
    if save_init_to is not None:
        peft_model.save_pretrained(str(save_init_to))     # bộ điều hợp lúc khởi tạo, TRƯỚC khi huấn luyện
    trainer = SFTTrainer(
        model=peft_model,
        args=sft_config(str(OUT / f"run_{init}_{lr:.0e}"), max_steps=MAX_STEPS, learning_rate=lr,
                        batch_size=BATCH_SIZE, eval_steps=EVAL_STEPS, seed=SEED),
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)               # không in từng dòng log; ta vẽ đồ thị
    start = time.perf_counter()
    trainer.train()
    return peft_model, loss_history(trainer), time.perf_counter() - start
""")
code("""
METHODS = {"LoRA": True, "OLoRA": "olora"}
runs = {}
for lr in LEARNING_RATES:
    for name, init in METHODS.items():
        init_dir = OUT / f"olora_init_{lr:.0e}" if name == "OLoRA" else None   # không dấu chấm: xem mục 6
        peft_model, hist, seconds = train_run(init, lr, save_init_to=init_dir)
        runs[(name, lr)] = {"model": peft_model, "hist": hist, "seconds": seconds, "init_dir": init_dir}
        print(f"{name:<6} lr={lr:g}: {MAX_STEPS} bước trong {seconds:.0f} s; loss huấn luyện "
              f"{hist['train'][0][1]:.2f} → {hist['train'][-1][1]:.3f}; loss kiểm định cuối {hist['eval'][-1][1]:.3f}")
""")
code("""
fig, axes = plt.subplots(1, len(LEARNING_RATES), figsize=(6.5 * len(LEARNING_RATES), 4), sharey=True)
for ax, lr in zip(axes, LEARNING_RATES):
    plot_loss_curves({name: runs[(name, lr)]["hist"] for name in METHODS}, title=f"tốc độ học {lr:g}", ax=ax)
fig.suptitle(f"Tác vụ {TASK}: LoRA và OLoRA, r={LORA_R}, cùng dữ liệu và hạt giống")
fig.tight_layout()
plt.show()
""")
md("""
Đường liền: loss huấn luyện của từng bước (mỗi bước một lô 8 ví dụ; hai phương pháp thấy **cùng** lô ở cùng bước). Đường đứt: loss trên tập kiểm định (validation set). Trục tung theo thang log.

### Bao nhiêu bước để đạt cùng một mức loss?

Loss của từng lô dao động, nên ta làm mượt: trung bình `SMOOTH` bước liên tiếp (`moving_average`). Ngưỡng là mức loss (đã làm mượt) mà LoRA **đạt được ở bước cuối**; rồi đếm bước đầu tiên mỗi phương pháp xuống tới ngưỡng đó (`steps_to_reach`). Tiêu chí cần kiểm tra: OLoRA đạt mức ấy trong **không quá nửa** số bước.
""")
code("""
summary = {}
for lr in LEARNING_RATES:
    smooth = {name: moving_average(runs[(name, lr)]["hist"]["train"], SMOOTH) for name in METHODS}
    threshold = smooth["LoRA"][-1][1]
    reach = {name: steps_to_reach(smooth[name], threshold) for name in METHODS}
    val_threshold = runs[("LoRA", lr)]["hist"]["eval"][-1][1]
    val_reach = {name: steps_to_reach(runs[(name, lr)]["hist"]["eval"], val_threshold) for name in METHODS}
    summary[lr] = {"threshold": threshold, "reach": reach, "val_threshold": val_threshold, "val_reach": val_reach}

fmt = lambda s: "không đạt" if s is None else str(s)
print(f"{'tốc độ học':<12}{'ngưỡng loss':>12}{'LoRA':>8}{'OLoRA':>11}{'  |  ngưỡng kiểm định':>22}{'LoRA':>7}{'OLoRA':>11}")
for lr, s in summary.items():
    print(f"{lr:<12g}{s['threshold']:>12.3f}{fmt(s['reach']['LoRA']):>8}{fmt(s['reach']['OLoRA']):>11}"
          f"{s['val_threshold']:>22.3f}{fmt(s['val_reach']['LoRA']):>7}{fmt(s['val_reach']['OLoRA']):>11}")
print(f"(số bước đầu tiên đạt ngưỡng; loss kiểm định chỉ đo mỗi {EVAL_STEPS} bước)")
""")
md("""
### Cùng tốc độ học, trọng số đi xa đến đâu?

Cùng một tốc độ học không có nghĩa là cùng một bước đi trong không gian trọng số. Đo sự thay đổi của trọng số mà mô hình **thật sự dùng**, W' + s·B·A, so với W gốc (chuẩn Frobenius trên mọi lớp được gắn bộ điều hợp; `effective_update_norm`). Với LoRA đó là s·B·A; với OLoRA là s·(B·A − B₀·A₀).
""")
code("""
print(f"{'':<8}" + "".join(f"{'lr=' + format(lr, 'g'):>22}" for lr in LEARNING_RATES))
for name in METHODS:
    cells = []
    for lr in LEARNING_RATES:
        runs[(name, lr)]["update"] = u = effective_update_norm(original, runs[(name, lr)]["model"])
        cells.append(f"{u['delta_norm']:>10.2f} ({u['relative']:.2%} ‖W‖)")
    print(f"{name:<8}" + "".join(f"{c:>22}" for c in cells))
for lr in LEARNING_RATES:
    ratio = runs[("OLoRA", lr)]["update"]["delta_norm"] / runs[("LoRA", lr)]["update"]["delta_norm"]
    print(f"lr={lr:g}: sau {MAX_STEPS} bước, OLoRA đã đổi trọng số nhiều gấp {ratio:.1f} lần LoRA")
""")
md("## 5. Độ chính xác trên tập kiểm tra (test set)")
code("""
start = time.perf_counter()
for key, run in runs.items():
    run["eval"] = evaluate_task(run["model"], tokenizer, test_ds, max_new_tokens=MAX_NEW_TOKENS)
print(f"Đánh giá {len(runs)} mô hình trong {time.perf_counter() - start:.0f} s")
print(f"{'':<8}" + "".join(f"{'lr=' + format(lr, 'g'):>12}" for lr in LEARNING_RATES))
for name in METHODS:
    print(f"{name:<8}" + "".join(f"{runs[(name, lr)]['eval']['accuracy']:>12.0%}" for lr in LEARNING_RATES))
print(f"(độ chính xác khớp tuyệt đối trên {N_TEST} câu kiểm tra, sau {MAX_STEPS} bước)")
""")
code("""
# Tiêu chí của bài, đo trong chính lần chạy này
for lr, s in summary.items():
    lora_steps, olora_steps = s["reach"]["LoRA"], s["reach"]["OLoRA"]
    ok = olora_steps is not None and olora_steps <= lora_steps / 2
    olora_text = "không đạt ngưỡng" if olora_steps is None else f"{olora_steps} bước"
    print(f"lr={lr:g}: LoRA đạt loss {s['threshold']:.3f} sau {lora_steps} bước, OLoRA: {olora_text} "
          f"→ 'OLoRA ≤ nửa số bước': {'đạt' if ok else 'KHÔNG đạt'}")

# So cấu hình tốt nhất của mỗi phương pháp (theo loss kiểm định cuối), không chỉ cùng tốc độ học
best = {name: min(LEARNING_RATES, key=lambda lr: runs[(name, lr)]["hist"]["eval"][-1][1]) for name in METHODS}
for name, lr in best.items():
    run = runs[(name, lr)]
    print(f"Tốt nhất của {name:<5}: lr={lr:g}, loss kiểm định cuối {run['hist']['eval'][-1][1]:.3f}, "
          f"độ chính xác {run['eval']['accuracy']:.0%}")
n_diff = round(abs(runs[("OLoRA", best["OLoRA"])]["eval"]["accuracy"] - runs[("LoRA", best["LoRA"])]["eval"]["accuracy"]) * N_TEST)
print(f"Hai cấu hình tốt nhất chênh nhau {n_diff} câu trên {N_TEST} câu kiểm tra")
""")
md("""
**Đọc kết quả** (mọi con số ở các ô trên đều từ chính lần chạy này).
- **Tốc độ học nhỏ (2e-4):** OLoRA nhanh hơn rõ rệt. Nó xuống tới mức loss cuối của LoRA trong khoảng nửa số bước, và sau cùng số bước thì loss kiểm định và độ chính xác đều tốt hơn nhiều. Ở tốc độ học này tiêu chí "không quá nửa số bước" **đạt**.
- **Tốc độ học của bài 2 (1e-3):** không thấy lợi thế. Ở những bước đầu, loss của OLoRA còn *cao hơn* LoRA (đồ thị bên trái), rồi mới bắt kịp; nó đạt mức loss cuối của LoRA gần như cùng lúc với LoRA, không phải trong nửa số bước. Ở tốc độ học này tiêu chí **không đạt**, và lời hứa "ổn định hơn" cũng không thấy.
- **Vì sao?** Bảng "trọng số đi xa đến đâu" cho thấy cùng một tốc độ học, OLoRA thay đổi trọng số nhiều hơn LoRA khoảng mười lần. Adam dịch mỗi tham số một lượng cỡ tốc độ học, bất kể tham số lớn hay nhỏ. Với LoRA, B = 0 và A nhỏ, nên s·B·A lớn lên từ từ. Với OLoRA, A = R[:r] mang độ lớn của chính W và B đã khác 0, nên một bước nhỏ trên B, nhân với A lớn, đã là một thay đổi lớn của trọng số. OLoRA vì vậy giống LoRA với tốc độ học lớn hơn: có lợi khi tốc độ học đang nhỏ so với mức LoRA cần, hết lợi (các bước đầu còn đi quá đà) khi tốc độ học đã đủ lớn.
- **Kết luận thận trọng:** "OLoRA hội tụ nhanh hơn" đúng khi so cùng một tốc độ học *nhỏ*; ở tốc độ học đã chỉnh cho LoRA thì không. So cấu hình tốt nhất của mỗi bên (hai dòng "Tốt nhất"), khoảng cách nhỏ hơn nhiều so với khi so ở 2e-4; và ta mới thử hai tốc độ học, nên chưa biết mỗi bên đã ở tốc độ học tốt nhất của mình chưa. Đây là một hạt giống, 10 bước, 20 câu kiểm tra (mỗi câu là 5 điểm phần trăm): chênh lệch vài câu chưa nói lên điều gì. Muốn chắc, hãy lặp lại với hạt giống khác và nhiều bước hơn. Khi dùng OLoRA, hãy dò lại tốc độ học (thường nhỏ hơn của LoRA) thay vì giữ nguyên.
""")

md("""
## 6. Lưu OLoRA để dùng trên mô hình cơ sở gốc

Bộ điều hợp OLoRA đã huấn luyện (A, B) chỉ có nghĩa **cùng với** W' = W − s·B₀·A₀, trong đó A₀, B₀ là giá trị lúc khởi tạo. Ai cũng có W (mô hình cơ sở tải về), nhưng W' chỉ nằm trong bộ nhớ của ta. Cách chuyển thành một bộ điều hợp LoRA thường, dùng thẳng trên W:

$$W' + s\\,BA = W + s\\,(BA - B_0A_0) = W + s\\,[\\,B \\mid -B_0\\,]\\begin{bmatrix}A\\\\A_0\\end{bmatrix}.$$

Tức là ghép A với A₀ theo hàng và B với −B₀ theo cột: một bộ điều hợp LoRA **hạng 2r**. peft làm việc này khi lưu:
1. trước khi huấn luyện: `peft_model.save_pretrained(INIT_DIR)` (đã làm trong `train_run`);
2. sau khi huấn luyện: `peft_model.save_pretrained(thư_mục, path_initial_model_for_weight_conversion=INIT_DIR)`.

Một bẫy nhỏ: peft dùng **tên thư mục** của bản khởi tạo làm tên bộ điều hợp tạm thời, nên tên đó không được chứa dấu chấm (`olora_init_lr0.001` báo lỗi `Adapter ... does not exist`); vì vậy ta đặt `olora_init_1e-03`.

peft nhân đôi cả r và `lora_alpha`, nên hệ số tỉ lệ s = alpha/r giữ nguyên; và ghi `init_lora_weights: true`, để khi nạp, peft **không** dịch trọng số cơ sở nữa. Đây là công thức trong bài kiểm thử `test_olora_conversion_same_output_after_loading` của chính peft.
""")
code("""
olora_run = runs[("OLoRA", best["OLoRA"])]           # bộ điều hợp OLoRA tốt nhất, cái ta muốn chia sẻ
olora_model, INIT_DIR = olora_run["model"], olora_run["init_dir"]
olora_model.eval()
CONVERTED_DIR, RAW_DIR = OUT / "olora_converted", OUT / "olora_raw"
olora_model.save_pretrained(str(CONVERTED_DIR), path_initial_model_for_weight_conversion=str(INIT_DIR))
olora_model.save_pretrained(str(RAW_DIR))           # lưu thường, không chuyển đổi: để so sánh ở mục 7
saved = {label: json.loads((d / "adapter_config.json").read_text(encoding="utf-8"))
         for label, d in (("lúc khởi tạo", INIT_DIR), ("lưu thường", RAW_DIR), ("chuyển đổi", CONVERTED_DIR))}
sizes = {"lúc khởi tạo": INIT_DIR, "lưu thường": RAW_DIR, "chuyển đổi": CONVERTED_DIR}
print(f"Bộ điều hợp OLoRA lr={best['OLoRA']:g}:")
for label, cfg in saved.items():
    print(f"  {label:<13} r={cfg['r']:<3} lora_alpha={cfg['lora_alpha']:<3} "
          f"init_lora_weights={cfg['init_lora_weights']!r:<8} {human_size(directory_size(sizes[label]))}")
""")
code("""
# NBVAL_CHECK_OUTPUT
raw, conv = saved["lưu thường"], saved["chuyển đổi"]
print(f"Hạng trong adapter_config.json: lưu thường r={raw['r']}, sau chuyển đổi r={conv['r']} (= 2·{LORA_R})")
print(f"Hệ số tỉ lệ alpha/r giữ nguyên: {raw['lora_alpha'] / raw['r']:g} → {conv['lora_alpha'] / conv['r']:g}")
print(f"Tệp trọng số lớn gấp: {(CONVERTED_DIR / 'adapter_model.safetensors').stat().st_size / (RAW_DIR / 'adapter_model.safetensors').stat().st_size:.1f} lần")
""")
md("""
Giờ nạp bộ điều hợp đã chuyển đổi lên một mô hình cơ sở **mới nạp từ đĩa** (trọng số gốc W) bằng `PeftModel.from_pretrained`, và so với mô hình OLoRA đang nằm trong bộ nhớ (W' + nhánh OLoRA) bằng `check_parity` (bài 3): chênh lệch logits lớn nhất trên mọi token của các câu hỏi, và câu sinh tham lam (greedy) phải giống hệt từng token.
""")
code("""
converted = PeftModel.from_pretrained(load_base()[0], str(CONVERTED_DIR))
converted.eval()
parity = check_parity(olora_model, converted, tokenizer, dataset=test_ds.select(range(N_PARITY)),
                      tolerance=TOL, max_new_tokens=MAX_NEW_TOKENS)
converted_changes = base_weight_changes(original, converted)
with converted.disable_adapter():
    converted_disabled_diff = (logits_of(converted) - base_logits).abs().max().item()
print(parity.details())
print(f"(để so: sai số làm tròn float32 của chính mô hình cơ sở, mục 2: {fp32_rounding:.1e})")
print(f"Câu sinh ví dụ: {parity.texts_a[0]!r} (OLoRA trong bộ nhớ) / {parity.texts_b[0]!r} (đã chuyển đổi)")
""")
code("""
# NBVAL_CHECK_OUTPUT
print(parity.verdict())
print(f"Trọng số cơ sở dưới bộ điều hợp đã chuyển đổi: {converted_changes['n_changed']}/{converted_changes['n_layers']} lớp bị thay đổi")
print("Tắt bộ điều hợp đã chuyển đổi trả về đúng mô hình gốc:", converted_disabled_diff == 0.0)
print("Hạng của bộ điều hợp đã nạp:", converted.peft_config["default"].r)
""")
md("""
Chênh lệch không bằng 0 tuyệt đối, và điều đó bình thường: mô hình trong bộ nhớ tính `W'x + s·B(Ax)`, bộ điều hợp chuyển đổi tính `Wx + s·[B | −B₀]([A; A₀]x)`. Hai biểu thức bằng nhau trên giấy nhưng làm tròn ở những chỗ khác nhau; chênh lệch ở cỡ sai số làm tròn float32 của chính mô hình cơ sở (mục 2) hoặc nhỏ hơn, dưới ngưỡng TOL, và không đủ để đổi token nào trong câu sinh tham lam.
""")

md("""
## 7. Khi nào không nên dùng OLoRA (hoặc phải chuyển đổi trước)

Nếu lưu OLoRA theo cách thường (`olora_raw`, r = 8, `init_lora_weights: "olora"`) rồi nạp lên một mô hình cơ sở mới, peft **tính lại QR và dịch lại trọng số cơ sở** lúc nạp. Câu trả lời vẫn đúng, nhưng mô hình cơ sở bên dưới lại bị sửa:
""")
code("""
raw_loaded = PeftModel.from_pretrained(load_base()[0], str(RAW_DIR))
raw_loaded.eval()
raw_diff = (logits_of(raw_loaded) - logits_of(olora_model)).abs().max().item()
raw_changes = base_weight_changes(original, raw_loaded)
with raw_loaded.disable_adapter():
    raw_disabled_diff = (logits_of(raw_loaded) - base_logits).abs().max().item()
print(f"Bản lưu thường nạp lại vs OLoRA trong bộ nhớ: chênh lệch logits lớn nhất {raw_diff:.1e}")
print(f"Tắt bộ điều hợp (lưu thường): logits lệch mô hình gốc tới {raw_disabled_diff:.1f}")
""")
code("""
# NBVAL_CHECK_OUTPUT
print(f"Lưu thường, nạp lại: logits khớp OLoRA trong bộ nhớ (≤ {TOL:g}):", raw_diff <= TOL)
print(f"Trọng số cơ sở sau khi nạp: {raw_changes['n_changed']}/{raw_changes['n_layers']} lớp bị thay đổi")
print("Tắt bộ điều hợp (lưu thường) trả về mô hình gốc:", raw_disabled_diff <= TOL)
""")
md("""
Hậu quả cụ thể khi **xếp chồng** bộ điều hợp: gắn thêm bộ điều hợp mẫu `ngay_thang` của bài 1 (một bộ điều hợp LoRA thường, huấn luyện trên W gốc) lên hai mô hình: mô hình dưới bản *chuyển đổi* (trọng số cơ sở gốc) và mô hình dưới bản *lưu thường* (trọng số cơ sở đã bị OLoRA dịch). Bật bộ điều hợp mẫu (`set_adapter`) và hỏi cùng hai câu.
""")
code("""
demo_dir = str(demo_adapter_path("ngay_thang"))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for m in (converted, raw_loaded):
        m.load_adapter(demo_dir, adapter_name="mau")
        m.set_adapter("mau")
stack_diff = (logits_of(raw_loaded) - logits_of(converted)).abs().max().item()
for label, m in (("trên W gốc   ", converted), ("trên W' OLoRA", raw_loaded)):
    print(f"Bộ điều hợp mẫu {label}:", generate(m, tokenizer, probe_prompts[:2], max_new_tokens=MAX_NEW_TOKENS))
print("Đáp án đúng:", test_ds["answer"][:2])
print(f"Chênh lệch logits giữa hai cách: {stack_diff:.1f}")
print("peft cảnh báo:", *{str(w.message).split(":")[0] for w in caught if "OLoRA" in str(w.message)})
""")
code("""
# NBVAL_CHECK_OUTPUT
print("Bộ điều hợp mẫu cho cùng kết quả trên W gốc và trên W' của OLoRA:", stack_diff <= TOL)
""")
md("""
Từ đó, những trường hợp **không** nên dùng OLoRA như nó vốn có (hoặc phải chuyển đổi sang LoRA trước):
- **Nhiều bộ điều hợp trên cùng một mô hình cơ sở** (chuyển qua lại bằng `set_adapter`, trộn bằng `add_weighted_adapter`, phục vụ nhiều bộ điều hợp cùng lúc): các bộ điều hợp khác được huấn luyện trên W, nhưng OLoRA để lại W' trong bộ nhớ, như ta vừa thấy. peft cũng cảnh báo đúng điều này khi nạp thêm bộ điều hợp.
- **Cần tắt bộ điều hợp để lấy lại mô hình gốc** (`disable_adapter`, so sánh trước/sau): với OLoRA chưa chuyển đổi, "tắt" cho ra W', không phải mô hình cơ sở.
- **Mô hình cơ sở lúc dùng khác lúc huấn luyện** (dtype khác, lượng tử hoá khác): bản lưu thường tính lại QR trên trọng số lúc nạp; nếu trọng số đó không giống hệt, phần dịch cũng khác. Với mô hình lượng tử hoá, W' còn bị lượng tử hoá lại; khi đó phải tự kiểm tra lại bằng `check_parity`, đừng giả định.
- Muốn tệp nhỏ nhất: bản chuyển đổi có hạng 2r nên lớn gấp đôi (đã đo ở trên), và chạy chậm hơn một chút khi chưa hợp nhất.

Nếu chỉ huấn luyện **một** bộ điều hợp rồi hợp nhất (`merge_and_unload`, bài 3) vào chính mô hình đã huấn luyện, những điều trên ít quan trọng; nhưng để chia sẻ bộ điều hợp cho người khác, hãy lưu bản **chuyển đổi**.
""")
code("""
print(f"Khởi tạo OLoRA (QR của mọi lớp) mất {olora_init_seconds:.1f} s trên {DEVICE}; "
      f"cả bài chạy {(time.perf_counter() - LESSON_START) / 60:.1f} phút")
""")

md("""
## Tóm tắt
- OLoRA: phân rã QR W = QR, B = Q[:, :r], A = R[:r]; trọng số cơ sở bị dịch thành W' = W − s·B·A (s = alpha/r) để ở bước 0 đầu ra **không đổi** (ta đã kiểm chứng trên một lớp và trên logits của cả mô hình, và thấy peft cho đúng A, B, W' như công thức).
- Vì vậy trọng số cơ sở **trong bộ nhớ** không còn là trọng số gốc: tắt bộ điều hợp không trả về mô hình gốc; muốn so sánh phải nạp lại mô hình cơ sở.
- Trên tác vụ ngày tháng (r = 8, 10 bước): ở tốc độ học nhỏ 2e-4, OLoRA đạt mức loss cuối của LoRA trong khoảng nửa số bước; ở tốc độ học 1e-3 của bài 2 thì không thấy lợi thế (các bước đầu còn kém hơn). Cùng tốc độ học, OLoRA thay đổi trọng số nhiều hơn LoRA khoảng mười lần: nó giống LoRA với tốc độ học lớn hơn. Vì vậy hãy dò lại tốc độ học khi đổi sang OLoRA, và so hai phương pháp ở cấu hình tốt nhất của mỗi bên, trên nhiều hạt giống.
- Lưu để dùng trên mô hình gốc: `save_pretrained(init_dir)` **trước** khi huấn luyện, rồi `save_pretrained(out_dir, path_initial_model_for_weight_conversion=init_dir)`; kết quả là một bộ điều hợp LoRA thường hạng 2r (alpha cũng nhân đôi), nạp bằng `PeftModel.from_pretrained` lên mô hình cơ sở mới và cho cùng câu sinh, logits lệch dưới ngưỡng float32.
- Không dùng OLoRA chưa chuyển đổi khi cần nhiều bộ điều hợp trên cùng một mô hình cơ sở hoặc cần tắt bộ điều hợp để lấy lại mô hình gốc.
- PiSSA (`init_lora_weights="pissa"`) làm điều tương tự với phân rã SVD thay cho QR: cũng dịch trọng số cơ sở, cũng chuyển đổi được bằng `path_initial_model_for_weight_conversion`. Bài này không đo PiSSA.

Tóm tắt bằng hình (vẽ bằng `scripts/make_figures.py` từ chính phép khởi tạo OLoRA của peft trên một ma trận nhỏ):

![OLoRA: W = QR, B và A lấy từ Q và R, trọng số cơ sở bị dịch](../images/olora_qr.png)

**Luyện tập:** [bài tập](../exercises/04_olora_finetuning_exercises.ipynb) (🐢 🐕 🦁, có chấm tự động) · [lời giải](../solutions/04_olora_finetuning_solutions.ipynb)

Bài trước: [hợp nhất bộ điều hợp](merge_lora_adapters.ipynb) · Bài tiếp theo: [DPO với TRL + PEFT](trl_peft_preference.ipynb).
""")
write_notebook("olora_finetuning.ipynb")
