"""Draw every figure of the course into images/, deterministically (same inputs -> same bytes).

    python scripts/make_figures.py                 # all figures into images/ (make images)
    python scripts/make_figures.py --out /tmp/fig  # somewhere else (tests/test_figures.py does this)

Every number on a figure is computed here from the real artefacts: the base model's
config.json and safetensors header (found with ``lora_helpers.models.find_base_model``),
the demo adapters in adapters/, peft's own OLoRA initialisation on a small matrix, and
the measurements notebooks/lora_finetuning.ipynb writes to outputs/lora_finetuning/measurements.json
(ignored by git): ``make images`` copies them to images/data/lora_vs_full.json (committed, so the
figure can be redrawn and tested without re-running the lesson). The lesson itself never writes
into images/. The LoRA-vs-full figure is skipped, with a message, while no data file exists.

Determinism: PNG through Agg, matplotlib's default style, only the fonts bundled with
matplotlib, and no timestamp or software version in the PNG metadata. The matplotlib
version is recorded in the PNG's ``Comment`` chunk so the staleness test can tell a
stale figure from one drawn by another matplotlib release.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # figures always describe the same local model copy

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import font_manager
from matplotlib.patches import FancyBboxPatch, Rectangle

from lora_helpers.adapters import DEMO_ADAPTERS, human_size
from lora_helpers.data import TASKS
from lora_helpers.errors import CourseError
from lora_helpers.numbers import MB, count, number
from lora_helpers.params import lora_layer_params

ROOT = Path(__file__).resolve().parents[1]

IMAGES = ROOT / "images"
DATA_FILE = IMAGES / "data" / "lora_vs_full.json"
LESSON_MEASUREMENTS = ROOT / "outputs" / "lora_finetuning" / "measurements.json"  # written by the lesson's run
RERUN_HINT = "Chạy lại notebooks/lora_finetuning.ipynb (make notebooks), rồi make images."
DPI = 110
FONT_SIZE = 11

# Colours: grey = frozen base weights, warm = trainable LoRA factors, per-adapter colours.
FROZEN, FROZEN_EDGE = "#dfe3e8", "#6b7785"
TRAINABLE, TRAINABLE_EDGE = "#f9c784", "#d9822b"
MERGED, MERGED_EDGE = "#d7c4ec", "#7b52ab"
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RUN_COLORS = ("#d9822b", "#6b7785", "#2f7fb5", "#59a14f")
DATA_KEYS = ("trainable_params", "peak_memory_bytes", "seconds_per_step", "checkpoint_bytes", "test_accuracy")


# --------------------------------------------------------------------------- style and saving
def setup_style() -> None:
    """Matplotlib defaults plus our few settings, and only the fonts shipped inside matplotlib.

    A system copy of DejaVu Sans (another version) would render slightly different pixels,
    so the font list is restricted to matplotlib's own data directory.
    """
    matplotlib.rcdefaults()
    bundled = str(Path(matplotlib.get_data_path()) / "fonts")
    manager = font_manager.fontManager
    manager.ttflist = [f for f in manager.ttflist if f.fname.startswith(bundled)]
    if hasattr(manager, "_findfont_cached"):  # matplotlib caches font look-ups
        manager._findfont_cached.cache_clear()
    plt.rcParams.update({
        "font.family": "DejaVu Sans",
        "font.size": FONT_SIZE,
        "axes.titlesize": 12,
        "axes.labelsize": FONT_SIZE,
        "xtick.labelsize": 10,
        "ytick.labelsize": 10,
        "legend.fontsize": 10,
        "figure.dpi": DPI,
        "savefig.dpi": DPI,
        "mathtext.fontset": "dejavusans",
        "svg.hashsalt": "lora-course",
        "path.simplify": True,
    })


def save(fig, out_dir: Path, name: str) -> Path:
    path = out_dir / name
    fig.savefig(path, format="png", bbox_inches="tight", pad_inches=0.15, facecolor="white",
                metadata={"Software": None, "Comment": f"scripts/make_figures.py, matplotlib {matplotlib.__version__}"})
    plt.close(fig)
    print(f"  đã vẽ {path.name} ({path.stat().st_size / 1024:.0f} KB)")
    return path


def shown(path: Path) -> str:
    """A path as printed for the learner: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def fmt(n: int) -> str:
    return count(n)


def box(ax, x, y, w, h, face, edge, text="", size=FONT_SIZE, rounded=True, weight="normal", **text_kw):
    """A filled box with centred text, in data coordinates (x, y = lower-left corner)."""
    style = "round,pad=0.02,rounding_size=0.12" if rounded else "square,pad=0"
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle=style, facecolor=face, edgecolor=edge, linewidth=1.5))
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, weight=weight,
                linespacing=1.35, **text_kw)


def arrow(ax, start, end, color="#444444", style="-|>", lw=1.6, **kw):
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle=style, color=color, lw=lw, shrinkA=0, shrinkB=0, **kw))


def canvas(ax, width, height):
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")


# --------------------------------------------------------------------------- facts read from disk
def base_model_dir() -> Path:
    from lora_helpers.models import find_base_model

    path = Path(find_base_model(verbose=False))
    if not (path / "config.json").is_file():
        raise CourseError(
            f"`{path}` không phải thư mục mô hình cục bộ, không đọc được config.json.",
            "Chạy với HF_HUB_OFFLINE=1 để dùng bản mô hình cơ sở đi kèm khoá học.",
        )
    return path


def linear_shapes(cfg: dict) -> dict[str, tuple[int, int]]:
    """(d_out, d_in) of each linear layer in one decoder block, from a Llama-style config.json.

    Grouped-query attention: k_proj and v_proj map hidden_size to num_key_value_heads * head_dim.
    """
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    head_dim = cfg.get("head_dim") or hidden // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * head_dim
    return {"q_proj": (hidden, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden), "o_proj": (hidden, hidden),
            "gate_proj": (inter, hidden), "up_proj": (inter, hidden), "down_proj": (hidden, inter)}


def lora_counts(cfg: dict, r: int) -> dict:
    """Full and LoRA parameter counts per layer type, per block, and for all blocks (all-linear)."""
    shapes = linear_shapes(cfg)
    full = {n: d_out * d_in for n, (d_out, d_in) in shapes.items()}
    lora = {n: lora_layer_params(r, d_in, d_out) for n, (d_out, d_in) in shapes.items()}
    per_block = sum(lora.values())
    return {"shapes": shapes, "full": full, "lora": lora, "per_block": per_block,
            "layers": cfg["num_hidden_layers"], "total": per_block * cfg["num_hidden_layers"]}


def _stored_values(file: Path) -> int:
    """Number of values stored in one safetensors file (read from its header only)."""
    from safetensors import safe_open

    with safe_open(str(file), framework="np") as f:
        names = f.keys()
        return sum(math.prod(f.get_slice(k).get_shape()) for k in names)


def safetensors_param_count(model_dir: Path) -> int:
    """Number of parameters stored in the model's safetensors files (read from the headers only)."""
    return sum(_stored_values(file) for file in sorted(model_dir.glob("*.safetensors")))


def adapter_facts(name: str) -> dict:
    from lora_helpers.adapters import demo_adapter_path
    from lora_helpers.training import metrics_path, read_metrics

    path = demo_adapter_path(name)
    config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    metrics = read_metrics(path) if metrics_path(path) else {}
    return {"path": path, "r": config["r"], "alpha": config["lora_alpha"],
            "n_params": _stored_values(path / "adapter_model.safetensors"),
            "file_bytes": (path / "adapter_model.safetensors").stat().st_size, "metrics": metrics}


# --------------------------------------------------------------------------- figure 1: LoRA at a glance
def figure_lora_at_a_glance(out_dir: Path, cfg: dict, n_base: int, r: int) -> Path:
    c = lora_counts(cfg, r)
    d, k = c["shapes"]["q_proj"]
    fig = plt.figure(figsize=(10, 9.6))
    top = fig.add_axes([0.0, 0.555, 1.0, 0.42])
    bottom = fig.add_axes([0.2, 0.12, 0.74, 0.34])

    # Top: h = W x + (alpha/r) B A x for q_proj, boxes roughly to scale except r (enlarged).
    canvas(top, 100, 44)
    side, thin = 26.0, 3.2  # W is side x side; r is drawn `thin` wide so it stays visible
    y0 = 9.0
    top.text(3, y0 + side / 2, "h  =", fontsize=16, va="center")
    box(top, 12, y0, side, side, FROZEN, FROZEN_EDGE, rounded=False)
    top.text(12 + side / 2, y0 + side / 2 + 4, "W", fontsize=20, ha="center", va="center", weight="bold")
    top.text(12 + side / 2, y0 + side / 2 - 4, "trọng số mô hình cơ sở\nđóng băng (frozen)",
             fontsize=11, ha="center", va="center", linespacing=1.3)
    top.text(12 + side / 2, y0 - 2.2, f"d×k = {d}×{k}\n= {fmt(c['full']['q_proj'])} tham số",
             ha="center", va="top", fontsize=11)
    top.text(40.5, y0 + side / 2, "x   +", fontsize=16, va="center")
    top.text(50.5, y0 + side / 2, "α/r ·", fontsize=14, va="center")
    bx = 61
    box(top, bx, y0, thin, side, TRAINABLE, TRAINABLE_EDGE, rounded=False)
    top.text(bx + thin / 2, y0 + side + 1.2, "B", fontsize=18, ha="center", va="bottom", weight="bold")
    top.text(bx + thin / 2, y0 - 2.2, f"d×r = {d}×{r}\n= {fmt(d * r)}", ha="center", va="top", fontsize=11)
    ax_ = bx + thin + 2.5
    box(top, ax_, y0 + side - thin, side, thin, TRAINABLE, TRAINABLE_EDGE, rounded=False)
    top.text(ax_ + side / 2, y0 + side + 1.2, "A", fontsize=18, ha="center", va="bottom", weight="bold")
    top.text(ax_ + side / 2, y0 + side - thin - 1.5, f"r×k = {r}×{k}\n= {fmt(r * k)}",
             ha="center", va="top", fontsize=11)
    top.text(ax_ + side + 1.5, y0 + side / 2, "x", fontsize=16, va="center")
    top.text(ax_ + side / 2, y0 + 8.5,
             f"huấn luyện được:\nr·(d+k) = {r}·({d}+{k})\n= {fmt(c['lora']['q_proj'])} tham số\n"
             f"({c['lora']['q_proj'] / c['full']['q_proj']:.2%} của W)",
             ha="center", va="center", fontsize=11, color="#8a4b0f", linespacing=1.3)
    top.text(50, 43.5, f"LoRA trên q_proj của SmolLM2-135M (hạng r = {r}): W đóng băng, chỉ B và A được huấn luyện",
             ha="center", va="top", fontsize=13, weight="bold")
    top.text(99, 0.8, "(bề rộng r được vẽ phóng to để dễ nhìn)", ha="right", va="bottom", fontsize=10,
             color="#555555", style="italic")

    # Bottom: full W vs LoRA parameters for each linear layer of one decoder block (log scale).
    names = list(LINEAR_NAMES)[::-1]
    ys = range(len(names))
    full = [c["full"][n] for n in names]
    lora = [c["lora"][n] for n in names]
    h = 0.38
    bottom.barh([y + h / 2 for y in ys], full, height=h, color=FROZEN, edgecolor=FROZEN_EDGE,
                label="toàn bộ W: d_out×d_in (tinh chỉnh toàn bộ)")
    bottom.barh([y - h / 2 for y in ys], lora, height=h, color=TRAINABLE, edgecolor=TRAINABLE_EDGE,
                label=f"LoRA: r·(d_in+d_out), r = {r}")
    for y, n, f_, l_ in zip(ys, names, full, lora):
        d_out, d_in = c["shapes"][n]
        bottom.text(f_ * 1.08, y + h / 2, f"{d_out}×{d_in} = {fmt(f_)}", va="center", fontsize=10)
        bottom.text(l_ * 1.08, y - h / 2, f"{r}·({d_in}+{d_out}) = {fmt(l_)}", va="center", fontsize=10)
    bottom.set_yticks(list(ys), [f"{n}\n{c['shapes'][n][1]}→{c['shapes'][n][0]}" for n in names], fontsize=10)
    bottom.set_xscale("log")
    bottom.set_xlim(1e3, 2e7)
    bottom.set_xlabel("số tham số (thang log)")
    bottom.set_title("Số tham số của từng lớp tuyến tính trong một khối decoder\n"
                     "(k_proj, v_proj nhỏ hơn vì grouped-query attention)", fontsize=11.5, pad=30)
    bottom.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    bottom.spines[["top", "right"]].set_visible(False)
    fig.text(0.5, 0.005,
             f"Cả mô hình, all-linear, r = {r}: {c['layers']} khối × {fmt(c['per_block'])} = {fmt(c['total'])} "
             f"tham số huấn luyện được\n= {c['total'] / n_base:.2%} của {fmt(n_base)} tham số mô hình cơ sở",
             ha="center", va="bottom", fontsize=11.5, weight="bold", linespacing=1.4)
    return save(fig, out_dir, "lora_at_a_glance.png")


# --------------------------------------------------------------------------- figure 2: adapter switching
def figure_adapter_switching(out_dir: Path, n_base: int, base_bytes: int, adapters: dict) -> Path:
    import random

    from lora_helpers.data import get_task

    fig, ax = plt.subplots(figsize=(10, 6.2))
    canvas(ax, 100, 62)
    ax.text(50, 61.5, "Một mô hình cơ sở, nhiều bộ điều hợp (adapter):\nset_adapter chọn bộ điều hợp cho từng yêu cầu",
            ha="center", va="top", fontsize=13, weight="bold", linespacing=1.3)
    outputs = {"don_hang": "JSON {ten, mon,\nso_luong, dia_chi}", "ngay_thang": "một ngày dạng\nYYYY-MM-DD"}

    # Columns: requests | frozen base model (one copy) | adapters | results.
    base_x, base_w, ad_x, ad_w, res_x = 24, 29, 56, 19, 79
    box(ax, base_x, 9, base_w, 40, FROZEN, FROZEN_EDGE)
    ax.text(base_x + base_w / 2, 47.5, "mô hình cơ sở\nSmolLM2-135M-Instruct", ha="center", va="top", fontsize=11.5,
            weight="bold", linespacing=1.3)
    ax.text(base_x + base_w / 2, 10.5, f"{fmt(n_base)} tham số\nđóng băng, nạp một lần\n({human_size(base_bytes)})",
            ha="center", va="bottom", fontsize=10.5, linespacing=1.3)
    ax.text(11, 51, "yêu cầu", ha="center", va="center", fontsize=11.5, weight="bold")
    ax.text(ad_x + ad_w / 2, 51, "bộ điều hợp", ha="center", va="center", fontsize=11.5, weight="bold")
    ax.text(res_x + 10, 51, "kết quả", ha="center", va="center", fontsize=11.5, weight="bold")

    rng = random.Random(0)
    lanes = dict(zip(adapters, (35.0, 20.0)))
    for name, facts in adapters.items():
        y = lanes[name]
        face, edge = TASKS[name].colors if name in TASKS else (TRAINABLE, TRAINABLE_EDGE)
        task = get_task(name)
        prompt, _ = task.make(rng, task.train_templates[0])
        sentence = prompt.split(": ", 1)[1]
        box(ax, 0.5, y - 5.5, 21, 11, "white", edge, textwrap.fill(f"“{sentence}”", 24), size=10)
        arrow(ax, (21.5, y), (base_x, y), color=edge)
        ax.text(base_x + base_w / 2, y + 0.9, f'set_adapter("{name}")', ha="center", va="bottom", fontsize=10,
                family="DejaVu Sans Mono", color=edge)
        ax.plot([base_x, ad_x], [y, y], color=edge, lw=2.2, ls=(0, (4, 2)))
        label = f"{name}\nr = {facts['r']}, {fmt(facts['n_params'])}\ntham số, {human_size(facts['file_bytes'])}"
        box(ax, ad_x, y - 6, ad_w, 12, face, edge, label, size=10)
        arrow(ax, (ad_x + ad_w, y), (res_x, y), color=edge)
        ax.text(res_x + 1, y + 0.6, outputs.get(name, task.title), ha="left", va="bottom", fontsize=10,
                linespacing=1.25)
        acc = facts["metrics"].get("test_accuracy")
        if acc is not None:
            ax.text(res_x + 1, y - 0.6, f"tập kiểm tra: {acc:.0%}\nđúng tuyệt đối", ha="left", va="top",
                    fontsize=10, color=edge, linespacing=1.25)
    ax.text(ad_x + ad_w / 2, 11.5, "chỉ một bộ điều hợp\nđược bật mỗi lúc", ha="center", va="center", fontsize=10,
            color="#444444", linespacing=1.25)

    total_adapters = sum(f["file_bytes"] for f in adapters.values())
    n = len(adapters)
    ax.text(50, 3.5,
            f"Trên đĩa: 1 mô hình cơ sở ({human_size(base_bytes)}) + {n} bộ điều hợp ({human_size(total_adapters)}) "
            f"= {human_size(base_bytes + total_adapters)},\nthay vì {n} mô hình tinh chỉnh toàn bộ "
            f"({n} × {human_size(base_bytes)} = {human_size(n * base_bytes)})",
            ha="center", va="center", fontsize=11, linespacing=1.4)
    return save(fig, out_dir, "adapter_switching.png")


# --------------------------------------------------------------------------- figure 3: OLoRA
def olora_example(d_out=8, d_in=6, r=2, alpha=4, seed=0) -> dict:
    """Run peft's own OLoRA initialisation on one small seeded linear layer; return the matrices.

    Returns W (before), W' (the shifted base weight peft leaves in the layer), A and B (peft's
    lora_A / lora_B) and Q, R (torch.linalg.qr of W, as olora_init computes them).
    """
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(d_in, d_out, bias=False))
    W = model[0].weight.detach().clone()
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=["0"],
                                                  init_lora_weights="olora"))
    layer = peft_model.base_model.model[0]
    Q, R = torch.linalg.qr(W)
    return {"W": W.numpy(), "W_shifted": layer.base_layer.weight.detach().numpy().copy(),
            "A": layer.lora_A["default"].weight.detach().numpy().copy(),
            "B": layer.lora_B["default"].weight.detach().numpy().copy(),
            "Q": Q.numpy(), "R": R.numpy(), "r": r, "alpha": alpha, "scale": layer.scaling["default"]}


def figure_olora(out_dir: Path, cfg: dict, r_course: int, alpha_course: int) -> Path:
    from matplotlib.patches import FancyArrowPatch

    ex = olora_example()
    r, scale = ex["r"], ex["scale"]
    vmax = max(abs(ex[k]).max() for k in ("W", "Q", "R", "W_shifted", "A", "B"))
    cmap = "RdBu_r"
    d_out, d_in = ex["W"].shape
    width, height = 10, 8.4
    fig = plt.figure(figsize=(width, height))
    fig.text(0.5, 0.99, "OLoRA: B và A lấy từ phân rã QR của W (như olora_init của peft)", ha="center",
             va="top", fontsize=13, weight="bold")
    cw = 0.034                      # one matrix cell, as a fraction of the figure width
    ch = cw * width / height        # the same cell height in figure fractions (square cells)

    def panel(x, y_top, key, title, highlight=None):
        m = ex[key]
        ax = fig.add_axes([x, y_top - ch * m.shape[0], cw * m.shape[1], ch * m.shape[0]])
        ax.imshow(m, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=11, linespacing=1.3)
        if highlight == "cols":
            ax.add_patch(Rectangle((-0.5, -0.5), r, m.shape[0], fill=False, edgecolor=TRAINABLE_EDGE, lw=3.5))
        elif highlight == "rows":
            ax.add_patch(Rectangle((-0.5, -0.5), m.shape[1], r, fill=False, edgecolor=TRAINABLE_EDGE, lw=3.5))
        return ax

    def fig_arrow(start, end, text):
        fig.add_artist(FancyArrowPatch(start, end, transform=fig.transFigure, arrowstyle="-|>", mutation_scale=16,
                                       color=TRAINABLE_EDGE, lw=2))
        fig.text(start[0] + 0.012, (start[1] + end[1]) / 2, text, ha="left", va="center", fontsize=10.5,
                 color=TRAINABLE_EDGE)

    # Row 1: W = Q x R (phân rã QR).
    top1, mid = 0.88, 0.88 - ch * d_out / 2
    x_w, x_q = 0.03, 0.03 + cw * d_in + 0.07
    x_r = x_q + cw * d_in + 0.07
    panel(x_w, top1, "W", f"W  ({d_out}×{d_in})\ntrọng số gốc")
    fig.text(x_w + cw * d_in + 0.035, mid, "=", fontsize=22, ha="center", va="center")
    panel(x_q, top1, "Q", f"Q  ({d_out}×{d_in})\ncột trực chuẩn", "cols")
    fig.text(x_q + cw * d_in + 0.035, mid, "×", fontsize=22, ha="center", va="center")
    panel(x_r, top1, "R", f"R  ({d_in}×{d_in})\ntam giác trên", "rows")
    fig.text(x_r + cw * d_in + 0.03, top1,
             f"phân rã QR:\nW = Q·R\n\nviền cam: {r} cột đầu\ncủa Q, {r} hàng đầu\ncủa R (ví dụ nhỏ:\n"
             f"W {d_out}×{d_in}, r = {r}, α = {ex['alpha']})",
             fontsize=10.5, va="top", linespacing=1.3)

    # Row 2: B under Q, A under R, the shifted base weight W' under W.
    top2 = 0.38
    panel(x_q, top2, "B", f"B = Q[:, :r]\n({d_out}×{r})")
    panel(x_r, top2, "A", f"A = R[:r, :]\n({r}×{d_in})")
    panel(x_w, top2, "W_shifted", f"W′ = W − (α/r)·B·A\n({d_out}×{d_in}, đóng băng)")
    fig_arrow((x_q + cw * r / 2, top1 - ch * d_out - 0.01), (x_q + cw * r / 2, top2 + 0.065), f"{r} cột đầu")
    fig_arrow((x_r + cw * d_in / 2, top1 - ch * d_in - 0.01), (x_r + cw * d_in / 2, top2 + 0.065), f"{r} hàng đầu")

    gap = abs(ex["W_shifted"] + scale * ex["B"] @ ex["A"] - ex["W"]).max()
    # Rounding noise differs between BLAS builds; print the bound it passed, not the noise itself.
    gap_text = "lệch < 1e-6" if gap < 1e-6 else f"lệch tối đa {gap:.1e}"
    d, k = linear_shapes(cfg)["q_proj"]
    fig.text(x_r - 0.02, top2 - ch * r - 0.04,
             f"peft thay W bằng W′ trong mô hình cơ sở, nên lúc\nbắt đầu: W′ + (α/r)·B·A = W "
             f"({gap_text})\n→ đầu ra của mô hình chưa đổi.\n\n"
             f"Khác LoRA thường (B = 0): B bắt đầu từ các\nhướng trực chuẩn của chính W.\n\n"
             f"q_proj của SmolLM2-135M, r = {r_course},\nlora_alpha = {alpha_course}: W {d}×{k} → "
             f"B {d}×{r_course},\nA {r_course}×{k}, α/r = {alpha_course / r_course:g}.",
             fontsize=10.5, va="top", linespacing=1.3)
    cax = fig.add_axes([x_w, 0.0, cw * d_in, 0.014])
    plt.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(-vmax, vmax), cmap=cmap), cax=cax,
                 orientation="horizontal")
    cax.tick_params(labelsize=9)
    cax.set_xlabel("giá trị phần tử", fontsize=10)
    return save(fig, out_dir, "olora_qr.png")


# --------------------------------------------------------------------------- figure 4: merging
def figure_merging(out_dir: Path, base_dir: Path, adapter: dict) -> Path:
    fig, ax = plt.subplots(figsize=(10, 7.2))
    canvas(ax, 100, 72)
    ax.text(50, 71.5, "Hợp nhất (merge): merge_and_unload() cộng B·A vào W", ha="center", va="top",
            fontsize=13, weight="bold")
    r, alpha = adapter["r"], adapter["alpha"]

    # Before: W plus the separate LoRA factors.
    ax.text(22, 64, "trước: mô hình cơ sở + bộ điều hợp", ha="center", fontsize=11.5, weight="bold")
    box(ax, 4, 40, 16, 16, FROZEN, FROZEN_EDGE, "W\nđóng băng", rounded=False, size=11)
    ax.text(22.5, 48, "+", fontsize=16, ha="center", va="center")
    ax.text(28, 48, "α/r ·", fontsize=12, ha="center", va="center")
    box(ax, 32, 40, 2.2, 16, TRAINABLE, TRAINABLE_EDGE, rounded=False)
    ax.text(33.1, 57, "B", ha="center", va="bottom", fontsize=12, weight="bold")
    box(ax, 35.5, 53.8, 6, 2.2, TRAINABLE, TRAINABLE_EDGE, rounded=False)
    ax.text(38.5, 57, "A", ha="center", va="bottom", fontsize=12, weight="bold")
    ax.text(22, 37.5, "mỗi lần suy luận: W·x + (α/r)·B·(A·x)", ha="center", va="top", fontsize=10.5)

    arrow(ax, (46, 48), (56, 48), lw=2.2)
    ax.text(51, 50, "merge_and_unload()", ha="center", va="bottom", fontsize=10, family="DejaVu Sans Mono")

    ax.text(78, 64, "sau: một ma trận, không còn B và A", ha="center", fontsize=11.5, weight="bold")
    box(ax, 62, 40, 16, 16, MERGED, MERGED_EDGE, "W′", rounded=False, size=14, weight="bold")
    ax.text(80, 48, f"W′ = W + (α/r)·B·A\nα/r = {alpha}/{r} = {alpha / r:g}\n(cùng kích thước với W)",
            ha="left", va="center", fontsize=10.5, linespacing=1.35)
    ax.text(78, 37.5, "mỗi lần suy luận: W′·x", ha="center", va="top", fontsize=10.5)

    # On disk: the adapter directory vs the merged model directory.
    peft_files = ("adapter_config.json", "adapter_model.safetensors", "README.md")
    adapter_files = [(f, (adapter["path"] / f).stat().st_size) for f in peft_files if (adapter["path"] / f).is_file()]
    merged_files = sorted((p.name, p.stat().st_size) for p in base_dir.iterdir()
                          if p.is_file() and p.name != "course_source.json")

    def listing(x, title, files, face, edge, note):
        total = sum(s for _, s in files)
        lines = [f"{name:<27}{human_size(size):>9}" for name, size in files]
        lines.append(f"{'tổng':<27}{human_size(total):>9}")
        h = 4.5 + 2.6 * len(lines)
        box(ax, x, 30 - h, 44, h, face, edge)
        ax.text(x + 1.5, 30 - 1.2, title, ha="left", va="top", fontsize=10.5, weight="bold")
        ax.text(x + 1.5, 30 - 4.6, "\n".join(lines), ha="left", va="top", fontsize=9.5,
                family="DejaVu Sans Mono", linespacing=1.35)
        ax.text(x + 22, 30 - h - 1.2, note, ha="center", va="top", fontsize=10, linespacing=1.3)

    name = adapter["path"].name
    listing(2, f"thư mục bộ điều hợp adapters/{name}/", adapter_files, "#fdf1df", TRAINABLE_EDGE,
            "nhỏ; khi nạp vẫn cần mô hình cơ sở,\nvà đổi được bộ điều hợp bằng set_adapter")
    listing(54, "thư mục mô hình đã hợp nhất", merged_files, "#efe7f7", MERGED_EDGE,
            "model.safetensors ≈ kích thước mô hình cơ sở\n(cùng tệp như thư mục mô hình cơ sở; "
            "nhớ lưu tokenizer)")
    return save(fig, out_dir, "merging.png")


# --------------------------------------------------------------------------- figure 5: LoRA vs full (measured)
def load_measurements(path: Path) -> dict:
    """Read and check the measurements a lesson wrote (schema in the module docstring of the lesson)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CourseError(f"`{path}` không phải JSON hợp lệ: {exc}", "Chạy lại bài học để ghi lại tệp số đo.") from exc
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, dict) or len(runs) < 2:
        raise CourseError(f"`{path}` thiếu mục `runs` (cần ít nhất hai lần chạy để so sánh).",
                          RERUN_HINT)
    for label, run in runs.items():
        missing = [k for k in DATA_KEYS if not isinstance(run.get(k), (int, float)) or isinstance(run.get(k), bool)]
        if missing:
            raise CourseError(f"Lần chạy `{label}` trong `{path}` thiếu số đo: {', '.join(missing)}.",
                              RERUN_HINT)
    return data


def figure_lora_vs_full(out_dir: Path, data_path: Path) -> Path | None:
    if not Path(data_path).is_file():
        print(f"  BỎ QUA lora_vs_full.png: chưa có tệp số đo {shown(data_path)}.\n  {RERUN_HINT}")
        return None
    data = load_measurements(data_path)
    runs = data["runs"]
    labels = list(runs)
    colors = [RUN_COLORS[i % len(RUN_COLORS)] for i in range(len(labels))]
    mb = MB
    panels = [
        ("trainable_params", "tham số huấn luyện được", lambda v: v / 1e6, "triệu", lambda v: fmt(int(v))),
        ("peak_memory_bytes", "bộ nhớ đỉnh tăng thêm", lambda v: v / mb, "MB", lambda v: human_size(v)),
        ("seconds_per_step", "thời gian mỗi bước", lambda v: v, "giây / bước", lambda v: f"{v:.2f} s"),
        ("checkpoint_bytes", "dung lượng khi lưu", lambda v: v / mb, "MB", lambda v: human_size(v)),
        ("test_accuracy", "độ chính xác tập kiểm tra", lambda v: 100 * v, "%", lambda v: f"{v:.0%}"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(10, 6.6))
    for ax, (key, title, scale, unit, text) in zip(axes.flat, panels):
        values = [runs[lab][key] for lab in labels]
        heights = [scale(v) for v in values]
        bars = ax.bar(range(len(labels)), heights, color=colors, width=0.6)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_title(title, fontsize=11.5)
        ax.set_ylabel(unit)
        top = max(heights) if max(heights) > 0 else 1
        ax.set_ylim(0, top * 1.25 if key != "test_accuracy" else 110)
        for bar, v in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + top * 0.02, text(v), ha="center",
                    va="bottom", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    note = axes.flat[5]
    note.axis("off")
    first, second = labels[0], labels[1]
    ratio = runs[second]["trainable_params"] / max(runs[first]["trainable_params"], 1)
    size_ratio = runs[second]["checkpoint_bytes"] / max(runs[first]["checkpoint_bytes"], 1)
    note.text(0.02, 0.95,
              f"Số đo do bài học ghi ra:\n{data.get('source', '?')}\n\n"
              f"mô hình: {data.get('model', '?')}\nthiết bị: {data.get('device', '?')}\n"
              f"số bước huấn luyện: {data.get('max_steps', '?')}\n\n"
              f"{second} so với {first}:\n  gấp {number(ratio)} lần tham số huấn luyện\n"
              f"  gấp {number(size_ratio)} lần dung lượng lưu",
              transform=note.transAxes, ha="left", va="top", fontsize=10.5, linespacing=1.35)
    fig.suptitle("LoRA so với tinh chỉnh toàn bộ (full finetuning), số đo từ bài học", fontsize=13,
                 weight="bold")
    fig.tight_layout()
    return save(fig, out_dir, "lora_vs_full.png")


# --------------------------------------------------------------------------- main
def make_all(out_dir: Path = IMAGES, data_path: Path = DATA_FILE) -> list[Path]:
    """Draw every figure into ``out_dir``; return the paths written."""
    setup_style()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base_dir = base_model_dir()
    cfg = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    n_base = safetensors_param_count(base_dir)
    base_bytes = sum(p.stat().st_size for p in base_dir.glob("*.safetensors"))
    adapters = {name: adapter_facts(name) for name in DEMO_ADAPTERS}
    r, alpha = adapters["don_hang"]["r"], adapters["don_hang"]["alpha"]
    written = [
        figure_lora_at_a_glance(out_dir, cfg, n_base, r),
        figure_adapter_switching(out_dir, n_base, base_bytes, adapters),
        figure_olora(out_dir, cfg, r, alpha),
        figure_merging(out_dir, base_dir, adapters["don_hang"]),
        figure_lora_vs_full(out_dir, data_path),
    ]
    return [p for p in written if p is not None]


def refresh_figure_data(source: Path = LESSON_MEASUREMENTS, target: Path = DATA_FILE) -> bool:
    """Copy the measurements of the lesson's latest run (outputs/, not committed) to images/data/ (committed).

    True when ``target`` changed. Nothing happens when the lesson has not been run on this machine.
    """
    if not source.is_file():
        return False
    text = json.dumps(json.loads(source.read_text(encoding="utf-8")), ensure_ascii=False, indent=2) + "\n"
    if target.is_file() and target.read_text(encoding="utf-8") == text:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Vẽ lại mọi hình của khoá học vào images/.")
    parser.add_argument("--out", type=Path, default=IMAGES, help="thư mục ghi hình (mặc định: images/)")
    parser.add_argument("--data", type=Path, default=DATA_FILE,
                        help="tệp số đo cho hình LoRA so với toàn bộ (mặc định: images/data/lora_vs_full.json)")
    args = parser.parse_args(argv)
    if args.out == IMAGES and args.data == DATA_FILE and refresh_figure_data():  # `make images`, not a test run
        print(f"Cập nhật {shown(DATA_FILE)} từ lần chạy mới nhất của bài: {shown(LESSON_MEASUREMENTS)}")
    print(f"Vẽ hình vào {shown(args.out)}/")
    written = make_all(args.out, args.data)
    print(f"Xong: {len(written)} hình.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
