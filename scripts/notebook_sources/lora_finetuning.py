"""Builder of notebooks/lora_finetuning.ipynb (lesson 2).

`python scripts/notebook_sources/lora_finetuning.py` writes the unexecuted notebook (then execute it
with `make notebooks`); `--smoke OUT` writes a tiny-step variant to OUT for a quick check."""
from _builder import SETUP_CELL, SMOKE, code, md, write_notebook

md("""
# Bài 2: Tinh chỉnh mô hình bằng LoRA với TRL

<a href="https://colab.research.google.com/github/lora-course-vi/lora-course-vi/blob/main/notebooks/lora_finetuning.ipynb" target="_parent"><img src="https://colab.research.google.com/assets/colab-badge.svg" alt="Mở trong Colab"/></a>

**Bạn sẽ học được:**
- LoRA làm gì với một lớp tuyến tính: W bị đóng băng (freeze), chỉ học ΔW = (alpha/r)·B·A, và vì sao mô hình **không đổi** trước bước huấn luyện đầu tiên;
- đếm số tham số huấn luyện được (trainable parameters) bằng công thức r·(d_in + d_out) và đối chiếu với peft;
- tinh chỉnh (finetuning) SmolLM2-135M-Instruct bằng `SFTTrainer` của TRL, theo dõi hàm mất mát (loss) trên tập huấn luyện và tập kiểm định (validation set);
- đo độ chính xác trên tập kiểm tra (test set) trước và sau khi tinh chỉnh;
- so sánh với tinh chỉnh toàn bộ (full finetuning): tham số, bộ nhớ, thời gian, dung lượng trên đĩa, và vì sao lợi ích bộ nhớ nhỏ ở 135M nhưng khổng lồ ở 175B;
- ảnh hưởng của hạng (rank) r; lưu và nạp lại bộ điều hợp (adapter); những cách viết cũ cần tránh.

**Thời gian chạy:** khoảng 8 phút trên CPU 2 nhân (đo khi soạn bài: 470 s, trong đó huấn luyện chiếm 7 phút); khoảng 2 phút trên GPU Colab (số bước lớn hơn, đặt ở ô cấu hình).

Tác vụ: `ngay_thang`: đọc một câu tiếng Việt có ngày tháng và trả lời đúng một ngày dạng `YYYY-MM-DD`. Mô hình cơ sở (base model) gần như không làm được.
""")
code(SETUP_CELL)
md("## 1. Thư viện, hạt giống ngẫu nhiên, thiết bị")
code("""
import json
import os
import shutil
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")   # thanh tiến trình của tqdm trong Jupyter

import matplotlib.pyplot as plt
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTTrainer

from lora_helpers import CourseError
from lora_helpers.adapters import course_root, directory_size, human_size, save_adapter
from lora_helpers.data import check_messages_dataset, make_task_splits, prompts_of, to_prompt_completion
from lora_helpers.env import pick_device, pick_dtype, print_environment, seed_everything
from lora_helpers.evaluation import evaluate_task
from lora_helpers.figures import show_figure
from lora_helpers.models import find_base_model
from lora_helpers.params import (PeakMemory, lora_param_count, lora_param_table, trainable_parameters,
                                 training_memory_estimate, training_state_bytes)
from lora_helpers.plotting import plot_loss_curves
from lora_helpers.training import check_lora_config, loss_history, sft_config, steps_to_reach

import datasets
from transformers import PrinterCallback

transformers.utils.logging.set_verbosity_error()          # bớt thông báo không cần thiết
transformers.utils.logging.disable_progress_bar()
datasets.disable_progress_bars()
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

seed_everything(0)
DEVICE = pick_device()
DTYPE = pick_dtype(DEVICE)
print_environment()
""")
md("## 2. Cấu hình\nMọi hằng số của bài nằm ở đây. Trên CPU ta dùng ít bước để cả bài chạy trong vài phút; trên GPU có thể tăng lên.")
steps = ("2", "2", "1", "2", "8", "16") if SMOKE else ("30 if DEVICE == \"cpu\" else 60", "10 if DEVICE == \"cpu\" else 60", "5", "16 if DEVICE == \"cpu\" else 40", "20 if DEVICE == \"cpu\" else 50", "400")
code(f"""
TASK = "ngay_thang"
SEED = 0
MAX_STEPS = {steps[0]}          # số bước huấn luyện LoRA (và tinh chỉnh toàn bộ, để so sánh công bằng)
RANK_STEPS = {steps[1]}         # số bước cho mỗi lần chạy ở thí nghiệm hạng r
EVAL_STEPS = {steps[2]}                                 # đánh giá trên tập kiểm định sau mỗi EVAL_STEPS bước
N_VAL = {steps[3]}              # số ví dụ tập kiểm định
N_TEST = {steps[4]}             # số ví dụ tập kiểm tra
BATCH_SIZE = 8
MAX_NEW_TOKENS = 16             # câu trả lời chỉ khoảng 10 token: sinh ngắn cho nhanh
LORA_R, LORA_ALPHA = 8, 16
LORA_LR = 1e-3                  # LoRA chịu được tốc độ học lớn
FULL_LR = 5e-5                  # tinh chỉnh toàn bộ cần tốc độ học nhỏ hơn nhiều
OUT = course_root() / "outputs" / "lora_finetuning"   # thư mục bị .gitignore bỏ qua
N_TRAIN_ROWS = {steps[5]}

BASE_PATH = find_base_model()
splits = make_task_splits(TASK, n_train=N_TRAIN_ROWS, n_val=N_VAL, n_test=N_TEST, seed=SEED)
train_ds = to_prompt_completion(splits["train"])
val_ds = to_prompt_completion(splits["validation"])
test_ds = splits["test"]
if OUT.exists():
    shutil.rmtree(OUT)               # bắt đầu sạch mỗi lần chạy lại cả bài
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
    \"\"\"A fresh copy of the base model and its tokenizer.\"\"\"
    m = AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=DTYPE).to(DEVICE)
    tok = AutoTokenizer.from_pretrained(BASE_PATH)
    tok.padding_side = "left"
    return m, tok

model, tokenizer = load_base()
probe_prompts = prompts_of(test_ds)[:2]
probe = tokenizer([tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in probe_prompts],
                  return_tensors="pt", padding=True, add_special_tokens=False).to(DEVICE)

def logits_of(m):
    \"\"\"Logits of ``m`` on the two probe prompts (float32, on CPU).\"\"\"
    m.eval()
    with torch.no_grad():
        return m(**probe).logits.float().cpu()

base_logits = logits_of(model)
""")

md("""
## 3. LoRA trong một công thức

Một lớp tuyến tính tính `y = W x`, với `W` có kích thước `d_out × d_in`. Tinh chỉnh toàn bộ cập nhật mọi phần tử của `W`. LoRA thì **đóng băng** `W` và học thêm một số hạng hạng thấp:

$$y = W x + \\frac{\\alpha}{r} B A x, \\qquad A \\in \\mathbb{R}^{r \\times d_\\text{in}},\\; B \\in \\mathbb{R}^{d_\\text{out} \\times r},\\; r \\ll \\min(d_\\text{in}, d_\\text{out}).$$

- `A` được khởi tạo ngẫu nhiên, `B` được khởi tạo bằng **0**, nên lúc bắt đầu ΔW = B·A = 0: mô hình có bộ điều hợp cho ra **đúng y hệt** mô hình cơ sở. Huấn luyện xuất phát từ chính mô hình cơ sở, không phá nó ngay từ đầu.
- `alpha/r` là hệ số tỉ lệ: đổi r mà giữ `alpha/r` cố định thì độ lớn cập nhật gần như không đổi.
- Số tham số huấn luyện được mỗi lớp: `r·d_in + d_out·r = r·(d_in + d_out)`, thay vì `d_in·d_out`.

Hình dưới (vẽ bằng `scripts/make_figures.py` từ kích thước thật của mô hình; tệp [`images/lora_at_a_glance.png`](../images/lora_at_a_glance.png)) cho lớp `q_proj` của SmolLM2-135M.
""")
code("""
show_figure("lora_at_a_glance.png", width=760)
""")
md("Kiểm tra bằng số: bọc mô hình cơ sở bằng `get_peft_model` rồi so logits.")
code("""
lora_config = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear",
                         task_type="CAUSAL_LM")
check_lora_config(model, lora_config)
peft_model = get_peft_model(model, lora_config)
diff_init = (logits_of(peft_model) - base_logits).abs().max().item()
q = peft_model.base_model.model.model.layers[0].self_attn.q_proj
print("Lớp q_proj đầu tiên sau khi bọc:", type(q).__name__)
print("A:", tuple(q.lora_A["default"].weight.shape), " B:", tuple(q.lora_B["default"].weight.shape))
print(f"Chênh lệch logits lớn nhất so với mô hình cơ sở: {diff_init:.3g}")
""")
code("""
# NBVAL_CHECK_OUTPUT
print("Mọi phần tử của B đều bằng 0:", all((m.lora_B["default"].weight == 0).all().item()
                                          for m in peft_model.modules() if hasattr(m, "lora_B")))
print("A khác 0 (khởi tạo ngẫu nhiên):", bool(q.lora_A["default"].weight.abs().sum() > 0))
print("Logits giống hệt mô hình cơ sở trước bước đầu tiên:", diff_init == 0.0)
""")

md("""
## 4. Đếm tham số huấn luyện được
peft có sẵn `print_trainable_parameters()`. Ta tự tính lại bằng công thức r·(d_in + d_out) cho từng lớp được gắn LoRA (`lora_helpers.params.lora_param_count`). Chú ý: SmolLM2 dùng *grouped-query attention*, nên `k_proj` và `v_proj` có `d_out` nhỏ hơn `q_proj`; công thức đọc `d_in`, `d_out` từ chính từng lớp.
""")
code("""
peft_model.print_trainable_parameters()
""")
code("""
# NBVAL_CHECK_OUTPUT
attn = model.model.layers[0].self_attn if hasattr(model, "model") else None
print("q_proj:", tuple(peft_model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.shape),
      " k_proj:", tuple(peft_model.base_model.model.model.layers[0].self_attn.k_proj.base_layer.weight.shape),
      " (d_out × d_in)")
n_trainable_lora, n_total_lora = trainable_parameters(peft_model)
closed_form = lora_param_count(load_base()[0], LORA_R, "all-linear")
print(f"peft đếm: {n_trainable_lora:,}; công thức: {closed_form:,}; khớp: {closed_form == n_trainable_lora}")
""")
md("Bảng cho ba hạng r và hai lựa chọn lớp: chỉ `q_proj, v_proj` (như bài báo LoRA gốc) hoặc mọi lớp tuyến tính (`all-linear`). Cột cuối đối chiếu công thức với số đếm thật của peft.")
code("""
# NBVAL_CHECK_OUTPUT
fresh, _ = load_base()
n_base = sum(p.numel() for p in fresh.parameters())
print(f"Mô hình cơ sở: {n_base:,} tham số\\n")
print(f"{'lớp':<12}{'r':>4}{'tham số LoRA':>15}{'% cơ sở':>10}{'peft đếm':>12}{'khớp':>7}")
for row in lora_param_table(fresh, ranks=(4, 8, 16)):
    target = ["q_proj", "v_proj"] if row["targets"] == "q,v" else "all-linear"
    real = trainable_parameters(get_peft_model(load_base()[0], LoraConfig(r=row["r"], target_modules=target)))[0]
    print(f"{row['targets']:<12}{row['r']:>4}{row['n_lora']:>15,}{row['percent']:>9.2f}%{real:>12,}{str(real == row['n_lora']):>7}")
del fresh
""")
md("Số tham số tăng **tuyến tính** theo r. Ngay cả `all-linear` với r=16 cũng chỉ khoảng 5% mô hình; chỉ `q,v` với r=4 thì dưới 0,3%.")

md("""
## 5. Huấn luyện bộ điều hợp bằng `SFTTrainer`
- Dữ liệu ở dạng hội thoại *prompt/completion* (`to_prompt_completion`), nên hàm mất mát chỉ tính trên câu trả lời của trợ lý, không tính trên câu hỏi.
- `sft_config(...)` tạo `SFTConfig` hợp với thiết bị (fp32 trên CPU, bf16 trên GPU hỗ trợ), ghi loss mỗi bước và đánh giá trên tập kiểm định mỗi `EVAL_STEPS` bước.
- Truyền `peft_config=LoraConfig(...)` vào `SFTTrainer` với **mô hình cơ sở**: TRL tự gọi `get_peft_model` và chỉ huấn luyện A, B.

Trước hết, đo độ chính xác của mô hình cơ sở trên tập kiểm tra.
""")
code("""
model, tokenizer = load_base()
start = time.perf_counter()
base_eval = evaluate_task(model, tokenizer, test_ds, max_new_tokens=MAX_NEW_TOKENS)
print(f"Mô hình cơ sở: độ chính xác {base_eval['accuracy']:.0%} trên {base_eval['n']} câu ({time.perf_counter() - start:.0f} s)")
""")
code("""
seed_everything(SEED)
lora_config = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear",
                         task_type="CAUSAL_LM")
check_lora_config(model, lora_config)          # bắt lỗi cấu hình trước khi tốn thời gian huấn luyện
trainer = SFTTrainer(
    model=model,
    args=sft_config(str(OUT / "lora_run"), max_steps=MAX_STEPS, learning_rate=LORA_LR, batch_size=BATCH_SIZE,
                    eval_steps=EVAL_STEPS, seed=SEED),
    train_dataset=train_ds,
    eval_dataset=val_ds,
    processing_class=tokenizer,
    peft_config=lora_config,
)
trainer.remove_callback(PrinterCallback)       # không in từng dòng log; ta vẽ đồ thị
with PeakMemory(DEVICE) as lora_mem:
    trainer.train()
lora_model = trainer.model
lora_hist = loss_history(trainer)
lora_state = training_state_bytes(trainer.model, trainer.optimizer)   # trọng số + gradient + Adam, đếm từ tensor thật
lora_sec_per_step = lora_mem.seconds / MAX_STEPS
print(f"LoRA: {MAX_STEPS} bước trong {lora_mem.seconds:.0f} s ({lora_sec_per_step:.1f} s/bước)")
print(f"Loss huấn luyện: {lora_hist['train'][0][1]:.2f} → {lora_hist['train'][-1][1]:.3f}; "
      f"loss kiểm định cuối: {lora_hist['eval'][-1][1]:.3f}")
print("Bước đầu tiên loss ≤ 0.1:", steps_to_reach(lora_hist["train"], 0.1))
""")
code("""
plot_loss_curves({f"LoRA r={LORA_R}": lora_hist}, title=f"Tác vụ {TASK}: LoRA")
plt.show()
""")
md("""
Đường liền là loss huấn luyện (mỗi bước, trên một lô 8 ví dụ), đường đứt là loss trên tập kiểm định (các ví dụ không dùng để huấn luyện). Hai đường cùng giảm và nằm sát nhau: mô hình học được *quy tắc*, không chỉ thuộc lòng ví dụ. Nếu đường kiểm định đi lên trong khi đường huấn luyện tiếp tục giảm, đó là dấu hiệu quá khớp (overfitting).
""")

md("## 6. Trước và sau: độ chính xác trên tập kiểm tra")
code("""
start = time.perf_counter()
lora_eval = evaluate_task(lora_model, tokenizer, test_ds, max_new_tokens=MAX_NEW_TOKENS)
print(f"Đánh giá xong trong {time.perf_counter() - start:.0f} s")
print(f"Mô hình cơ sở: {base_eval['accuracy']:.0%}   →   LoRA r={LORA_R}: {lora_eval['accuracy']:.0%}   (trên {lora_eval['n']} câu)")
""")
code("""
for i in range(4):
    print(f"Câu hỏi: {test_ds[i]['messages'][0]['content']}")
    print(f"  đáp án đúng : {test_ds[i]['answer']}")
    print(f"  cơ sở       : {base_eval['predictions'][i][:70]!r}")
    print(f"  LoRA        : {lora_eval['predictions'][i][:70]!r}\\n")
""")
md("Mô hình cơ sở trả lời lan man hoặc sai định dạng; sau vài chục bước LoRA, mô hình trả đúng một ngày `YYYY-MM-DD`. Lưu ý các câu kiểm tra dùng mẫu câu *không xuất hiện* khi huấn luyện.")

md("""
## 7. So với tinh chỉnh toàn bộ
Cùng dữ liệu, cùng hạt giống, cùng số bước, nhưng mọi tham số đều được cập nhật (tốc độ học nhỏ hơn, `FULL_LR`, vì cập nhật trực tiếp W dễ phá mô hình). Ta đo:
- số tham số huấn luyện được;
- bộ nhớ của *trạng thái huấn luyện*: trọng số + gradient + trạng thái Adam, đếm từ chính các tensor của trainer (`training_state_bytes`);
- bộ nhớ đỉnh tăng thêm trong lúc huấn luyện (trên CPU: bộ nhớ thường trú RSS, lấy mẫu liên tục; trên GPU: `torch.cuda.max_memory_allocated`), gồm cả activations;
- thời gian mỗi bước và dung lượng khi lưu.
""")
code("""
seed_everything(SEED)
full_model, _ = load_base()
full_trainer = SFTTrainer(
    model=full_model,
    args=sft_config(str(OUT / "full_run"), max_steps=MAX_STEPS, learning_rate=FULL_LR, batch_size=BATCH_SIZE,
                    eval_steps=EVAL_STEPS, seed=SEED),
    train_dataset=train_ds,
    eval_dataset=val_ds,
    processing_class=tokenizer,
)
full_trainer.remove_callback(PrinterCallback)
with PeakMemory(DEVICE) as full_mem:
    full_trainer.train()
full_hist = loss_history(full_trainer)
full_state = training_state_bytes(full_trainer.model, full_trainer.optimizer)
full_sec_per_step = full_mem.seconds / MAX_STEPS
full_eval = evaluate_task(full_trainer.model, tokenizer, test_ds, max_new_tokens=MAX_NEW_TOKENS)
print(f"Tinh chỉnh toàn bộ: {MAX_STEPS} bước trong {full_mem.seconds:.0f} s ({full_sec_per_step:.1f} s/bước)")
""")
code("""
lora_dir = save_adapter(lora_model, OUT / "adapter_r8", overwrite=True)
full_dir = OUT / "full_model"
full_trainer.model.save_pretrained(full_dir)
n_trainable_full, n_total_full = trainable_parameters(full_trainer.model)

rows = [
    ("tham số huấn luyện được", f"{n_trainable_lora:,}", f"{n_trainable_full:,}"),
    ("trọng số+gradient+Adam", human_size(lora_state["total"]), human_size(full_state["total"])),
    ("  trong đó gradient+Adam", human_size(lora_state["gradients"] + lora_state["optimizer"]),
     human_size(full_state["gradients"] + full_state["optimizer"])),
    ("bộ nhớ đỉnh tăng thêm (đo)", human_size(lora_mem.peak_bytes), human_size(full_mem.peak_bytes)),
    ("giây / bước", f"{lora_sec_per_step:.1f}", f"{full_sec_per_step:.1f}"),
    ("dung lượng khi lưu", human_size(directory_size(lora_dir)), human_size(directory_size(full_dir))),
    ("loss kiểm định cuối", f"{lora_hist['eval'][-1][1]:.3f}", f"{full_hist['eval'][-1][1]:.3f}"),
    ("độ chính xác tập kiểm tra", f"{lora_eval['accuracy']:.0%}", f"{full_eval['accuracy']:.0%}"),
]
print(f"{'':<28}{'LoRA r=' + str(LORA_R):>16}{'toàn bộ':>16}")
for name, a, b in rows:
    print(f"{name:<28}{a:>16}{b:>16}")
""")
code("""
# Các mục tiêu của bài, đo trong chính lần chạy này
lora_acc, full_acc, base_acc = lora_eval["accuracy"], full_eval["accuracy"], base_eval["accuracy"]
verdict = lambda ok: "đạt" if ok else "KHÔNG đạt"
print(f"Mô hình cơ sở ≤ 10%:            {base_acc:.0%}  → {verdict(base_acc <= 0.10)}")
print(f"LoRA ≥ 90%:                     {lora_acc:.0%}  → {verdict(lora_acc >= 0.90)}")
print(f"LoRA cách toàn bộ ≤ 5 điểm:     {abs(lora_acc - full_acc) * 100:.0f} điểm → {verdict(abs(lora_acc - full_acc) <= 0.05)}")

# Ghi số đo ra tệp: scripts/make_figures.py vẽ hình so sánh từ tệp này (không gõ tay con số nào)
measurements = {
    "source": "notebooks/lora_finetuning.ipynb", "device": DEVICE, "model": "SmolLM2-135M-Instruct",
    "max_steps": MAX_STEPS,
    "runs": {
        f"LoRA r={LORA_R}": {"trainable_params": n_trainable_lora, "peak_memory_bytes": lora_mem.peak_bytes,
                             "seconds_per_step": round(lora_sec_per_step, 2),
                             "checkpoint_bytes": directory_size(lora_dir), "test_accuracy": lora_acc},
        "toàn bộ": {"trainable_params": n_trainable_full, "peak_memory_bytes": full_mem.peak_bytes,
                    "seconds_per_step": round(full_sec_per_step, 2),
                    "checkpoint_bytes": directory_size(full_dir), "test_accuracy": full_acc},
    },
}
(OUT / "measurements.json").write_text(json.dumps(measurements, ensure_ascii=False, indent=2), encoding="utf-8")
if os.environ.get("LORA_COURSE_WRITE_FIGURE_DATA") == "1":   # chỉ khi người bảo trì chạy `make notebooks`
    figure_data = course_root() / "images" / "data" / "lora_vs_full.json"
    figure_data.parent.mkdir(parents=True, exist_ok=True)
    figure_data.write_text(json.dumps(measurements, ensure_ascii=False, indent=2) + "\\n", encoding="utf-8")
    print("Đã cập nhật", figure_data.relative_to(course_root()))
""")
code("""
plot_loss_curves({f"LoRA r={LORA_R} (lr {LORA_LR:g})": lora_hist, f"toàn bộ (lr {FULL_LR:g})": full_hist},
                 title="LoRA và tinh chỉnh toàn bộ")
plt.show()
""")
code("""
# NBVAL_CHECK_OUTPUT
print(f"Tham số huấn luyện được: LoRA {n_trainable_lora:,} / toàn bộ {n_trainable_full:,} "
      f"(ít hơn {n_trainable_full / n_trainable_lora:.0f} lần)")
print("Bộ điều hợp chỉ chứa:", sorted(p.name for p in lora_dir.iterdir()))
""")
md("""
**Đọc kết quả** (các con số ở bảng trên, của chính lần chạy này). Số tham số huấn luyện được và dung lượng khi lưu chênh nhau hàng chục lần; cùng số bước, độ chính xác như nhau. Nhưng thời gian mỗi bước và bộ nhớ đỉnh chỉ chênh lệch vừa phải (dưới 2 lần). Vì sao? Một mô hình bộ nhớ đơn giản cho một bước huấn luyện với Adam:

| thành phần | tinh chỉnh toàn bộ | LoRA |
|---|---|---|
| trọng số | mọi tham số | mọi tham số (vẫn phải chạy cả mô hình) |
| gradient | mọi tham số | chỉ A, B |
| trạng thái Adam (2 mô-men) | 2 × mọi tham số | 2 × chỉ A, B |
| activations | phụ thuộc lô × độ dài chuỗi | gần như như nhau |

Ở 135M tham số, trọng số + gradient + Adam fp32 chỉ vài trăm MB, còn activations (lô 8, chuỗi ~100 token, từ vựng 49k) và chi phí cố định của PyTorch chiếm phần đáng kể, nên tiết kiệm tương đối nhỏ. Thời gian mỗi bước cũng gần nhau vì LoRA vẫn phải lan truyền xuôi và ngược qua **toàn bộ** mô hình; nó chỉ bỏ được phần tính gradient của W và bước cập nhật Adam.
""")
code("""
GB = 1e9
small = {"toàn bộ": training_memory_estimate(n_total_full, n_trainable_full),
         "LoRA": training_memory_estimate(n_total_full, n_trainable_lora)}
print("SmolLM2-135M, fp32 (chưa tính activations):")
for name, est in small.items():
    print(f"  {name:<8} trọng số {est['weights']/GB:.2f} GB + gradient {est['gradients']/GB:.2f} GB "
          f"+ Adam {est['adam']/GB:.2f} GB = {est['total']/GB:.2f} GB")

# GPT-3 175B, theo bài báo LoRA (Hu và cộng sự, 2021): trọng số fp16, LoRA r=4 trên q, v: ~4.7M tham số
N_GPT3, N_GPT3_LORA = 175e9, 4.7e6
big = {"toàn bộ": training_memory_estimate(N_GPT3, N_GPT3, weight_bytes=2, grad_bytes=2, optimizer_bytes=4),
       "LoRA": training_memory_estimate(N_GPT3, N_GPT3_LORA, weight_bytes=2, grad_bytes=2, optimizer_bytes=4)}
print("\\nGPT-3 175B, fp16 (chưa tính activations):")
for name, est in big.items():
    print(f"  {name:<8} trọng số {est['weights']/GB:,.0f} GB + gradient {est['gradients']/GB:,.2f} GB "
          f"+ Adam {est['adam']/GB:,.2f} GB = {est['total']/GB:,.0f} GB")
print(f"Tham số huấn luyện được ít hơn {N_GPT3 / N_GPT3_LORA:,.0f} lần")
""")
md("""
Ở quy mô GPT-3, gradient và trạng thái Adam của 175 tỉ tham số lớn hơn chính trọng số nhiều lần; LoRA xoá gần hết phần đó. Mô hình thô của ta cho khoảng 1,4 TB so với 350 GB; bài báo LoRA đo thực tế **1,2 TB → 350 GB** bộ nhớ GPU khi huấn luyện, và dung lượng checkpoint từ 350 GB xuống khoảng 35 MB. Bài báo nói số tham số huấn luyện được ít hơn khoảng **10.000 lần**: đó là con số làm tròn cho các cấu hình họ dùng (từ 4,7M đến 37,7M tham số LoRA); với 4,7M như ô trên, tỉ lệ là khoảng 37.000 lần, với 37,7M là khoảng 4.600 lần. Kết luận: lợi ích bộ nhớ của LoRA lớn dần theo kích thước mô hình; ở 135M, lợi ích rõ nhất là **tệp nhỏ** và khả năng giữ nhiều bộ điều hợp cho một mô hình cơ sở.
""")
code("""
del full_trainer, full_model
shutil.rmtree(full_dir)        # 500 MB không cần giữ lại
""")

md("""
## 8. Thí nghiệm hạng: r=4 và r=16
Giữ `lora_alpha = 2·r` (tức alpha/r = 2 cố định) và các thiết lập khác, chỉ đổi r. Mỗi lần chạy `RANK_STEPS` bước.
""")
code("""
rank_hists, rank_params = {}, {}
for r in (4, 16):
    seed_everything(SEED)
    base_r, _ = load_base()
    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    check_lora_config(base_r, cfg)
    t = SFTTrainer(model=base_r,
                   args=sft_config(str(OUT / f"rank_{r}"), max_steps=RANK_STEPS, learning_rate=LORA_LR,
                                   batch_size=BATCH_SIZE, eval_steps=EVAL_STEPS, seed=SEED),
                   train_dataset=train_ds, eval_dataset=val_ds, processing_class=tokenizer, peft_config=cfg)
    t.remove_callback(PrinterCallback)
    start = time.perf_counter()
    t.train()
    rank_hists[f"r={r}"] = loss_history(t)
    rank_params[r] = trainable_parameters(t.model)[0]
    acc = evaluate_task(t.model, tokenizer, test_ds, max_new_tokens=MAX_NEW_TOKENS)["accuracy"]
    print(f"r={r:<3} {rank_params[r]:>10,} tham số  {time.perf_counter() - start:4.0f} s  "
          f"loss kiểm định cuối {rank_hists[f'r={r}']['eval'][-1][1]:.3f}  độ chính xác {acc:.0%}")
    del t, base_r
plot_loss_curves(rank_hists, title="Ảnh hưởng của hạng r")
plt.show()
""")
code("""
# NBVAL_CHECK_OUTPUT
print(f"r=16 có số tham số gấp {rank_params[16] / rank_params[4]:.0f} lần r=4")
""")
md("**Đọc kết quả.** Ở lần chạy đã lưu trên CPU, sau cùng 10 bước, r=16 có loss kiểm định thấp hơn và độ chính xác cao hơn r=4: giữ alpha/r cố định, hạng lớn hơn cho bộ điều hợp nhiều hướng cập nhật hơn nên đi nhanh hơn trong vài bước đầu, với giá gấp 4 lần tham số. Nhưng cả hai lần chạy 10 bước đều còn kém xa r=8 chạy 30 bước ở mục 5: ở đây **số bước quan trọng hơn hạng**. Lời khuyên thực tế: bắt đầu với hạng nhỏ (4–8), giữ một tập kiểm định và nhìn đường loss kiểm định; chỉ tăng r khi loss kiểm định đã ngừng giảm mà kết quả vẫn chưa đủ. Bài báo LoRA cũng thấy hạng rất nhỏ (1–4) thường đã đủ cho GPT-3.")

md("""
## 9. Lưu và nạp lại bộ điều hợp
Ta đã lưu bộ điều hợp ở mục 7 bằng `save_pretrained` (qua `save_adapter`, hàm không ghi đè thư mục có dữ liệu trừ khi `overwrite=True`). Nạp lại lên một mô hình cơ sở **mới** bằng `PeftModel.from_pretrained` và so logits với mô hình vừa huấn luyện.
""")
code("""
trained_logits = logits_of(lora_model)
fresh_base, _ = load_base()
reloaded = PeftModel.from_pretrained(fresh_base, str(lora_dir))
diff_reload = (logits_of(reloaded) - trained_logits).abs().max().item()
diff_vs_base = (trained_logits - base_logits).abs().max().item()
print(f"Chênh lệch logits (nạp lại vs vừa huấn luyện): {diff_reload:.3g}")
print(f"Chênh lệch logits (vừa huấn luyện vs cơ sở): {diff_vs_base:.3g}")
""")
code("""
# NBVAL_CHECK_OUTPUT
print("Nạp lại cho logits giống hệt mô hình vừa huấn luyện:", diff_reload < 1e-5)
print("Bộ điều hợp thật sự đã thay đổi mô hình:", diff_vs_base > 1e-2)
print("Các tệp:", sorted(p.name for p in lora_dir.iterdir()))
""")

md("""
## 10. Những cách viết cũ cần sửa
Nhiều bài hướng dẫn trên mạng được viết cho các phiên bản cũ. Đối chiếu với phiên bản đang dùng (transformers 5, peft 0.21, TRL 1.x):

| cách viết cũ | vấn đề | cách đúng hiện nay |
|---|---|---|
| `AutoModelForCausalLM.from_pretrained(..., peft_config=cfg)` | không phải một API; không tạo bộ điều hợp nào | nạp mô hình cơ sở, rồi `get_peft_model(model, cfg)` hoặc `SFTTrainer(..., peft_config=cfg)`; nạp bộ điều hợp đã lưu bằng `PeftModel.from_pretrained` |
| `from_pretrained(..., load_in_8bit=True)` | tham số rời đã bị bỏ | `quantization_config=BitsAndBytesConfig(load_in_8bit=True)` (hoặc `load_in_4bit=True`), cần GPU CUDA |
| `SFTTrainer(..., tokenizer=tok)` | đã đổi tên | `SFTTrainer(..., processing_class=tok)` |
| `SFTTrainer(..., max_seq_length=512)` | đã chuyển chỗ và đổi tên | `SFTConfig(max_length=512)` (ở đây: `sft_config(..., max_length=160)`) |

Ô dưới kiểm chứng hai dòng cuối bằng chính thư viện đã cài.
""")
code("""
import inspect
from trl import SFTConfig

trainer_args = inspect.signature(SFTTrainer.__init__).parameters
config_fields = SFTConfig.__dataclass_fields__
""")
code("""
# NBVAL_CHECK_OUTPUT
print("SFTTrainer nhận processing_class:", "processing_class" in trainer_args)
print("SFTTrainer nhận tokenizer:", "tokenizer" in trainer_args)
print("SFTConfig có max_length:", "max_length" in config_fields)
print("SFTConfig có max_seq_length:", "max_seq_length" in config_fields)
""")

md("""
## 11. Khi cấu hình sai: lỗi dễ hiểu trước khi huấn luyện
`check_lora_config(model, cfg)` kiểm tra `LoraConfig` trước khi tốn thời gian: tên lớp không tồn tại (lỗi chính tả rất hay gặp: `q_proj` viết thành `query`), hoặc hạng r không hợp lệ.
""")
code("""
# NBVAL_CHECK_OUTPUT
bad_configs = {
    "tên lớp sai": LoraConfig(r=8, target_modules=["query", "v_proj"]),
    "r=0": LoraConfig(r=8, target_modules=["q_proj", "v_proj"]),
}
bad_configs["r=0"].r = 0        # LoraConfig cho phép gán r=0; lỗi chỉ lộ ra muộn hơn
plain_base, _ = load_base()     # mô hình chưa bọc LoRA (fresh_base đã bị PeftModel chèn lớp LoRA vào)
for name, cfg in bad_configs.items():
    try:
        check_lora_config(plain_base, cfg)
        print(f"[{name}] không phát hiện lỗi?!")
    except CourseError as exc:
        print(f"[{name}] {exc}\\n")
""")

md("Dữ liệu sai dạng cũng bị bắt trước khi huấn luyện: `SFTTrainer` cần cột `messages` (hoặc `prompt`/`completion`). `check_messages_dataset` nói rõ thiếu gì và sửa thế nào.")
code("""
# NBVAL_CHECK_OUTPUT
from datasets import Dataset

wrong = Dataset.from_dict({"question": ["Ngày 3 tháng 4 năm 2021"], "answer": ["2021-04-03"]})
try:
    check_messages_dataset(wrong, "wrong")
except CourseError as exc:
    print(exc)
""")

md("""
## Tóm tắt
- LoRA đóng băng W và học ΔW = (alpha/r)·B·A; vì B = 0 lúc đầu, mô hình có bộ điều hợp **giống hệt** mô hình cơ sở trước bước đầu tiên (ta đã kiểm chứng trên logits).
- Số tham số huấn luyện được là r·(d_in + d_out) mỗi lớp, tuyến tính theo r; công thức khớp chính xác với peft.
- `SFTTrainer(model, args=SFTConfig, train_dataset, eval_dataset, processing_class=tokenizer, peft_config=LoraConfig)` huấn luyện bộ điều hợp; theo dõi loss trên cả tập huấn luyện và tập kiểm định.
- Trên tác vụ ngày tháng, 30 bước LoRA đưa độ chính xác trên tập kiểm tra (câu viết theo mẫu chưa gặp khi huấn luyện) từ 0% lên mức của tinh chỉnh toàn bộ cùng số bước, với số tham số huấn luyện được và tệp lưu nhỏ hơn khoảng 55 lần. Lợi ích bộ nhớ ở 135M là vừa phải, nhưng ở 175B là khổng lồ.
- Lưu bằng `save_pretrained`, nạp lại bằng `PeftModel.from_pretrained` lên mô hình cơ sở mới: logits giống hệt.

**Luyện tập:** [bài tập](../exercises/02_lora_finetuning_exercises.ipynb) (🐢 🐕 🦁, có chấm tự động) · [lời giải](../solutions/02_lora_finetuning_solutions.ipynb)

Bài tiếp theo: [hợp nhất bộ điều hợp vào mô hình](merge_lora_adapters.ipynb) (`merge_and_unload`), rồi [OLoRA](olora_finetuning.ipynb).
""")
write_notebook("lora_finetuning.ipynb")
