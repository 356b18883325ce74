"""Builder of notebooks/trl_peft_preference.ipynb (lesson 5: DPO with TRL + PEFT).

`python scripts/notebook_sources/trl_peft_preference.py` writes the unexecuted notebook (then execute it
with `make notebooks`); `--smoke OUT` writes a tiny-step variant to OUT for a quick check."""
from _builder import SETUP_CELL, SMOKE, code, md, write_notebook

md("""
# Bài 5: Huấn luyện theo sự ưu tiên (DPO) với TRL + PEFT

<a href="https://colab.research.google.com/github/lora-course-vi/lora-course-vi/blob/main/notebooks/trl_peft_preference.ipynb" target="_parent"><img src="https://colab.research.google.com/assets/colab-badge.svg" alt="Mở trong Colab"/></a>

**Bạn sẽ học được:**
- dữ liệu cho tinh chỉnh theo sự ưu tiên (preference alignment, DPO): mỗi câu hỏi có một câu trả lời được chọn (chosen) và một câu trả lời bị loại (rejected), ở dạng hội thoại mà TRL nhận;
- hàm mất mát (loss) của DPO, hệ số β, và biên phần thưởng (reward margin) ngầm định mà DPO tối đa hoá;
- huấn luyện một bộ điều hợp (adapter) LoRA bằng `DPOTrainer` của TRL với `peft_config`, **không** nạp mô hình tham chiếu (reference model) thứ hai: TRL tắt bộ điều hợp để có lại mô hình cơ sở (base model) làm tham chiếu; ta đọc mã nguồn TRL và kiểm chứng bằng số;
- đo bộ nhớ đỉnh so với cách nạp thêm một bản sao đầy đủ của mô hình làm tham chiếu;
- đo biên phần thưởng và độ chính xác ưu tiên trên tập kiểm định (validation set) trước và sau, cùng các đường `rewards/margins`, `rewards/accuracies` mà TRL ghi lại;
- QLoRA: nạp mô hình cơ sở 4-bit rồi huấn luyện LoRA lên trên (chỉ chạy khi có GPU CUDA).

**Thời gian chạy:** khoảng 3–4 phút trên CPU 2 nhân (đo: khoảng 3,5 phút); trên GPU nhanh hơn nhiều lần (chưa đo).

Tác vụ: `ngay_thang` như các bài trước: đọc một câu tiếng Việt có ngày tháng và trả lời đúng một ngày dạng `YYYY-MM-DD`.
""")
code(SETUP_CELL)
md("## 1. Thư viện, hạt giống ngẫu nhiên, thiết bị")
code("""
import importlib.util
import inspect
import shutil
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")   # thanh tiến trình của tqdm trong Jupyter

import matplotlib.pyplot as plt
import torch
import transformers
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from lora_helpers import CourseError
from lora_helpers.adapters import course_root, human_size
from lora_helpers.data import make_task_splits
from lora_helpers.env import pick_device, pick_dtype, print_environment, seed_everything
from lora_helpers.evaluation import evaluate_task
from lora_helpers.models import find_base_model
from lora_helpers.params import PeakMemory, trainable_parameters
from lora_helpers.plotting import plot_histograms, plot_metric_curves
from lora_helpers.preferences import (MISTAKES, check_preference_dataset, completion_logps, dataloader_logps,
                                      dpo_log_curves, implicit_reward_margins, make_preference_splits,
                                      preference_accuracy)

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
md("## 2. Cấu hình\nMọi hằng số của bài nằm ở đây. Mỗi bước DPO chạy cả câu được chọn lẫn câu bị loại qua mô hình, thêm một lượt cho mô hình tham chiếu (xem mục 4), nên trên CPU ta giữ lô nhỏ và ít bước.")
steps = ("2", "1", "16", "8", "4") if SMOKE else ("12 if DEVICE == \"cpu\" else 60", "2", "128", "24", "24")
code(f"""
TASK = "ngay_thang"
SEED = 0
MAX_STEPS = {steps[0]}          # số bước DPO
MEMORY_STEPS = {steps[1]}                               # số bước cho mỗi lần đo bộ nhớ ở mục 8
N_TRAIN_PAIRS = {steps[2]}                              # số cặp ưu tiên để huấn luyện
N_VAL_PAIRS = {steps[3]}                                # số cặp của tập kiểm định
N_TEST = {steps[4]}                                     # số câu hỏi để so câu trả lời sinh ra trước/sau
BATCH_SIZE = 4                  # 4 cặp = 8 chuỗi (chosen + rejected) mỗi bước
EVAL_BATCH_SIZE = 8
MAX_LENGTH = 160                # câu hỏi (kể cả system prompt mặc định) ~100 token, câu trả lời ≤ 25 token
BETA = 0.1                      # β của DPO: càng lớn càng bị giữ gần mô hình tham chiếu
LEARNING_RATE = 1e-3            # LoRA chịu được tốc độ học lớn (DPO toàn bộ thường dùng ~1e-6)
LORA_R, LORA_ALPHA = 8, 16
MAX_NEW_TOKENS = 16
OUT = course_root() / "outputs" / "trl_peft_preference"   # thư mục bị .gitignore bỏ qua

BASE_PATH = find_base_model()
if OUT.exists():
    shutil.rmtree(OUT)               # bắt đầu sạch mỗi lần chạy lại cả bài
""")

md("""
## 3. Dữ liệu ưu tiên: câu được chọn và câu bị loại
SFT (bài 2) chỉ cho mô hình xem câu trả lời đúng. DPO cho xem **một cặp**: câu trả lời được chọn (chosen) và câu trả lời bị loại (rejected) cho cùng một câu hỏi, và dạy mô hình ưu tiên câu thứ nhất hơn câu thứ hai.

`make_preference_splits` lấy đúng các câu hỏi và đáp án của tác vụ `ngay_thang` (`make_task_splits`), rồi sinh câu bị loại bằng mã có hạt giống (không tải gì về): một lỗi **có vẻ hợp lý**, như lỗi mà một mô hình nhỏ hay mắc. Tập huấn luyện và tập kiểm định không có ngày nào chung, và không ngày nào trùng với tập kiểm tra (test set) dùng ở mục 7.

Định dạng là *hội thoại* (conversational) của TRL: `prompt` là danh sách tin nhắn, `chosen` và `rejected` là danh sách một tin nhắn của `assistant`. TRL tự áp dụng chat template của mô hình.
""")
code("""
pref = make_preference_splits(TASK, n_train=N_TRAIN_PAIRS, n_val=N_VAL_PAIRS, seed=SEED)
check_preference_dataset(pref["train"], "pref['train']")      # lỗi tiếng Việt nếu sai định dạng
check_preference_dataset(pref["validation"], "pref['validation']")
for row in pref["train"].select(range(5)):
    print(row["prompt"][0]["content"])
    print(f"   được chọn: {row['chosen'][0]['content']!r:<16}  bị loại: {row['rejected'][0]['content']!r}  "
          f"({MISTAKES[row['mistake']]})")
""")
code("""
# NBVAL_CHECK_OUTPUT
from collections import Counter

print({name: len(split) for name, split in pref.items()})
print("Các cột:", pref["train"].column_names)
print("Kiểu lỗi trong tập huấn luyện:", dict(sorted(Counter(pref["train"]["mistake"]).items())))
dates = {name: {row[0]["content"] for row in split["chosen"]} for name, split in pref.items()}
test_ds = make_task_splits(TASK, n_test=N_TEST, seed=SEED)["test"]
print("Câu được chọn luôn khác câu bị loại:", all(r["chosen"] != r["rejected"] for r in pref["train"]))
print("Huấn luyện và kiểm định không chung ngày nào:", not dates["train"] & dates["validation"])
print("Không ngày nào trùng tập kiểm tra:", not (dates["train"] | dates["validation"]) & set(test_ds["answer"]))
""")

md("""
## 4. DPO trong một công thức
Gọi π là mô hình đang huấn luyện, π_ref là **mô hình tham chiếu** (reference model: mô hình lúc bắt đầu, giữ cố định), y_w là câu được chọn, y_l là câu bị loại, và log π(y) là tổng log-xác suất các token của câu trả lời. DPO định nghĩa một *phần thưởng ngầm định* r(y) = β·(log π(y) − log π_ref(y)) và tối thiểu hoá

$$\\mathcal{L}_\\text{DPO} = -\\log \\sigma\\Big(\\underbrace{\\beta\\big[(\\log \\pi(y_w) - \\log \\pi_\\text{ref}(y_w)) - (\\log \\pi(y_l) - \\log \\pi_\\text{ref}(y_l))\\big]}_{\\text{biên phần thưởng (reward margin)}}\\Big).$$

- Biên phần thưởng dương nghĩa là, **so với mô hình tham chiếu**, mô hình đã nâng câu được chọn lên nhiều hơn câu bị loại. *Độ chính xác ưu tiên* (TRL gọi là `rewards/accuracies`) là tỉ lệ cặp có biên > 0.
- Lúc bắt đầu π = π_ref nên mọi biên bằng 0 và loss = log 2 ≈ 0,693.
- β điều chỉnh mức được phép đi xa khỏi π_ref: β lớn thì mỗi chút lệch đã cho biên lớn, loss bão hoà sớm, mô hình ở gần tham chiếu.

Mỗi bước DPO cần log-xác suất của **cả hai** câu trả lời dưới **cả hai** mô hình: π (có gradient) và π_ref (không gradient). Vì thế, với cùng số câu hỏi, một bước DPO chạy gấp đôi số chuỗi so với SFT, cộng thêm một lượt chạy xuôi cho π_ref; và cách thông thường cần **hai bản sao** của mô hình trong bộ nhớ. Với LoRA thì không: π_ref chính là π khi **tắt bộ điều hợp**.

**Xuất phát từ đâu?** Công thức kinh điển là SFT trước rồi DPO (xuất phát từ bộ điều hợp SFT `adapters/ngay_thang`, và tham chiếu phải là mô hình SFT). TRL 1.16 có hỗ trợ: khi nhận một `PeftModel` đã có bộ điều hợp, nó chép bộ điều hợp thành một bộ thứ hai tên `"ref"` và dùng bộ đó làm tham chiếu. Nhưng mô hình SFT của ta đã trả lời đúng gần hết, nên DPO không còn gì để sửa và không thấy được tác dụng. Ở bài này ta xuất phát từ **mô hình cơ sở** với `peft_config`: tham chiếu là mô hình cơ sở (bộ điều hợp bị tắt), đúng cơ chế mà ta muốn kiểm chứng.
""")
code("""
def load_base():
    \"\"\"A fresh copy of the base model and its tokenizer (padding on the left, as TRL asks).\"\"\"
    m = AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=DTYPE).to(DEVICE)
    tok = AutoTokenizer.from_pretrained(BASE_PATH)
    tok.padding_side = "left"
    return m, tok


def lora_config():
    return LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")


def dpo_config(name, max_steps, **overrides):
    \"\"\"DPOConfig for this lesson; every field named here exists in TRL 1.16's DPOConfig.\"\"\"
    settings = dict(
        output_dir=str(OUT / name), max_steps=max_steps, learning_rate=LEARNING_RATE, beta=BETA,
        loss_type=["sigmoid"],                     # hàm mất mát DPO gốc (công thức ở trên)
        per_device_train_batch_size=BATCH_SIZE, per_device_eval_batch_size=EVAL_BATCH_SIZE,
        max_length=MAX_LENGTH,                     # TRL 1.x: không còn max_prompt_length
        precompute_ref_log_probs=False,            # tính log π_ref ngay trong mỗi bước
        lr_scheduler_type="constant", logging_steps=1, eval_strategy="no", save_strategy="no",
        report_to="none", seed=SEED, data_seed=SEED,
        bf16=DTYPE == torch.bfloat16, fp16=DTYPE == torch.float16,   # DPOConfig mặc định bf16=True: tắt trên CPU
        activation_checkpointing=False,            # DPOConfig mặc định bật (tên cũ: gradient_checkpointing): không cần ở mô hình 135M
        use_cpu=DEVICE == "cpu", dataloader_num_workers=0, disable_tqdm=True,
    )
    settings.update(overrides)
    return DPOConfig(**settings)
""")

md("""
## 5. `DPOTrainer` với `peft_config`, không có mô hình tham chiếu thứ hai
Ta đưa vào **mô hình cơ sở** cùng `peft_config=LoraConfig(...)` và **không** truyền `ref_model`. TRL tự gọi `get_peft_model`, và vì mô hình là một `PeftModel` nên nó không nạp mô hình tham chiếu nào.
""")
code("""
seed_everything(SEED)
model, tokenizer = load_base()
trainer = DPOTrainer(
    model=model,
    args=dpo_config("dpo_lora", MAX_STEPS),
    train_dataset=pref["train"],
    eval_dataset=pref["validation"],
    processing_class=tokenizer,               # TRL 1.x: tên cũ `tokenizer=` đã bị bỏ
    peft_config=lora_config(),
)
trainer.remove_callback(PrinterCallback)      # không in từng dòng log; ta vẽ đồ thị
n_trainable, n_total = trainable_parameters(trainer.model)
""")
code("""
# NBVAL_CHECK_OUTPUT
print("trainer.ref_model is None:", trainer.ref_model is None)
print("Mô hình được huấn luyện là PeftModel:", isinstance(trainer.model, PeftModel))
print("Các bộ điều hợp:", list(trainer.model.peft_config))
print(f"Tham số huấn luyện được: {n_trainable:,} / {n_total:,} ({100 * n_trainable / n_total:.2f}%)")
""")
md("""
Vậy log π_ref lấy ở đâu? Đọc mã nguồn TRL đã cài. Trong `DPOTrainer._compute_loss`, khi mô hình là PEFT và không có `ref_model`, TRL chạy lại **chính mô hình đó** bên trong `use_adapter(..., adapter_name=None)`; và `use_adapter` với `adapter_name=None` chính là `model.disable_adapter()` của peft. (Nếu mô hình đã có sẵn một bộ điều hợp, TRL tạo bộ `"ref"` và dùng `adapter_name="ref"`: đó là trường hợp SFT→DPO nói ở trên.)
""")
code("""
import trl.trainer.utils as trl_utils

def show_source_lines(func, needles):
    \"\"\"Print the lines of ``func``'s source that contain one of ``needles``, with file line numbers.\"\"\"
    func = inspect.unwrap(func)                  # use_adapter is wrapped by @contextmanager
    lines, first = inspect.getsourcelines(func)
    print(f"{func.__qualname__}  ({inspect.getsourcefile(func).split('site-packages/')[-1]})")
    for i, line in enumerate(lines):
        if any(n in line for n in needles):
            print(f"  {first + i:>5} | {line.rstrip()}")

show_source_lines(DPOTrainer._compute_loss, ["ref_model is None", "use_adapter(", "adapter_name=", "ref_outputs ="])
show_source_lines(trl_utils.use_adapter, ["if adapter_name is None", "disable_adapter()"])
""")
md("""
Kiểm chứng bằng số trên một lô của tập kiểm định (lô do chính bộ gom dữ liệu (collator) của TRL tạo: nửa đầu là các chuỗi *câu hỏi + câu được chọn*, nửa sau là *câu hỏi + câu bị loại*):
1. `trainer.compute_ref_log_probs(...)`: log π_ref mà TRL tính;
2. `completion_logps` của ta (tự tính từ logits đầy đủ, không qua đầu ra hợp nhất của TRL) trên chính mô hình huấn luyện, bên trong `with trainer.model.disable_adapter():`;
3. cũng hàm đó trên một **bản nạp mới** của mô hình cơ sở.
""")
code("""
eval_loader = trainer.get_eval_dataloader()
batch = next(iter(eval_loader))
on_device = {k: v.to(trainer.accelerator.device) for k, v in batch.items()}
trl_ref = [t.float().cpu() for t in trainer.compute_ref_log_probs(trainer.model, on_device)]
with trainer.model.disable_adapter():
    ours_disabled = completion_logps(trainer.model, batch)
fresh_base, _ = load_base()
ours_fresh = completion_logps(fresh_base, batch)
del fresh_base
diff_disabled = max((a - b).abs().max().item() for a, b in zip(trl_ref, ours_disabled))
diff_fresh = max((a - b).abs().max().item() for a, b in zip(trl_ref, ours_fresh))
print("Kích thước lô:", {k: tuple(v.shape) for k, v in batch.items()})
print("log π_ref(câu được chọn), 4 cặp đầu:", [round(x, 3) for x in trl_ref[0][:4].tolist()])
print(f"Chênh lệch lớn nhất: TRL vs tắt bộ điều hợp {diff_disabled:.2g}; TRL vs mô hình cơ sở nạp mới {diff_fresh:.2g}")
""")
code("""
# NBVAL_CHECK_OUTPUT
print("Log π_ref của TRL = log-xác suất khi tắt bộ điều hợp (sai số < 1e-3):", diff_disabled < 1e-3)
print("Log π_ref của TRL = log-xác suất của mô hình cơ sở nạp mới (sai số < 1e-3):", diff_fresh < 1e-3)
""")

md("""
## 6. Trước khi huấn luyện: biên phần thưởng trên tập kiểm định
Tính log π(y_w), log π(y_l) cho mọi cặp của tập kiểm định, một lần với bộ điều hợp tắt (π_ref) và một lần với bộ điều hợp bật (π). Ta cũng xem mô hình cơ sở **tự nó** đã ưu tiên câu nào: tỉ lệ cặp có log π_ref(y_w) > log π_ref(y_l).
""")
code("""
with trainer.model.disable_adapter():
    ref_logps = dataloader_logps(trainer.model, eval_loader)
policy_before = dataloader_logps(trainer.model, eval_loader)
margins_before = implicit_reward_margins(policy_before, ref_logps, BETA)
base_prefers = preference_accuracy(ref_logps[0] - ref_logps[1])
print(f"Mô hình cơ sở gán log-xác suất cao hơn cho câu được chọn ở {base_prefers:.0%} số cặp")
""")
code("""
# NBVAL_CHECK_OUTPUT
print("Trước bước đầu tiên, mọi biên phần thưởng đều bằng 0 (B = 0 nên π = π_ref):",
      bool((margins_before == 0).all()))
print(f"Độ chính xác ưu tiên trước khi huấn luyện: {preference_accuracy(margins_before):.0%}")
""")
md("Độ chính xác ưu tiên 0% ở đây không có nghĩa mô hình *chọn sai*: mọi biên bằng đúng 0, không cặp nào > 0. Đó là điểm xuất phát của DPO. Để so \"trước/sau\" có ý nghĩa, mục 7 dùng thêm hiệu log π(y_w) − log π(y_l) của chính mô hình.")

md("""
Câu trả lời của mô hình cơ sở trên tập kiểm tra (giải mã tham lam (greedy), như các bài trước):
""")
code("""
start = time.perf_counter()
with trainer.model.disable_adapter():
    base_eval = evaluate_task(trainer.model, tokenizer, test_ds, max_new_tokens=MAX_NEW_TOKENS)
print(f"Mô hình cơ sở: độ chính xác {base_eval['accuracy']:.0%} trên {base_eval['n']} câu "
      f"({time.perf_counter() - start:.0f} s)")
""")

md("""
## 7. Huấn luyện DPO
""")
code("""
with PeakMemory(DEVICE) as dpo_mem:
    trainer.train()
curves = dpo_log_curves(trainer)
print(f"DPO: {MAX_STEPS} bước trong {dpo_mem.seconds:.0f} s ({dpo_mem.seconds / MAX_STEPS:.1f} s/bước)")
print(f"Loss: {curves['loss'][0][1]:.3f} → {curves['loss'][-1][1]:.3f}; "
      f"rewards/margins (lô cuối): {curves['rewards/margins'][-1][1]:.2f}; "
      f"rewards/accuracies (lô cuối): {curves['rewards/accuracies'][-1][1]:.0%}")
""")
code("""
plot_metric_curves(curves, labels={"loss": "hàm mất mát (loss)", "rewards/margins": "biên phần thưởng",
                                   "rewards/accuracies": "độ chính xác ưu tiên"},
                   title="Các số TRL ghi lại mỗi bước (trên lô huấn luyện)")
plt.show()
""")
md("Các đường này tính trên **lô huấn luyện** của từng bước (`BATCH_SIZE` cặp), nên dao động. Đánh giá thật phải trên tập kiểm định, những cặp mô hình chưa thấy:")
code("""
policy_after = dataloader_logps(trainer.model, eval_loader)
margins_after = implicit_reward_margins(policy_after, ref_logps, BETA)
acc_after = preference_accuracy(margins_after)
own_before = ref_logps[0] - ref_logps[1]                # log π(y_w) − log π(y_l), trước (= mô hình cơ sở)
own_after = policy_after[0] - policy_after[1]           # ... và sau DPO
trl_eval = trainer.evaluate()                            # TRL tự tính trên cùng tập kiểm định
print(f"Tập kiểm định ({len(margins_after)} cặp):")
print(f"  biên phần thưởng trung bình: 0 → {margins_after.mean().item():.2f} "
      f"(TRL evaluate: {trl_eval['eval_rewards/margins']:.2f})")
print(f"  độ chính xác ưu tiên (biên > 0): {preference_accuracy(margins_before):.0%} → {acc_after:.0%} "
      f"(TRL evaluate: {trl_eval['eval_rewards/accuracies']:.0%})")
print(f"  phần thưởng ngầm định TB: câu được chọn {trl_eval['eval_rewards/chosen']:.2f}, "
      f"câu bị loại {trl_eval['eval_rewards/rejected']:.2f}")
print(f"  log π(y_w) trung bình: {ref_logps[0].mean().item():.1f} → {policy_after[0].mean().item():.1f} nat; "
      f"log π(y_l): {ref_logps[1].mean().item():.1f} → {policy_after[1].mean().item():.1f} nat")
print(f"  mô hình tự ưu tiên câu được chọn (log π(y_w) > log π(y_l)): {preference_accuracy(own_before):.0%} → "
      f"{preference_accuracy(own_after):.0%}")
""")
code("""
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
plot_histograms({"trước DPO (mô hình cơ sở)": own_before, "sau DPO": own_after}, ax=axes[0],
                title="log π(y_w) − log π(y_l) trên tập kiểm định", xlabel="hiệu log-xác suất (nat)")
plot_histograms({"trước DPO": margins_before, "sau DPO": margins_after}, ax=axes[1],
                title="Biên phần thưởng β·[...] trên tập kiểm định", xlabel="biên phần thưởng")
plt.show()
""")
md("""
Hai hình là một: vì π_ref chính là mô hình trước DPO, biên phần thưởng sau huấn luyện đúng bằng β × (hiệu log-xác suất sau − hiệu log-xác suất trước) cho từng cặp. Ô dưới kiểm tra đẳng thức đó và sự khớp giữa cách ta tính với `trainer.evaluate()` của TRL.
""")
code("""
# NBVAL_CHECK_OUTPUT
identity_gap = (margins_after - BETA * (own_after - own_before)).abs().max().item()
print("Biên = β·(hiệu sau − hiệu trước) cho mọi cặp (sai số < 1e-4):", identity_gap < 1e-4)
print("Biên trung bình khớp TRL (sai số < 1e-3):",
      abs(margins_after.mean().item() - trl_eval["eval_rewards/margins"]) < 1e-3)
print("Độ chính xác ưu tiên khớp TRL:", abs(acc_after - trl_eval["eval_rewards/accuracies"]) < 1e-6)
""")
md("Kết quả theo từng kiểu lỗi của câu bị loại: kiểu nào mô hình đã phân biệt được, kiểu nào chưa.")
code("""
kinds = pref["validation"]["mistake"]
print(f"{'kiểu lỗi của câu bị loại':<34}{'số cặp':>7}{'biên TB':>9}{'biên > 0':>10}")
for kind in MISTAKES:
    idx = [i for i, k in enumerate(kinds) if k == kind]
    if idx:
        m = margins_after[idx]
        print(f"{MISTAKES[kind]:<34}{len(idx):>7}{m.mean().item():>9.2f}{preference_accuracy(m):>10.0%}")
""")
md("Và câu trả lời sinh ra (giải mã tham lam) trên tập kiểm tra, trước và sau:")
code("""
start = time.perf_counter()
dpo_eval = evaluate_task(trainer.model, tokenizer, test_ds, max_new_tokens=MAX_NEW_TOKENS)
print(f"Độ chính xác khớp tuyệt đối: cơ sở {base_eval['accuracy']:.0%} → sau DPO {dpo_eval['accuracy']:.0%} "
      f"(trên {dpo_eval['n']} câu, {time.perf_counter() - start:.0f} s)\\n")
for i in range(4):
    print(f"Câu hỏi: {test_ds[i]['messages'][0]['content']}")
    print(f"  đáp án đúng: {test_ds[i]['answer']}")
    print(f"  cơ sở      : {base_eval['predictions'][i][:70]!r}")
    print(f"  sau DPO    : {dpo_eval['predictions'][i][:70]!r}\\n")
""")
md("""
**Đọc kết quả.**
- Trên tập kiểm định, những cặp mô hình chưa từng thấy, biên phần thưởng đi từ đúng 0 lên dương và độ chính xác ưu tiên tăng theo: mô hình đã học phân biệt ngày ISO đúng với các lỗi *có vẻ hợp lý*. Cách ta tự tính và `trainer.evaluate()` của TRL cho cùng con số.
- Nhưng hãy nhìn dòng "mô hình tự ưu tiên": ngay từ đầu, mô hình cơ sở đã gán log-xác suất cao hơn cho câu được chọn ở phần lớn các cặp. Biên phần thưởng đo mức **thay đổi so với tham chiếu**, không đo mô hình giỏi đến đâu.
- Xem hai phần thưởng ngầm định: biên lớn chủ yếu đến từ việc **câu bị loại bị đẩy xuống**, còn câu được chọn chỉ nhích lên một chút. DPO chỉ cần câu bị loại tụt nhanh hơn câu được chọn; trên nhiều bộ dữ liệu khác, xác suất của câu được chọn thậm chí cũng giảm.
- Dòng log π(y_w) cho thấy log-xác suất của câu đúng vẫn rất âm sau DPO, tức mô hình vẫn gần như không bao giờ tự viết ra nó. Vì thế câu trả lời sinh ra (giải mã tham lam) không tốt lên, ở lần chạy này còn lộn xộn hơn: DPO chỉ so sánh hai câu trả lời cho sẵn, nó không dạy mô hình viết đúng định dạng từ đầu. Đó là lý do công thức thực tế là **SFT trước** (bài 2: mô hình học trả lời đúng dạng), **rồi DPO** (mô hình học tránh những lỗi cụ thể), với tham chiếu là mô hình SFT.
""")

md("""
## 8. Bộ nhớ: tắt bộ điều hợp hay nạp thêm một mô hình tham chiếu?
Cách làm không dùng PEFT (hoặc khi ta truyền `ref_model=` cho `DPOTrainer`) giữ **hai bản** mô hình trong bộ nhớ: π đang huấn luyện và π_ref đóng băng. Ta đo cả hai cách, mỗi cách `MEMORY_STEPS` bước, cùng dữ liệu và cùng bộ điều hợp LoRA; khác nhau duy nhất là có nạp `ref_model=AutoModelForCausalLM.from_pretrained(...)` hay không. `PeakMemory` đo phần bộ nhớ **tăng thêm** trong khối lệnh (trên CPU: bộ nhớ thường trú RSS, lấy mẫu liên tục, sau khi trả lại bộ nhớ đã giải phóng; trên GPU: `torch.cuda.max_memory_allocated`), tính cả việc nạp mô hình tham chiếu.
""")
code("""
def memory_run(with_ref_model):
    \"\"\"Peak added memory of building a DPOTrainer (+ loading a reference copy) and MEMORY_STEPS steps.\"\"\"
    seed_everything(SEED)
    policy, tok = load_base()
    with PeakMemory(DEVICE) as mem:
        ref = AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=DTYPE).to(DEVICE) if with_ref_model else None
        t = DPOTrainer(model=policy, ref_model=ref,
                       args=dpo_config("memory_ref" if with_ref_model else "memory_peft", MEMORY_STEPS),
                       train_dataset=pref["train"], processing_class=tok, peft_config=lora_config())
        t.remove_callback(PrinterCallback)
        t.train()
    ref_bytes = sum(p.numel() * p.element_size() for p in t.ref_model.parameters()) if t.ref_model is not None else 0
    ref_is_none = t.ref_model is None
    del t, policy, ref
    return mem, ref_bytes, ref_is_none

mem_peft, _, peft_ref_none = memory_run(with_ref_model=False)
mem_ref, ref_weight_bytes, _ = memory_run(with_ref_model=True)
print(f"{'':<40}{'tắt bộ điều hợp':>18}{'+ ref_model':>14}")
print(f"{'bộ nhớ đỉnh tăng thêm (đo)':<40}{human_size(mem_peft.peak_bytes):>18}{human_size(mem_ref.peak_bytes):>14}")
print(f"{'thời gian (' + str(MEMORY_STEPS) + ' bước, kể cả nạp)':<40}{mem_peft.seconds:>16.0f} s{mem_ref.seconds:>12.0f} s")
print(f"\\nTrọng số của bản sao tham chiếu: {human_size(ref_weight_bytes)} "
      f"({ref_weight_bytes:,} byte, {str(DTYPE).replace('torch.', '')})")
print(f"Chênh lệch bộ nhớ đỉnh đo được: {human_size(mem_ref.peak_bytes - mem_peft.peak_bytes)}")
""")
code("""
# NBVAL_CHECK_OUTPUT
print("Cách PEFT không có mô hình tham chiếu (ref_model is None):", peft_ref_none)
n_base_params = sum(p.numel() for n, p in trainer.model.get_base_model().named_parameters() if "lora_" not in n)
bytes_per_weight = torch.tensor([], dtype=DTYPE).element_size()
print(f"Bản sao tham chiếu = {n_base_params:,} trọng số × {bytes_per_weight} byte:",
      ref_weight_bytes == n_base_params * bytes_per_weight)
""")
md("""
Bản sao tham chiếu là **toàn bộ trọng số** của mô hình (ở fp32: 4 byte mỗi tham số), nằm trong bộ nhớ suốt quá trình huấn luyện. Với PEFT, thứ duy nhất được thêm vào là bộ điều hợp LoRA (vài MB) cùng gradient và trạng thái Adam của nó; tham chiếu có được "miễn phí" bằng cách tắt bộ điều hợp, đổi lại mỗi bước tốn thêm một lượt chạy xuôi (mà cách có `ref_model` cũng phải chạy). Ở 135M tham số, bản sao chỉ khoảng 0,5 GB; với một mô hình 7B ở bf16 nó là khoảng 14 GB, thường là chênh lệch giữa vừa và không vừa một GPU.

Một cách khác để khỏi giữ tham chiếu trong bộ nhớ là `DPOConfig(precompute_ref_log_probs=True)`: TRL tính trước log π_ref cho cả tập dữ liệu một lần rồi bỏ mô hình tham chiếu đi.
""")

md("""
## 9. QLoRA: mô hình cơ sở 4-bit + LoRA
QLoRA (Dettmers và cộng sự, 2023) lượng tử hoá mô hình cơ sở đóng băng xuống 4 bit (kiểu NF4) để trọng số chiếm khoảng 1/4 so với bf16, rồi huấn luyện LoRA (bằng bf16) lên trên. Với DPO, tiết kiệm này cộng dồn với việc không cần bản sao tham chiếu. Cần GPU CUDA, thư viện `bitsandbytes` và GPU hỗ trợ bf16 (Ampere trở lên, ví dụ L4 hay A100); trên máy không đủ điều kiện, ô dưới chỉ in một dòng giải thích.

Các bước: `BitsAndBytesConfig(load_in_4bit=True, ...)` khi nạp; `prepare_model_for_kbit_training` (peft) đóng băng trọng số, đưa các lớp chuẩn hoá về fp32 và bật gradient checkpointing; rồi `DPOTrainer(..., peft_config=...)` như trên.
""")
code("""
QLORA_STEPS = 10
qlora_ready = (DEVICE == "cuda" and importlib.util.find_spec("bitsandbytes") is not None
               and torch.cuda.is_bf16_supported())
if qlora_ready:
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    bnb_config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                    bnb_4bit_compute_dtype=torch.bfloat16)
    q_model = AutoModelForCausalLM.from_pretrained(BASE_PATH, quantization_config=bnb_config, device_map={"": 0})
    q_model = prepare_model_for_kbit_training(q_model)       # bật gradient checkpointing
    q_tokenizer = AutoTokenizer.from_pretrained(BASE_PATH)
    q_tokenizer.padding_side = "left"
    q_trainer = DPOTrainer(model=q_model,
                           args=dpo_config("qlora", QLORA_STEPS, bf16=True, fp16=False, activation_checkpointing=True),
                           train_dataset=pref["train"], processing_class=q_tokenizer, peft_config=lora_config())
    q_trainer.remove_callback(PrinterCallback)
    with PeakMemory(DEVICE) as q_mem:
        q_trainer.train()
    q_curves = dpo_log_curves(q_trainer)
    print(f"QLoRA: trọng số mô hình 4-bit {human_size(q_model.get_memory_footprint())}; "
          f"{QLORA_STEPS} bước trong {q_mem.seconds:.0f} s; bộ nhớ đỉnh tăng thêm {human_size(q_mem.peak_bytes)}")
    print(f"Loss {q_curves['loss'][0][1]:.3f} → {q_curves['loss'][-1][1]:.3f}; "
          f"rewards/accuracies (lô cuối) {q_curves['rewards/accuracies'][-1][1]:.0%}")
else:
    print("Bỏ qua QLoRA: cần GPU CUDA hỗ trợ bf16 và thư viện bitsandbytes (máy này: "
          f"thiết bị {DEVICE}, bitsandbytes {'có' if importlib.util.find_spec('bitsandbytes') else 'chưa cài'}).")
""")

md("""
## 10. Khi dữ liệu sai dạng: lỗi dễ hiểu trước khi huấn luyện
Hai lỗi hay gặp: đặt tên cột khác (`question`/`good`/`bad`), và tạo nhầm cặp có câu bị loại trùng câu được chọn (DPO khi đó không học được gì: biên luôn bằng 0). `check_preference_dataset` bắt cả hai và nói cách sửa.
""")
code("""
# NBVAL_CHECK_OUTPUT
from datasets import Dataset

wrong_columns = pref["validation"].rename_columns({"chosen": "good", "rejected": "bad"})
rows = pref["validation"].select(range(3)).to_list()
rows[2]["rejected"] = rows[2]["chosen"]
for name, bad in {"tên cột sai": wrong_columns, "cặp trùng nhau": Dataset.from_list(rows)}.items():
    try:
        check_preference_dataset(bad, name)
        print(f"[{name}] không phát hiện lỗi?!")
    except CourseError as exc:
        print(f"[{name}] {exc}\\n")
""")
code("""
# NBVAL_CHECK_OUTPUT
dpo_fields = DPOConfig.__dataclass_fields__
print("DPOTrainer nhận processing_class:", "processing_class" in inspect.signature(DPOTrainer.__init__).parameters)
print("DPOTrainer nhận tokenizer:", "tokenizer" in inspect.signature(DPOTrainer.__init__).parameters)
print("DPOConfig có max_length:", "max_length" in dpo_fields, "| max_prompt_length:", "max_prompt_length" in dpo_fields)
print("Giá trị mặc định: beta =", dpo_fields["beta"].default, "| loss_type =", dpo_fields["loss_type"].default_factory())
""")

md("""
## Tóm tắt
- Dữ liệu DPO là các cặp (câu hỏi, câu được chọn, câu bị loại) ở dạng hội thoại: `prompt` là danh sách tin nhắn, `chosen`/`rejected` là danh sách một tin nhắn của `assistant`. `make_preference_splits` sinh chúng bằng mã có hạt giống, với tập huấn luyện và tập kiểm định tách rời; `check_preference_dataset` bắt dữ liệu sai dạng.
- DPO tối thiểu hoá −log σ(biên phần thưởng), với biên = β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]; lúc bắt đầu mọi biên bằng 0 và loss = log 2.
- `DPOTrainer(model=mô hình cơ sở, args=DPOConfig(...), train_dataset=..., processing_class=tokenizer, peft_config=LoraConfig(...))` không nạp mô hình tham chiếu (`trainer.ref_model is None`): TRL tính log π_ref bằng chính mô hình với bộ điều hợp bị tắt (`use_adapter(..., None)` → `disable_adapter()`); ta đã kiểm chứng bằng số, và đo được bộ nhớ tiết kiệm so với cách nạp thêm `ref_model`.
- Biên phần thưởng và độ chính xác ưu tiên trên tập kiểm định tăng sau vài bước, khớp với `trainer.evaluate()`; nhưng chúng đo thay đổi so với tham chiếu, không đo chất lượng câu trả lời sinh ra. Muốn mô hình *viết* đúng, hãy SFT trước rồi DPO.
- QLoRA = mô hình cơ sở 4-bit (`BitsAndBytesConfig`) + `prepare_model_for_kbit_training` + LoRA; cần GPU CUDA.

**Luyện tập:** [bài tập](../exercises/05_trl_peft_preference_exercises.ipynb) (🐢 🐕 🦁, có chấm tự động) · [lời giải](../solutions/05_trl_peft_preference_solutions.ipynb)
""")
write_notebook("trl_peft_preference.ipynb")
