"""Builder of notebooks/merge_lora_adapters.ipynb (lesson 3: merging, saving, validating).

`python scripts/notebook_sources/merge_lora_adapters.py` writes the unexecuted notebook; execute it
with `make notebooks` (or nbconvert --execute --inplace) and commit the executed notebook."""
from _builder import SETUP_CELL, code, md, write_notebook

md("""
# Bài 3: Hợp nhất bộ điều hợp vào mô hình, lưu, và kiểm chứng trước khi triển khai

<a href="https://colab.research.google.com/github/lora-course-vi/lora-course-vi/blob/main/notebooks/merge_lora_adapters.ipynb" target="_parent"><img src="https://colab.research.google.com/assets/colab-badge.svg" alt="Mở trong Colab"/></a>

**Bạn sẽ học được:**
- hợp nhất (merge) bộ điều hợp (adapter) vào trọng số (weights) của mô hình cơ sở (base model) bằng `merge_and_unload()`, và thấy đúng công thức W' = W + (alpha/r)·B·A trên một lớp;
- ước lượng bộ nhớ cần cho việc hợp nhất **trước khi** làm, và lưu mô hình đã hợp nhất **cùng tokenizer**;
- **chứng minh** mô hình đã hợp nhất (nạp lại từ đĩa) là đúng mô hình bạn đã kiểm tra: logits, câu sinh tham lam (greedy), độ chính xác tác vụ — và thấy phép kiểm tra bắt được một lần hợp nhất sai;
- độ chính xác số (precision, dtype): hợp nhất ở float32, bfloat16, float16 lệch đến đâu;
- độ trễ (latency) suy luận (inference): mô hình cơ sở, bộ điều hợp chưa hợp nhất, mô hình đã hợp nhất;
- trộn hai bộ điều hợp bằng `add_weighted_adapter` và hợp nhất chỉ một trong nhiều bộ điều hợp.

**Thời gian chạy:** khoảng 4 phút trên CPU 2 nhân; khoảng 1 phút trên GPU Colab. Bài này **không huấn luyện**: nó dùng hai bộ điều hợp mẫu trong `adapters/` (bài 1).
""")
code(SETUP_CELL)
md("## 1. Thư viện, hạt giống ngẫu nhiên, thiết bị")
code("""
import shutil
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")
warnings.filterwarnings("ignore", category=FutureWarning)

import torch
import transformers
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from lora_helpers import CourseError
from lora_helpers.adapters import course_root, demo_adapter_path, directory_size, human_size
from lora_helpers.bench import compare_generation_latency
from lora_helpers.data import make_task_splits, prompts_of
from lora_helpers.env import pick_device, print_environment, seed_everything
from lora_helpers.evaluation import evaluate_task
from lora_helpers.figures import show_figure
from lora_helpers.merging import available_memory, lora_layers, merge_checked, merge_memory_breakdown, save_merged
from lora_helpers.models import find_base_model, load_tokenizer
from lora_helpers.parity import check_parity, default_tolerance

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
seed_everything(0)
DEVICE = pick_device()
print_environment()
""")
md("""
## 2. Cấu hình
Ta làm việc ở **float32** (kể cả trên GPU): bộ điều hợp mẫu được huấn luyện ở float32, và mô hình 135M đủ nhỏ. Mô hình tham chiếu của mọi phép so sánh là *mô hình cơ sở + bộ điều hợp chưa hợp nhất* ở float32.
""")
code("""
TASK = "ngay_thang"                 # bộ điều hợp mẫu dùng để hợp nhất (adapters/ngay_thang)
N_PARITY = 16                       # số câu của tập kiểm tra dùng cho phép kiểm tra khớp
N_MIX = 12                          # số câu mỗi tác vụ khi đo các bộ điều hợp trộn
LATENCY_PROMPTS, LATENCY_TOKENS, LATENCY_ROUNDS = 4, 24, 7
REF_DTYPE = torch.float32
OUT = course_root() / "outputs" / "merge_lora_adapters"    # .gitignore bỏ qua thư mục này

BASE_PATH = find_base_model()
tokenizer = load_tokenizer(BASE_PATH)
test = make_task_splits(TASK)["test"].select(range(N_PARITY))
if OUT.exists():
    shutil.rmtree(OUT)              # chạy lại cả bài thì bắt đầu sạch (chỉ thư mục tạm của bài này)

def load_base(dtype=REF_DTYPE):
    \"\"\"A fresh copy of the base model in ``dtype`` on the lesson's device.\"\"\"
    return AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=dtype).to(DEVICE).eval()

adapter_model = PeftModel.from_pretrained(load_base(), demo_adapter_path(TASK)).eval()
print("Bộ điều hợp:", demo_adapter_path(TASK).relative_to(course_root()), "| lớp LoRA:", len(lora_layers(adapter_model)))
""")

md("""
## 3. Hợp nhất là gì: một phép cộng vào W

Khi suy luận với bộ điều hợp *chưa hợp nhất*, mỗi lớp được gắn LoRA tính hai nhánh: `W x + (alpha/r)·B(A x)`. Hợp nhất cộng hẳn số hạng đó vào trọng số:

$$W' = W + \\frac{\\alpha}{r} B A$$

rồi bỏ lớp LoRA đi. Kết quả là một mô hình `transformers` **bình thường**, cùng kiến trúc và cùng kích thước với mô hình cơ sở, không cần `peft` để chạy (hình: [`images/merging.png`](../images/merging.png), vẽ bằng `scripts/make_figures.py` từ các tệp thật).
""")
code("""
show_figure("merging.png", width=720)
""")
md("Ta tự tính W' cho lớp `q_proj` đầu tiên, rồi so với kết quả của peft.")
code("""
layer = adapter_model.base_model.model.model.layers[0].self_attn.q_proj
W = layer.base_layer.weight.detach().clone()
A = layer.lora_A["default"].weight.detach()
B = layer.lora_B["default"].weight.detach()
scale = layer.scaling["default"]
W_manual = W + scale * (B @ A)
print(f"W: {tuple(W.shape)}, B: {tuple(B.shape)}, A: {tuple(A.shape)}")
print(f"alpha/r = {adapter_model.peft_config['default'].lora_alpha}/{adapter_model.peft_config['default'].r} = {scale}")
""")
md("""
`merge_and_unload()` sửa trọng số **tại chỗ** (in place), từng lớp một: mỗi lớp cần thêm bộ nhớ cho ma trận tạm `B·A` cỡ `d_out × d_in`; `safe_merge=True` sao thêm W để kiểm tra NaN trước khi ghi. Ở đây ta muốn giữ lại mô hình có bộ điều hợp để so sánh, nên hợp nhất một **bản sao** (`copy=True`), tốn thêm cả một mô hình. `merge_checked` ước lượng con số đó và so với bộ nhớ còn trống *trước khi* đụng vào mô hình; nếu thiếu, nó dừng với hướng dẫn (giữ bộ điều hợp riêng, hợp nhất trên máy lớn hơn) thay vì để máy treo giữa chừng.
""")
code("""
need = merge_memory_breakdown(adapter_model, safe_merge=True, copy=True)
free = available_memory(DEVICE)
print(f"Ước lượng bộ nhớ cần thêm: {human_size(need['total'])} "
      f"(bản sao mô hình {human_size(need['copy'])} + lớp lớn nhất {need['largest_layer_name']}: {human_size(need['largest_layer'])})")
print(f"Bộ nhớ còn trống trên {DEVICE}: {human_size(free) if free else 'không rõ'}")

start = time.perf_counter()
merged = merge_checked(adapter_model, safe_merge=True, copy=True)
print(f"Hợp nhất xong trong {time.perf_counter() - start:.1f} s")
merged_q = merged.model.layers[0].self_attn.q_proj
""")
code("""
# NBVAL_CHECK_OUTPUT
print("Kiểu mô hình sau khi hợp nhất:", type(merged).__name__)
print("Số lớp LoRA còn lại:", len(lora_layers(merged)))
print("q_proj giờ là:", type(merged_q).__name__)
print("W' của peft khớp công thức W + (alpha/r)·B·A (sai khác < 1e-6):",
      (merged_q.weight - W_manual).abs().max().item() < 1e-6)
print("Mô hình có bộ điều hợp vẫn còn nguyên (vì copy=True):", len(lora_layers(adapter_model)) > 0)
""")

md("""
## 4. Lưu mô hình đã hợp nhất, cùng tokenizer
Mô hình đã hợp nhất là một mô hình đầy đủ: ai dùng nó sẽ nạp bằng `AutoModelForCausalLM.from_pretrained` và `AutoTokenizer.from_pretrained` **từ cùng một thư mục**. Vì vậy phải lưu cả tokenizer. `save_merged` gọi `save_pretrained` cho cả hai, và từ chối ghi vào thư mục đã có mô hình (trừ khi bạn nói `overwrite=True`), để không bao giờ ghi đè mất một mô hình bạn đã làm ra.
""")
code("""
merged_dir = save_merged(merged, tokenizer, OUT / "ngay_thang_merged")
for f in sorted(merged_dir.iterdir()):
    print(f"  {f.name:<28}{human_size(f.stat().st_size):>10}")
print(f"Tổng: {human_size(directory_size(merged_dir))}, so với bộ điều hợp: {human_size(directory_size(demo_adapter_path(TASK)))}")
""")
code("""
# NBVAL_CHECK_OUTPUT
print("Các tệp:", sorted(f.name for f in merged_dir.iterdir()))
try:
    save_merged(merged, tokenizer, merged_dir)           # lần thứ hai, cùng thư mục
except CourseError as exc:
    print(exc)
""")
md("Nếu chỉ gọi `merged.save_pretrained(...)` mà quên tokenizer, thư mục có trọng số nhưng không dùng được:")
code("""
# NBVAL_CHECK_OUTPUT
no_tok_dir = OUT / "quen_tokenizer"
merged.save_pretrained(no_tok_dir)
print("Các tệp:", sorted(f.name for f in no_tok_dir.iterdir()))
try:
    load_tokenizer(no_tok_dir)
except CourseError as exc:
    print(exc)
shutil.rmtree(no_tok_dir)
""")

md("""
## 5. Kiểm chứng: mô hình nạp lại từ đĩa có đúng là mô hình đã kiểm tra?
Đây là bước nhiều người bỏ qua. Ta nạp lại mô hình đã hợp nhất **từ đĩa** (đúng thứ sẽ được triển khai) và so với mô hình có bộ điều hợp bằng `check_parity`:
1. chênh lệch logits lớn nhất trên mọi token của câu hỏi, so với một ngưỡng;
2. câu sinh tham lam (greedy) có giống hệt từng token không (nếu khác: câu nào, từ token thứ mấy);
3. độ chính xác tác vụ của hai mô hình.

**Vì sao không đòi chênh lệch bằng 0?** `W x + s·B(A x)` và `(W + s·B·A) x` bằng nhau trong toán học, nhưng máy tính làm tròn sau mỗi phép cộng, và hai cách tính cộng theo thứ tự khác nhau. Ở float32 (khoảng 7 chữ số có nghĩa), sai khác chỉ cỡ 1e-6 đến 1e-5 trên logits cỡ 10; ngưỡng 1e-4 vẫn nhỏ hơn hàng trăm lần so với sai lệch của một lần hợp nhất sai.
""")
code("""
reloaded = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=REF_DTYPE).to(DEVICE).eval()
reloaded_tok = AutoTokenizer.from_pretrained(merged_dir)
start = time.perf_counter()
parity = check_parity(adapter_model, reloaded, reloaded_tok, dataset=test)
print(parity.details())
print(f"({time.perf_counter() - start:.0f} s)")
""")
code("""
# NBVAL_CHECK_OUTPUT
print(parity.verdict())
""")
md("""
Một phép kiểm tra chỉ đáng tin nếu nó **biết nói không**. Lỗi thật hay gặp: lưu nhầm mô hình cơ sở (quên hợp nhất, hoặc hợp nhất vào một bản sao rồi lưu bản gốc). Ta đưa mô hình cơ sở vào chỗ "mô hình đã hợp nhất":
""")
code("""
wrong = load_base()
bad_parity = check_parity(adapter_model, wrong, tokenizer, dataset=test)
print(bad_parity.details())
""")
code("""
# NBVAL_CHECK_OUTPUT
print(bad_parity.verdict().split(";")[0])
print("Phép kiểm tra đã từ chối mô hình sai:", not bad_parity.passed)
del wrong
""")

md("""
## 6. Độ chính xác số: hợp nhất ở float32, bfloat16, float16
Trên GPU, người ta thường nạp mô hình ở bfloat16 hoặc float16 để tiết kiệm bộ nhớ rồi hợp nhất luôn ở đó. Ta làm đúng như vậy rồi so với mô hình tham chiếu (float32 + bộ điều hợp). bfloat16 chỉ có 8 bit phần định trị (khoảng 2–3 chữ số có nghĩa): khi cộng một số hạng nhỏ `s·B·A` vào W lớn hơn nhiều, phần lớn số hạng đó bị **làm tròn mất**.
""")
code("""
precision = {}
for dtype in (torch.bfloat16, torch.float16):
    model_dt = PeftModel.from_pretrained(load_base(dtype), demo_adapter_path(TASK)).eval()
    merged_dt = merge_checked(model_dt, safe_merge=True, copy=True)      # giữ model_dt để so sánh
    W_dt = model_dt.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    unchanged = (merged_dt.model.layers[0].self_attn.q_proj.weight == W_dt).float().mean().item()
    name = str(dtype).replace("torch.", "")
    precision[name] = {
        # (a) chỉ tính ở dtype thấp, chưa hợp nhất: lệch do độ chính xác số của phép tính
        "unmerged": check_parity(adapter_model, model_dt, tokenizer, dataset=test, tolerance=default_tolerance(dtype)),
        # (b) hợp nhất ở dtype đó: lệch do tính + do làm tròn W + ΔW
        "merged": check_parity(adapter_model, merged_dt, tokenizer, dataset=test, tolerance=default_tolerance(dtype)),
        # (c) hợp nhất so với chính bộ điều hợp cùng dtype: phần lệch do riêng việc hợp nhất
        "merge_only": check_parity(model_dt, merged_dt, tokenizer, prompts=prompts_of(test), tolerance=float("inf"),
                                   max_new_tokens=1, require_identical=False),
        "unchanged": unchanged,
    }
    del model_dt, merged_dt

""")
code("""
print(f"{'dtype':<10}{'(a) chưa hợp nhất':>19}{'(b) đã hợp nhất':>17}{'(c) chỉ do hợp nhất':>21}"
      f"{'câu giống (b)':>15}{'độ chính xác (b)':>18}{'W không đổi':>13}")
fp32_row = {"unmerged": None, "merged": parity, "merge_only": parity, "unchanged": (merged_q.weight == W).float().mean().item()}
for name, row in {"float32": fp32_row, **precision}.items():
    a, b, c = row["unmerged"], row["merged"], row["merge_only"]
    a_text = "0 (chính nó)" if a is None else f"{a.max_abs_logit_diff:.2e}"
    print(f"{name:<10}{a_text:>19}{b.max_abs_logit_diff:>17.2e}{c.max_abs_logit_diff:>21.2e}"
          f"{b.n_identical_generations:>11}/{b.n_prompts:<3}{b.metric_b:>18.0%}{row['unchanged']:>13.1%}")
print(f"Tham chiếu: float32 + bộ điều hợp chưa hợp nhất, độ chính xác {parity.metric_a:.0%} trên {parity.n_prompts} câu.")
print("Các cột (a), (b), (c): chênh lệch logits lớn nhất.")
""")
md("""
**Đọc bảng** (các con số của lần chạy này).
- Cột (a): chỉ cần *tính* ở bfloat16/float16 (chưa hợp nhất gì) là logits đã lệch khỏi tham chiếu float32: đó là giá của độ chính xác số thấp, có trước mọi phép hợp nhất.
- Cột (c): phần lệch do riêng việc hợp nhất ở dtype đó. Ở float32 chỉ là sai số làm tròn (cỡ 1e-4); ở bfloat16 nó cùng cỡ với cả cột (a).
- Cột *W không đổi*: tỉ lệ phần tử của W (lớp `q_proj` đầu tiên) mà phép cộng ΔW không làm thay đổi chút nào. Ở float32 mọi phần tử đều đổi; ở bfloat16 (8 bit phần định trị) một phần đáng kể của ΔW bị làm tròn mất hẳn; float16 (11 bit) mất ít hơn nhiều.
- Trên tác vụ ngắn này, câu sinh và độ chính xác không đổi: các sai lệch chưa đủ để đổi token được chọn. Đừng suy ra là luôn an toàn: với câu trả lời dài hơn, hoặc ΔW nhỏ hơn (ít bước, tốc độ học thấp), phần bị làm tròn mất có thể đổi câu trả lời, và chỉ phép kiểm tra khớp mới cho bạn biết.

Quy tắc rút ra:
- hợp nhất ở **đúng độ chính xác số bạn đã huấn luyện và kiểm tra** (ở đây float32); nếu cần mô hình nhỏ hơn để triển khai, hợp nhất ở float32 rồi mới đổi kiểu;
- **luôn** chạy phép kiểm tra khớp trên mô hình nạp lại từ đĩa trước khi triển khai, với ngưỡng hợp với dtype.
""")

md("""
## 7. Độ trễ: hợp nhất có làm suy luận chậm đi không?
Ta sinh đúng `LATENCY_TOKENS` token mới (không cho dừng sớm ở EOS) cho `LATENCY_PROMPTS` câu. Ba mô hình được đo **xen kẽ** (cơ sở, bộ điều hợp, đã hợp nhất, rồi lặp lại `LATENCY_ROUNDS` vòng), bỏ lần chạy khởi động, lấy trung vị: nếu máy bận lên hay rảnh ra giữa chừng, cả ba cùng chịu, không thiên vị mô hình nào.
""")
code("""
latency_prompts = prompts_of(test)[:LATENCY_PROMPTS]
contenders = {"cơ sở": load_base(), "bộ điều hợp (chưa hợp nhất)": adapter_model, "đã hợp nhất": reloaded}
timings = compare_generation_latency(contenders, tokenizer, latency_prompts, max_new_tokens=LATENCY_TOKENS,
                                     warmup=1, rounds=LATENCY_ROUNDS)
latency = {name: t.median for name, t in timings.items()}
for name, t in timings.items():
    print(f"{name:<30}{t.median * 1000:>8.0f} ms   tỉ lệ so với cơ sở: {t.median / latency['cơ sở']:.3f}   "
          f"(nhanh nhất {t.min * 1000:.0f} ms, {len(t.times)} lần đo)")
ratio_merged = latency["đã hợp nhất"] / latency["cơ sở"]
print(f"Mục tiêu: đã hợp nhất / cơ sở trong khoảng 1 ± 0,05 → {'đạt' if abs(ratio_merged - 1) <= 0.05 else 'KHÔNG đạt'} ({ratio_merged:.3f})")
del contenders
""")
md("""
Mô hình đã hợp nhất **có cùng đồ thị tính toán** với mô hình cơ sở (cùng các lớp, cùng kích thước), nên chạy nhanh như nhau; mọi chênh lệch nhỏ còn lại là nhiễu đo. Bộ điều hợp chưa hợp nhất phải tính thêm hai phép nhân ma trận nhỏ `A x` rồi `B(·)` ở mỗi lớp được gắn LoRA (ở đây: mọi lớp tuyến tính), nên chậm hơn. Đổi lại, chưa hợp nhất thì có thể đổi bộ điều hợp trong vài mili-giây (bài 1). Chọn theo nhu cầu: **một tác vụ → hợp nhất**; **nhiều tác vụ dùng chung một mô hình cơ sở → giữ bộ điều hợp riêng**.
""")

md("""
## 8. Nhiều bộ điều hợp: trộn bằng `add_weighted_adapter`, hay hợp nhất chỉ một
Nạp cả hai bộ điều hợp mẫu lên một mô hình cơ sở rồi tạo bộ điều hợp mới từ chúng:
- `combination_type="cat"`: ghép A và B theo hạng (hạng mới = 8 + 8 = 16), nên ΔW mới **đúng bằng tổng** hai ΔW;
- `combination_type="linear"`: lấy tổng có trọng số của các A và của các B riêng rẽ (hạng giữ 8). Vì (B₁+B₂)(A₁+A₂) ≠ B₁A₁ + B₂A₂, cách này sinh ra các số hạng chéo B₁A₂, B₂A₁: nhanh nhưng chỉ là xấp xỉ thô.

Đo cả hai tác vụ cho từng bộ điều hợp.
""")
code("""
mix_sets = {t: make_task_splits(t)["test"].select(range(N_MIX)) for t in ("don_hang", "ngay_thang")}
multi = PeftModel.from_pretrained(load_base(), demo_adapter_path("don_hang"), adapter_name="don_hang")
multi.load_adapter(demo_adapter_path("ngay_thang"), adapter_name="ngay_thang")
multi.add_weighted_adapter(["don_hang", "ngay_thang"], [1.0, 1.0], "tron_cat", combination_type="cat")
multi.add_weighted_adapter(["don_hang", "ngay_thang"], [1.0, 1.0], "tron_linear", combination_type="linear")
multi.eval()

start = time.perf_counter()
mix_scores = {}
for adapter in ("don_hang", "ngay_thang", "tron_cat", "tron_linear"):
    multi.set_adapter(adapter)
    mix_scores[adapter] = {t: evaluate_task(multi, tokenizer, ds)["accuracy"] for t, ds in mix_sets.items()}
print(f"{'bộ điều hợp':<14}{'don_hang':>10}{'ngay_thang':>12}{'hạng r':>8}")
for adapter, scores in mix_scores.items():
    print(f"{adapter:<14}{scores['don_hang']:>10.0%}{scores['ngay_thang']:>12.0%}{multi.peft_config[adapter].r:>8}")
print(f"({time.perf_counter() - start:.0f} s, {N_MIX} câu mỗi tác vụ)")
""")
code("""
# NBVAL_CHECK_OUTPUT
print("Hạng:", {a: multi.peft_config[a].r for a in ("don_hang", "ngay_thang", "tron_cat", "tron_linear")})
""")
md("""
Trộn không miễn phí: mỗi bộ điều hợp được huấn luyện một mình, nên khi cộng chung, ΔW của tác vụ này là "nhiễu" cho tác vụ kia. So mỗi cột của bảng với dòng của bộ điều hợp riêng: ở lần chạy này, `cat` giữ được tác vụ ngày tháng nhưng làm mất tác vụ đơn hàng (vốn đã yếu hơn), còn `linear`, với các số hạng chéo, làm hỏng cả hai. Nếu cần một mô hình làm tốt nhiều tác vụ, cách đáng tin hơn là huấn luyện một bộ điều hợp trên dữ liệu trộn, hoặc giữ các bộ điều hợp riêng và chuyển bằng `set_adapter`.

Khi một mô hình đang mang nhiều bộ điều hợp, `merge_and_unload(adapter_names=[...])` chỉ hợp nhất những bộ bạn chọn và bỏ các bộ còn lại. Hợp nhất riêng `ngay_thang` phải cho đúng mô hình ta đã lưu ở mục 4:
""")
code("""
only_dates = multi.merge_and_unload(adapter_names=["ngay_thang"])
only_parity = check_parity(reloaded, only_dates, tokenizer, dataset=test)
""")
code("""
# NBVAL_CHECK_OUTPUT
print("Số lớp LoRA còn lại:", len(lora_layers(only_dates)))
print(only_parity.verdict())
""")

md("""
## 9. (Chỉ trên GPU) Mô hình 4-bit: đừng hợp nhất vào trọng số đã lượng tử hoá
Nếu bạn huấn luyện QLoRA (mô hình cơ sở nạp 4-bit bằng `BitsAndBytesConfig`), **đừng** hợp nhất vào chính mô hình 4-bit đó: peft phải giải lượng tử hoá W, cộng ΔW rồi lượng tử hoá lại, và lần làm tròn về 4-bit xoá phần lớn ΔW. Cách đúng: nạp lại mô hình cơ sở ở bf16/fp16 (không lượng tử hoá), gắn bộ điều hợp, hợp nhất, lưu, chạy phép kiểm tra khớp; nếu cần, lượng tử hoá mô hình *đã hợp nhất* sau đó. Ô dưới chỉ chạy khi có GPU CUDA và gói `bitsandbytes`; trên CPU nó bỏ qua và nói vì sao.
""")
code("""
import importlib.util

if torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes"):
    from transformers import BitsAndBytesConfig

    q4 = AutoModelForCausalLM.from_pretrained(
        BASE_PATH, quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                          bnb_4bit_compute_dtype=torch.bfloat16))
    q4_adapter = PeftModel.from_pretrained(q4, demo_adapter_path(TASK)).eval()
    print("4-bit + bộ điều hợp:", check_parity(adapter_model.to("cuda"), q4_adapter, tokenizer, dataset=test,
                                               tolerance=default_tolerance(torch.bfloat16)).details())
    bf16 = PeftModel.from_pretrained(load_base(torch.bfloat16).to("cuda"), demo_adapter_path(TASK))
    good = merge_checked(bf16, safe_merge=True)          # hợp nhất trên bản bf16 không lượng tử hoá
    print("Hợp nhất trên bf16:", check_parity(adapter_model, good, tokenizer, dataset=test,
                                              tolerance=default_tolerance(torch.bfloat16)).verdict())
else:
    print("Bỏ qua: cần GPU CUDA và gói bitsandbytes (ví dụ trên Colab). Trên CPU không nạp được mô hình 4-bit.")
""")

md("""
## Tóm tắt
- Hợp nhất = cộng ΔW = (alpha/r)·B·A vào W rồi bỏ lớp LoRA; ta đã kiểm chứng công thức trên một lớp. Kết quả là một mô hình `transformers` thường, không cần `peft`.
- Ước lượng bộ nhớ trước khi hợp nhất; `merge_and_unload` sửa tại chỗ, hợp nhất bản sao thì tốn thêm cả một mô hình.
- Lưu **cả tokenizer**; không ghi đè thư mục đã có mô hình.
- Trước khi triển khai: nạp lại từ đĩa và chạy phép kiểm tra khớp (logits trong ngưỡng, câu sinh giống hệt, độ chính xác bằng nhau). Phép kiểm tra đã bắt được một mô hình sai.
- Hợp nhất ở độ chính xác số đã huấn luyện; bf16/fp16 làm tròn mất một phần ΔW — bảng ở mục 6 cho thấy mức lệch.
- Mô hình đã hợp nhất chạy nhanh như mô hình cơ sở; bộ điều hợp chưa hợp nhất chậm hơn nhưng đổi được tác vụ tức thì.
- Trộn bộ điều hợp (`add_weighted_adapter`) có giá: đo từng tác vụ trước khi tin.

**Luyện tập:** [bài tập](../exercises/03_merge_lora_adapters_exercises.ipynb) (🐢 🐕 🦁, có chấm tự động) · [lời giải](../solutions/03_merge_lora_adapters_solutions.ipynb)

Bài trước: [tinh chỉnh LoRA với TRL](lora_finetuning.ipynb) · Bài tiếp theo: [OLoRA](olora_finetuning.ipynb).
""")
write_notebook("merge_lora_adapters.ipynb")
