"""The course datasets: two small Vietnamese tasks made by seeded code (no download).

* ``don_hang``  – extract an order from a Vietnamese sentence into JSON
  (keys ``ten``, ``mon``, ``so_luong``, ``dia_chi``);
* ``ngay_thang`` – rewrite a Vietnamese date in ISO form ``YYYY-MM-DD``.

Each task returns disjoint train / validation / test splits in the chat
``messages`` format TRL takes. The test split is written with sentence templates
that never occur in train or validation (held-out phrasings), so the metric
measures generalisation, not memorisation.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from .errors import CourseError
from .recipe import RECIPE

# --------------------------------------------------------------------------- order -> JSON
# Two disjoint sets of names, dishes and places: the training/validation/test splits draw from the first,
# `make_unseen_split` from the second, so an adapter can be measured on values it never saw in training.
_TITLES = ["anh", "chị", "cô", "chú", "bạn", "ông", "bà", "em"]
_NAMES = [
    "Lan", "Minh", "Hùng", "Mai", "Tuấn", "Hoa", "Nam", "Linh", "Dũng", "Thảo", "Phương", "Quân",
    "Trang", "Huy", "Ngọc", "Bảo", "Khoa", "Vy", "Sơn", "Hà", "Long", "My", "Đức", "Yến",
    "Thu Hà", "Quốc Anh", "Bích Ngọc", "Hải Đăng", "Kim Chi", "Gia Huy", "Thanh Tâm", "Minh Khang",
    "Tùng", "Hạnh", "Phúc", "Nhung", "Việt", "Oanh", "Tài", "Uyên", "Kiên", "Loan", "Thắng", "Diệp",
]
_ITEMS = [
    "trà sữa", "cà phê sữa đá", "bánh mì", "phở bò", "bún chả", "cơm tấm", "nước cam", "sinh tố bơ",
    "bánh cuốn", "gỏi cuốn", "xôi gà", "chè ba màu", "bún bò Huế", "mì Quảng", "bánh xèo", "trà đào",
    "hủ tiếu Nam Vang", "cơm gà Hội An", "bánh canh cua", "cháo lòng", "bún riêu", "nem rán", "cà phê muối",
    "trà chanh", "bạc xỉu", "bánh bao", "lẩu thái", "cơm rang dưa bò", "bún đậu mắm tôm", "nước mía",
    "sữa chua nếp cẩm", "pizza hải sản",
]
_PLACES = [
    "Quận 1", "Quận 3", "Quận 7", "Cầu Giấy", "Hoàn Kiếm", "Hải Châu", "Ninh Kiều", "Thủ Đức",
    "Ba Đình", "Đống Đa", "Bình Thạnh", "Gò Vấp", "Sơn Trà", "Tây Hồ", "Long Biên", "Phú Nhuận",
    "12 Lê Lợi", "45 Trần Hưng Đạo", "Ký túc xá Bách Khoa", "chung cư Sunrise City", "ngõ 5 Xã Đàn",
    "toà nhà Bitexco", "Hà Đông", "Thanh Xuân", "Tân Bình", "Biên Hoà", "chợ Bến Thành", "Quận 10",
    "78 Nguyễn Huệ", "phường Bến Nghé", "Đại học Cần Thơ", "Liên Chiểu",
]
_UNSEEN_NAMES = ["Xuân", "Hiếu", "Khánh Linh", "Trọng", "Duyên", "Thịnh", "Mỹ Anh", "Lộc", "Như", "Đạt",
                 "Hoàng Nam", "Thuý", "Cường", "Ánh", "Tiến", "Hồng Nhung"]
_UNSEEN_ITEMS = ["bún mắm", "cơm chiên dương châu", "bánh căn", "mì vằn thắn", "trà tắc", "bánh đa cua",
                 "sữa đậu nành", "cao lầu", "bò bía", "chả cá Lã Vọng", "kem dừa", "bánh flan", "miến lươn",
                 "cà phê trứng", "xiên que", "bánh tráng trộn"]
_UNSEEN_PLACES = ["Hai Bà Trưng", "Quận 5", "Thanh Khê", "Cái Răng", "Dĩ An", "Nha Trang", "33 Hai Bà Trưng",
                  "Vincom Đồng Khởi", "Hoàng Mai", "Quận 8", "Bắc Từ Liêm", "ngõ 12 Chùa Bộc",
                  "Ký túc xá Khu B", "Bình Tân", "Vũng Tàu", "Ngũ Hành Sơn"]
_UNITS = ["phần", "ly", "suất", "hộp", "cốc", "tô", "đĩa", "phần"]
# Training shapes vary what surrounds each field: the order of the fields, the words before and after a dish
# (a unit or none, a preposition: đến, tới, về, qua, ra, sang, vào, or punctuation) and after a name. The test
# split's two shapes and make_unseen_split's two shapes (with the preposition "lên") never occur here.
_ORDER_TEMPLATES_TRAIN = [
    "{title} {name} đặt {qty} {unit} {item}, giao đến {place}.",
    "Cho {title} {name} {qty} {unit} {item} nhé, giao về {place}.",
    "Đơn mới: {title} {name} muốn {qty} {unit} {item}, địa chỉ {place}.",
    "{title} {name} ở {place} gọi {qty} {unit} {item}.",
    "Giao {qty} {unit} {item} tới {place} cho {title} {name}.",
    "Khách {title} {name} cần {qty} {unit} {item}, nhận tại {place}.",
    "{item} x{qty}, giao {place}, người đặt: {title} {name}.",
    "Ship {qty} {unit} {item} qua {place} giùm, tên người nhận {name}.",
    "Địa chỉ {place}: {title} {name} lấy {qty} {unit} {item}.",
    "Mình là {name}, cho mình {qty} {unit} {item} về {place} với.",
    "Tên: {name}. Món: {item}. Số lượng: {qty}. Giao tới: {place}.",
    "{qty} {unit} {item} cho {title} {name} ({place}) nha shop.",
    "Làm ơn chuẩn bị {qty} {unit} {item}; {title} {name} sẽ nhận ở {place}.",
    "Ở {place} có {title} {name} muốn mua {qty} {unit} {item}.",
    "Chốt đơn giúp em: {item}, {qty} {unit}, gửi {title} {name} tại {place}.",
    "{title} {name} nhắn: lấy {qty} {unit} {item}, đem tới {place} lúc trưa.",
    "Mang {qty} {unit} {item} ra {place} giúp {title} {name} nhé.",
    "Đưa {qty} {unit} {item} sang {place}, {title} {name} đang chờ.",
    "Gửi {qty} {unit} {item} vào {place} cho {title} {name} với ạ.",
    "{title} {name} ơi, {qty} {unit} {item} đến {place} rồi nhé.",
    "Chuyển {qty} {unit} {item} đến {place}, khách là {title} {name}.",
    "Cần giao {item} về {place}, số lượng {qty}, người nhận {title} {name}.",
    "Món {item}, {qty} {unit}, người đặt {title} {name}, giao qua {place}.",
    "{title} {name} nè, đặt {item} số {qty} giao tới {place}.",
    "Nhận đơn của {title} {name}: {item} ({qty} {unit}), ship ra {place}.",
    "Cho xin {qty} {unit} {item} về {place}, {title} {name} thanh toán khi nhận.",
    "Khách hàng {name} hẹn lấy {qty} {unit} {item} tại {place} chiều nay.",
    "Tại {place}, {title} {name} gọi thêm {qty} {unit} {item} nữa.",
    "Đặt hộ {title} {name} {qty} {unit} {item} giao sang {place} nha.",
    "{title} {name} vẫn ở {place}, lần này lấy {item} với số lượng {qty}.",
]
_ORDER_TEMPLATES_TEST = [
    "Nhờ shop gửi {qty} phần {item} đến {place}, người nhận là {title} {name}.",
    "{title} {name} vừa chốt đơn {qty} phần {item}, ship về {place} giúp mình.",
]
# Sentence shapes seen neither in training nor in the test split (for make_unseen_split).
_ORDER_TEMPLATES_UNSEEN = [
    "Alo quán ơi, {title} {name} đây, mang {qty} {unit} {item} lên {place} nhé.",
    "Người nhận {title} {name}, nơi nhận {place}, đặt {item} số lượng {qty}.",
]
_ORDER_INSTRUCTION = "Trích đơn hàng thành JSON (ten, mon, so_luong, dia_chi): {sentence}"
_ORDER_POOLS = {"seen": (_NAMES, _ITEMS, _PLACES), "unseen": (_UNSEEN_NAMES, _UNSEEN_ITEMS, _UNSEEN_PLACES)}


def _order_example(rng: random.Random, template: str, pool: str = "seen"):
    names, items, places = _ORDER_POOLS[pool]
    fields = {
        "title": rng.choice(_TITLES),
        "name": rng.choice(names),
        "qty": rng.randint(1, 12),
        "unit": rng.choice(_UNITS),
        "item": rng.choice(items),
        "place": rng.choice(places),
    }
    sentence = template.format(**fields)
    sentence = sentence[0].upper() + sentence[1:]
    answer = json.dumps(
        {"ten": fields["name"], "mon": fields["item"], "so_luong": fields["qty"], "dia_chi": fields["place"]},
        ensure_ascii=False,
    )
    return _ORDER_INSTRUCTION.format(sentence=sentence), answer


# --------------------------------------------------------------------------- date -> ISO
_EVENTS = [
    "Cuộc họp", "Buổi phỏng vấn", "Lễ khai giảng", "Chuyến bay", "Buổi hoà nhạc", "Hạn nộp hồ sơ",
    "Đám cưới", "Kỳ thi", "Buổi khám bệnh", "Hội thảo", "Trận chung kết", "Ngày giao hàng",
]
_DATE_TEMPLATES_TRAIN = [
    "{event} diễn ra vào ngày {d} tháng {m} năm {y}.",
    "{event}: {d}/{m}/{y}.",
    "{event} được dời sang ngày {dd}-{mm}-{y}.",
    "{event} bắt đầu từ ngày {dd}/{mm}/{y}.",
    "Ngày {d} tháng {m} năm {y} là ngày của {event_l}.",
    "{event} sẽ tổ chức vào {d}.{m}.{y}.",
]
_DATE_TEMPLATES_TEST = [
    "Lịch {event_l} chốt là hôm {d} tháng {m}, năm {y}.",
    "Ghi chú: {event_l} rơi vào {dd}/{mm}/{y}, nhớ đến sớm.",
]
# Sentence shapes and events seen neither in training nor in the test split (for make_unseen_split).
_DATE_TEMPLATES_UNSEEN = [
    "Hôm {d}/{m} năm {y} có {event_l}, bạn ghi lại giúp.",
    "Theo thông báo, {event_l} dự kiến ngày {dd}.{mm}.{y}.",
]
_UNSEEN_EVENTS = ["Buổi bảo vệ luận văn", "Chuyến dã ngoại", "Lễ tốt nghiệp", "Buổi ra mắt sách", "Giải chạy",
                  "Đợt tiêm chủng", "Buổi họp phụ huynh", "Ngày hội việc làm"]
_DATE_INSTRUCTION = "Viết ngày theo dạng YYYY-MM-DD: {sentence}"
_DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def _date_example(rng: random.Random, template: str, pool: str = "seen"):
    y = rng.randint(1990, 2035)
    m = rng.randint(1, 12)
    d = rng.randint(1, _DAYS_IN_MONTH[m - 1])
    event = rng.choice(_EVENTS if pool == "seen" else _UNSEEN_EVENTS)
    sentence = template.format(
        event=event, event_l=event[0].lower() + event[1:], d=d, m=m, y=y, dd=f"{d:02d}", mm=f"{m:02d}"
    )
    answer = f"{y:04d}-{m:02d}-{d:02d}"
    return _DATE_INSTRUCTION.format(sentence=sentence), answer


# --------------------------------------------------------------------------- scoring
def parse_json_object(text: str):
    """``text`` parsed as a JSON object (a dict), else None (invalid JSON, or JSON that is not an object)."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def _same_json(prediction: str, reference: str) -> bool:
    """Orders: right when the prediction is a JSON object equal to the reference (key order ignored)."""
    parsed = parse_json_object(prediction)
    return parsed is not None and parsed == json.loads(reference)


def _same_text(prediction: str, reference: str) -> bool:
    """Dates: right when the strings are equal, surrounding whitespace ignored."""
    return prediction.strip() == reference.strip()


def _valid_json_rate(predictions) -> dict:
    n = len(predictions)
    return {"valid_json": sum(parse_json_object(p) is not None for p in predictions) / n if n else 0.0}


def _no_extra_metrics(predictions) -> dict:
    return {}


@dataclass(frozen=True)
class Task:
    """A course task: how to make an example, how to score an answer, how long an answer may be.

    * ``make(rng, template, pool="seen")`` -> ``(prompt, answer)``; the answer holds the underlying facts, so no
      two rows of different splits share one (:func:`split_of`); ``pool="unseen"`` draws names, dishes, places
      or events that no split of ``make_task_splits`` uses;
    * ``score(prediction, reference)`` -> True when the prediction is right;
    * ``extra_metrics(predictions)`` -> metrics beside the accuracy (orders: the valid-JSON rate);
    * ``max_new_tokens``: generation length with room for the longest right answer, plus some;
    * ``metric``: the scoring rule in words (Vietnamese, shown to learners);
    * ``unseen_templates``: sentence shapes used only by :func:`make_unseen_split`;
    * ``unseen_words``: what the held-out words are, in Vietnamese and English (adapter cards);
    * ``demo_adapter``: a trained adapter of this task ships in ``adapters/<name>``;
    * ``preference``: :func:`lora_helpers.preferences.make_preference_splits` can build chosen/rejected pairs;
    * ``colors``: (face, edge) of this task's adapter in the figures.
    """

    name: str
    title: str
    make: Callable
    train_templates: tuple
    test_templates: tuple
    metric: str
    score: Callable[[str, str], bool] = _same_text
    max_new_tokens: int = 48
    extra_metrics: Callable[[list], dict] = _no_extra_metrics
    unseen_templates: tuple = ()
    unseen_words: tuple[str, str] = ("", "")
    demo_adapter: bool = False
    preference: bool = False
    colors: tuple[str, str] = ("#cccccc", "#888888")


TASKS = {
    "don_hang": Task(
        name="don_hang", title="Trích xuất đơn hàng thành JSON", make=_order_example,
        train_templates=tuple(_ORDER_TEMPLATES_TRAIN), test_templates=tuple(_ORDER_TEMPLATES_TEST),
        metric="khớp JSON tuyệt đối", score=_same_json, max_new_tokens=80, extra_metrics=_valid_json_rate,
        unseen_templates=tuple(_ORDER_TEMPLATES_UNSEEN),
        unseen_words=("tên người, món và nơi giao", "names, dishes and places"), demo_adapter=True,
        colors=("#f9c784", "#d9822b"),
    ),
    "ngay_thang": Task(
        name="ngay_thang", title="Chuẩn hoá ngày về YYYY-MM-DD", make=_date_example,
        train_templates=tuple(_DATE_TEMPLATES_TRAIN), test_templates=tuple(_DATE_TEMPLATES_TEST),
        metric="khớp chuỗi tuyệt đối", score=_same_text, max_new_tokens=16,
        unseen_templates=tuple(_DATE_TEMPLATES_UNSEEN),
        unseen_words=("tên sự kiện", "event names"), demo_adapter=True, preference=True,
        colors=("#9cc9e8", "#2f7fb5"),
    ),
}


def get_task(task: str) -> Task:
    """Look a task up by name, with a Vietnamese error listing the valid names."""
    if task not in TASKS:
        raise CourseError(
            f"Không có tác vụ `{task}`.",
            f"Dùng một trong các tên: {', '.join(sorted(TASKS))}.",
        )
    return TASKS[task]


def _example_row(task: Task, prompt: str, answer: str) -> dict:
    return {
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        "answer": answer,
        "task": task.name,
    }


# Which split may hold a row is decided by its answer alone (a stable hash, :func:`split_of`): one answer in ten
# belongs to the test split, one in ten to the validation split, the rest to training. Each split is then drawn
# from its own random stream, so the splits are disjoint whatever their sizes, and a size is only a size: asking
# for more or fewer test rows changes no training row, and ``n_test=20`` gives the first 20 rows of ``n_test=50``.
SPLITS_VERSION = 2  # bump when the rows of a split change (records.py hashes it into every recorded run)
_SPLIT_BUCKETS = {"test": range(0, 1), "validation": range(1, 2), "train": range(2, 10)}


def split_of(answer: str) -> str:
    """The split an answer belongs to: ``"test"``, ``"validation"`` or ``"train"`` (sha256 of the answer)."""
    bucket = int.from_bytes(hashlib.sha256(answer.encode("utf-8")).digest()[:4], "big") % 10
    return next(name for name, buckets in _SPLIT_BUCKETS.items() if bucket in buckets)


def _draw_rows(spec: Task, rng: random.Random, n: int, templates, seen: set, *, pool: str = "seen",
               split: str | None = None, hint: str) -> list[dict]:
    """``n`` rows made with ``templates``, none repeating an answer in ``seen`` (updated); with ``split``, only
    rows whose answer belongs to that split."""
    rows, attempts = [], 0
    while len(rows) < n:
        attempts += 1
        if attempts > 200 * n:
            raise CourseError(f"Không sinh đủ {n} ví dụ khác nhau cho `{spec.name}`.", hint)
        prompt, answer = spec.make(rng, rng.choice(templates), pool=pool)
        if answer in seen or (split is not None and split_of(answer) != split):
            continue
        seen.add(answer)
        rows.append(_example_row(spec, prompt, answer))
    return rows


def make_task_splits(task: str, n_train: int = RECIPE.n_train, n_val: int = RECIPE.n_val, n_test: int = RECIPE.n_test,
                     seed: int = RECIPE.seed):
    """Seeded, disjoint train / validation / test splits of a course task as a ``DatasetDict``.

    The default sizes and seed are the course recipe's (``lora_helpers.recipe.RECIPE``). Each split comes
    from its own random stream and holds only answers that belong to it (:func:`split_of`), so the sizes are
    independent: ``n_test=20`` gives the first 20 rows of ``n_test=50`` and the same training rows.

    Each row has ``messages`` (user prompt + assistant answer), ``answer`` and ``task``.
    No two rows of different splits share an answer (the answer holds the underlying facts: name/item/qty/place,
    or the date), and the test split uses sentence templates unseen in training.
    """
    from datasets import Dataset, DatasetDict

    spec = get_task(task)
    for label, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise CourseError(f"{label} phải là số nguyên dương, bạn đưa {n!r}.", "Ví dụ: n_train=400.")
    splits = {}
    for name, n, templates in (("train", n_train, spec.train_templates), ("validation", n_val, spec.train_templates),
                               ("test", n_test, spec.test_templates)):
        rng = random.Random(f"{task}-{seed}-{name}")
        rows = _draw_rows(spec, rng, n, templates, set(), split=name, hint="Giảm kích thước tập.")
        splits[name] = Dataset.from_list(rows)
    return DatasetDict(splits)


HOLD_OUT = ("both", "words", "shapes")
N_UNSEEN = 50  # rows in each held-out set of make_unseen_split (its own size, not the test split's)


def make_unseen_split(task: str, n: int = N_UNSEEN, seed: int = RECIPE.seed, hold_out: str = "both"):
    """A harder held-out set than the test split, with no answer that occurs in any split of
    :func:`make_task_splits`. Same row format as the splits. ``hold_out`` says what is new in it:

    - ``"both"`` (default): sentence shapes *and* values (names, dishes, places; events) that no split uses;
    - ``"words"``: the test split's sentence shapes with those unseen values, so only the words are new;
    - ``"shapes"``: the unseen sentence shapes with the values the training split draws from, so only the
      phrasing is new.

    The test split already holds out sentence shapes (close ones); ``"words"`` and ``"shapes"`` tell apart the
    two ways an adapter can fail on new input: it memorised the vocabulary of its training data, or the ways
    its training sentences were phrased.
    """
    from datasets import Dataset

    spec = get_task(task)
    if not isinstance(n, int) or n < 1:
        raise CourseError(f"n phải là số nguyên dương, bạn đưa {n!r}.", "Ví dụ: n=50.")
    if hold_out not in HOLD_OUT:
        raise CourseError(f"hold_out phải là một trong {HOLD_OUT}, bạn đưa {hold_out!r}.",
                          '"words": chỉ từ ngữ mới; "shapes": chỉ mẫu câu mới; "both": cả hai.')
    splits = make_task_splits(task, seed=seed)
    taken = {row["answer"] for split in splits.values() for row in split}
    # "both" keeps the seed it always had, so its rows stay the ones every earlier measurement used.
    rng = random.Random(f"{task}-{seed}-unseen" + ("" if hold_out == "both" else f"-{hold_out}"))
    templates = spec.test_templates if hold_out == "words" else spec.unseen_templates
    pool = "seen" if hold_out == "shapes" else "unseen"
    rows = _draw_rows(spec, rng, n, templates, taken, pool=pool, hint="Giảm n.")
    return Dataset.from_list(rows)


def check_messages_dataset(dataset, name: str = "dataset") -> None:
    """Raise a Vietnamese :class:`CourseError` unless ``dataset`` has a usable ``messages`` column."""
    columns = getattr(dataset, "column_names", None)
    if isinstance(columns, dict):  # a DatasetDict
        for split, split_ds in dataset.items():
            check_messages_dataset(split_ds, f"{name}['{split}']")
        return
    if columns is None or "messages" not in columns:
        raise CourseError(
            f"{name} không có cột `messages` (các cột hiện có: {columns}).",
            "Mỗi dòng cần `messages`: danh sách {'role': 'user'|'assistant', 'content': ...}. "
            "Nếu dữ liệu của bạn có cột prompt/answer, hãy đổi bằng `dataset.map(...)`.",
        )
    if len(dataset) == 0:
        raise CourseError(f"{name} rỗng.", "Kiểm tra lại bước tạo hoặc lọc dữ liệu.")
    first = dataset[0]["messages"]
    if not first or not all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in first):
        raise CourseError(
            f"{name}: `messages` phải là danh sách các dict có khoá `role` và `content`.",
            "Ví dụ: [{'role': 'user', 'content': 'Xin chào'}, {'role': 'assistant', 'content': 'Chào bạn'}].",
        )
    if first[-1]["role"] != "assistant":
        raise CourseError(
            f"{name}: lượt cuối của `messages` phải là của `assistant` (câu trả lời cần học).",
            "Thêm câu trả lời mẫu vào cuối mỗi hội thoại.",
        )


def to_prompt_completion(dataset):
    """Split chat ``messages`` into TRL's conversational prompt/completion format.

    With this format ``SFTTrainer`` computes the loss on the completion (the assistant
    turn) only: the prompt tokens are masked out (``completion_only_loss``, on by default).
    """
    check_messages_dataset(dataset)

    def split(row):
        return {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]}

    keep = [c for c in dataset.column_names if c not in {"answer", "task"}]
    return dataset.map(split, remove_columns=keep)


def prompts_of(dataset) -> list[list[dict]]:
    """The chat prompts (every turn but the assistant's answer) of each row."""
    return [row[:-1] for row in dataset["messages"]]
