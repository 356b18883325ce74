"""Source of solutions/05_trl_peft_preference_solutions.ipynb (exercises of notebooks/trl_peft_preference.ipynb).

`python scripts/make_exercises.py --solutions` writes it (and its exercise twin); then execute both."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import NotebookBuilder, write  # noqa: E402

NAME = "05_trl_peft_preference_solutions.ipynb"


def build():
    nb = NotebookBuilder(NAME)
    nb.header(
        title="Bài tập 5: Dữ liệu ưu tiên, DPO với PEFT, và tự tính biên phần thưởng",
        lesson="trl_peft_preference.ipynb",
        lesson_title="Bài 5: Huấn luyện theo sự ưu tiên (DPO) với TRL + PEFT",
        what="Bạn sẽ tự tạo các cặp ưu tiên (preference pairs) đúng định dạng của TRL, dựng một `DPOTrainer` dùng bộ "
             "điều hợp (adapter) LoRA mà không nạp mô hình tham chiếu (reference model) thứ hai, rồi tự tính log-xác "
             "suất của mô hình tham chiếu (chính mô hình đó khi **tắt** bộ điều hợp), biên phần thưởng (reward margin), "
             "độ chính xác ưu tiên và hàm mất mát (loss) DPO, và đối chiếu với số của TRL.",
        runtime="bản có lời giải khoảng một phút trên CPU 2 nhân (8 bước DPO); bản chưa làm khoảng 15 giây "
                "(việc huấn luyện chỉ chạy khi bạn đã làm bài 2).",
    )
    nb.md("## Chuẩn bị: thư viện, cấu hình DPO, dữ liệu")
    nb.code("""
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

import datasets
import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
from trl import DPOConfig, DPOTrainer

from lora_helpers.adapters import course_root
from lora_helpers.checks import (check_dpo_numbers, check_dpo_trainer, check_preference_pairs,
                                 check_reference_logps)
from lora_helpers.data import make_task_splits
from lora_helpers.env import pick_device, pick_dtype, seed_everything
from lora_helpers.models import find_base_model
from lora_helpers.preferences import dataloader_logps, make_preference_splits

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
datasets.disable_progress_bars()
seed_everything(0)
DEVICE = pick_device()
DTYPE = pick_dtype(DEVICE)
START = time.perf_counter()
""")
    nb.code("""
TASK = "ngay_thang"
SEED = 0
BETA = 0.1                  # β của DPO
LORA_R = 4                  # hạng của bộ điều hợp ở bài 2
TARGETS = ["q_proj", "v_proj"]
MAX_STEPS = 8 if DEVICE == "cpu" else 30
BASE_PATH = find_base_model()

def load_base():
    \"\"\"A fresh copy of the base model (DPOTrainer turns it into a PeftModel when given peft_config).\"\"\"
    return AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=DTYPE).to(DEVICE)

tokenizer = AutoTokenizer.from_pretrained(BASE_PATH)
tokenizer.padding_side = "left"            # TRL ghép câu hỏi + câu trả lời, đệm bên trái

# Cấu hình DPO cho máy này (giống bài học): mọi trường đều có trong DPOConfig của TRL 1.16.
CAU_HINH = DPOConfig(
    output_dir=str(course_root() / "outputs" / "bai_tap_05"),
    max_steps=MAX_STEPS, learning_rate=1e-3, beta=BETA, loss_type=["sigmoid"],
    per_device_train_batch_size=2, per_device_eval_batch_size=8, max_length=160,
    precompute_ref_log_probs=False, lr_scheduler_type="constant", logging_steps=1,
    eval_strategy="no", save_strategy="no", report_to="none", seed=SEED, data_seed=SEED,
    bf16=DTYPE == torch.bfloat16, fp16=DTYPE == torch.float16,   # DPOConfig mặc định bf16=True: tắt trên CPU
    activation_checkpointing=False,        # TRL mặc định bật (tên cũ: gradient_checkpointing); không cần ở mô hình 135M
    use_cpu=DEVICE == "cpu", dataloader_num_workers=0, disable_tqdm=True,
)

# Dữ liệu ưu tiên của bài học (cho bài 2 và 3) và bốn dòng của tác vụ gốc (cho bài 1).
pref = make_preference_splits(TASK, n_train=16, n_val=8, seed=SEED)
ROWS = make_task_splits(TASK, seed=SEED)["train"].select(range(4))
print("Một dòng của tác vụ ngay_thang:", ROWS[0])
""")

    # ------------------------------------------------------------------ exercise 1
    nb.md("""
## 🐢 Bài 1: Tự tạo cặp ưu tiên đúng định dạng của TRL

DPO học từ các cặp: cùng một câu hỏi (`prompt`), một câu trả lời được chọn (`chosen`) và một câu trả lời bị loại (`rejected`). Với mỗi dòng `row` của `ROWS`, tạo một cặp theo định dạng *hội thoại* (conversational) của TRL:

- `prompt`: các tin nhắn của câu hỏi, **không** có câu trả lời của `assistant` (lượt cuối của `row["messages"]` chính là đáp án);
- `chosen`: danh sách một tin nhắn `{"role": "assistant", "content": ...}` chứa đáp án đúng `row["answer"]` (dạng YYYY-MM-DD);
- `rejected`: cũng một tin nhắn `assistant`, là **cùng ngày đó viết theo thứ tự DD-MM-YYYY** (ví dụ `2021-04-03` thành `03-04-2021`), một lỗi có vẻ hợp lý.

Lưu danh sách bốn cặp vào `cap_uu_tien`.
""")
    nb.code("""
### BEGIN SOLUTION
def tao_cap(row):
    nam, thang, ngay = row["answer"].split("-")
    return {
        "prompt": row["messages"][:-1],
        "chosen": [{"role": "assistant", "content": row["answer"]}],
        "rejected": [{"role": "assistant", "content": f"{ngay}-{thang}-{nam}"}],
    }

cap_uu_tien = [tao_cap(row) for row in ROWS]
### END SOLUTION
""")
    nb.code("""
check_preference_pairs(cap_uu_tien, ROWS)
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** Để đáp án trong `prompt` là lỗi rò rỉ dữ liệu kinh điển: mô hình chỉ cần chép lại. Chuỗi thường thay cho danh sách tin nhắn thì TRL hiểu là định dạng *chuẩn* (standard) và không áp dụng chat template, nên văn bản mô hình thấy khi huấn luyện khác văn bản lúc dùng. `lora_helpers.preferences.make_preference_splits` tạo dữ liệu của bài học theo đúng cách này, với năm kiểu lỗi khác nhau cho câu bị loại.
<!-- END SOLUTION -->
""")

    # ------------------------------------------------------------------ exercise 2
    nb.md(f"""
## 🐕 Bài 2: `DPOTrainer` với PEFT, không có mô hình tham chiếu thứ hai

Tạo `trainer`: một `DPOTrainer` nhận

- `model=load_base()`: mô hình cơ sở mới, **chưa** bọc bằng `get_peft_model`;
- `args=CAU_HINH`, `train_dataset=pref["train"]`, `eval_dataset=pref["validation"]`, `processing_class=tokenizer`;
- `peft_config`: một `LoraConfig` với `r=LORA_R`, `lora_alpha=2 * LORA_R`, `lora_dropout=0.0`, `target_modules=TARGETS`, `task_type="CAUSAL_LM"`.

**Không** truyền `ref_model`: với PEFT, TRL lấy mô hình tham chiếu bằng cách tắt bộ điều hợp. Ô ngay sau sẽ huấn luyện `MAX_STEPS` bước, rồi ô kiểm tra xem trainer có đúng như vậy không.
""")
    nb.code("""
### BEGIN SOLUTION
trainer = DPOTrainer(
    model=load_base(),
    args=CAU_HINH,
    train_dataset=pref["train"],
    eval_dataset=pref["validation"],
    processing_class=tokenizer,
    peft_config=LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, lora_dropout=0.0, target_modules=TARGETS,
                           task_type="CAUSAL_LM"),
)
### END SOLUTION
""")
    nb.code("""
if trainer is not None:
    trainer.remove_callback(PrinterCallback)      # không in từng dòng log
    start = time.perf_counter()
    ket_qua = trainer.train()
    print(f"{MAX_STEPS} bước DPO trong {time.perf_counter() - start:.0f} s; loss huấn luyện trung bình "
          f"{ket_qua.training_loss:.3f} (lúc bắt đầu: log 2 ≈ 0,693)")
    print("trainer.ref_model is None:", trainer.ref_model is None)
""")
    nb.code("""
check_dpo_trainer(trainer, r=LORA_R, target_modules=TARGETS, steps=MAX_STEPS)
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** Ba cách sai thường gặp, ô kiểm tra nhận ra cả ba:
- quên `peft_config`: huấn luyện toàn bộ mô hình, và TRL tự nạp thêm một bản sao làm tham chiếu (bài học đo: thêm khoảng 0,5 GB ở float32);
- truyền `ref_model=AutoModelForCausalLM.from_pretrained(...)`: chạy được, nhưng tốn thêm đúng một mô hình trong bộ nhớ mà không được gì;
- gọi `get_peft_model` trước rồi đưa `PeftModel` vào (không có `peft_config`): TRL coi đó là bộ điều hợp đã huấn luyện (trường hợp SFT → DPO) và chép nó thành bộ điều hợp thứ hai tên `ref`. Với bộ điều hợp mới (B = 0) thì `ref` chỉ là mô hình cơ sở, tốn thêm bộ nhớ mà không được gì. Cách đó chỉ đúng khi xuất phát từ một bộ điều hợp SFT: khi đó tham chiếu *phải* là mô hình SFT.
<!-- END SOLUTION -->
""")

    # ------------------------------------------------------------------ exercise 3
    nb.md("""
## 🦁 Bài 3: Tự tính mô hình tham chiếu, biên phần thưởng, độ chính xác ưu tiên và loss DPO

Trên tập kiểm định (`loader = trainer.get_eval_dataloader()`), `dataloader_logps(trainer.model, loader)` trả về một cặp tensor `(log π(y_w), log π(y_l))`: tổng log-xác suất của câu được chọn và của câu bị loại, mỗi cặp ưu tiên một giá trị. Hãy tính:

1. `logp_tham_chieu`: log-xác suất của **mô hình tham chiếu** π_ref, tức chính `trainer.model` khi tắt bộ điều hợp (`with trainer.model.disable_adapter():`);
2. `logp_mo_hinh`: log-xác suất của mô hình đã huấn luyện π (bộ điều hợp bật);
3. `bien`: biên phần thưởng của từng cặp, β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))], với β = `BETA` (một tensor, mỗi cặp một giá trị);
4. `do_chinh_xac`: tỉ lệ cặp có biên > 0 (một số từ 0 đến 1);
5. `loss_dpo`: trung bình của −log σ(biên) trên các cặp (gợi ý: `F.logsigmoid`).
""")
    nb.code("""
### BEGIN SOLUTION
loader = trainer.get_eval_dataloader()
with trainer.model.disable_adapter():
    logp_tham_chieu = dataloader_logps(trainer.model, loader)
logp_mo_hinh = dataloader_logps(trainer.model, loader)
bien = BETA * ((logp_mo_hinh[0] - logp_tham_chieu[0]) - (logp_mo_hinh[1] - logp_tham_chieu[1]))
do_chinh_xac = (bien > 0).float().mean().item()
loss_dpo = -F.logsigmoid(bien).mean().item()
### END SOLUTION
""")
    nb.code("""
check_reference_logps(logp_tham_chieu, trainer)
""")
    nb.code("""
check_dpo_numbers(bien, do_chinh_xac, loss_dpo, trainer, BETA)
""")
    nb.md("Đối chiếu với số TRL tự tính trên cùng tập kiểm định (`trainer.evaluate()`; ô này chỉ chạy khi bạn đã làm bài 3):")
    nb.code("""
if bien is not None and trainer is not None:
    trl_eval = trainer.evaluate()
    print(f"{'':<26}{'của bạn':>10}{'TRL':>10}")
    print(f"{'biên phần thưởng TB':<26}{bien.mean().item():>10.4f}{trl_eval['eval_rewards/margins']:>10.4f}")
    print(f"{'độ chính xác ưu tiên':<26}{do_chinh_xac:>10.0%}{trl_eval['eval_rewards/accuracies']:>10.0%}")
    print(f"{'loss DPO':<26}{loss_dpo:>10.4f}{trl_eval['eval_loss']:>10.4f}")
    print(f"Phần thưởng ngầm định TB (TRL): câu được chọn {trl_eval['eval_rewards/chosen']:+.3f}, "
          f"câu bị loại {trl_eval['eval_rewards/rejected']:+.3f}")
""")
    nb.md("""
<!-- BEGIN SOLUTION -->
**Giải thích.** Mô hình tham chiếu không phải một mô hình thứ hai: nó là cùng các trọng số, chạy với bộ điều hợp bị tắt. Vì vậy, trước bước đầu tiên (B = 0) mọi biên bằng 0 và loss bằng log 2; sau vài bước, biên dương nghĩa là mô hình đã nâng câu đúng lên **so với chính nó lúc đầu** nhiều hơn câu sai. Quên `disable_adapter()` thì log π_ref = log π và mọi biên bằng 0; quên β thì biên lớn gấp 1/β lần; quên tham chiếu thì bạn đo mô hình *thích* câu nào, không đo nó đã *thay đổi* bao nhiêu. Hai dòng phần thưởng ngầm định cho thấy phần lớn biên đến từ đâu: câu được chọn được nâng lên hay câu bị loại bị đẩy xuống.
<!-- END SOLUTION -->
""")
    nb.code("""
print(f"Cả notebook chạy trong {time.perf_counter() - START:.1f} s trên {DEVICE}")
""")
    nb.md("""
## Tóm tắt
- Dữ liệu DPO là các cặp (`prompt`, `chosen`, `rejected`); ở định dạng hội thoại của TRL, mỗi phần là một danh sách tin nhắn và `prompt` không được chứa đáp án.
- `DPOTrainer(model=mô_hình_cơ_sở, peft_config=LoraConfig(...))` không cần `ref_model`: chỉ một mô hình trong bộ nhớ, mô hình tham chiếu là chính nó khi tắt bộ điều hợp.
- Biên phần thưởng β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))], độ chính xác ưu tiên và loss −log σ(biên) tính lại được từ log-xác suất, và khớp số TRL ghi lại.

Quay lại bài học: [Bài 5: Huấn luyện theo sự ưu tiên (DPO) với TRL + PEFT](../notebooks/trl_peft_preference.ipynb).
""")
    return nb.notebook()


if __name__ == "__main__":
    write(build(), NAME)
