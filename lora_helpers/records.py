"""Recorded runs: training runs made once by ``scripts/record_runs.py`` and committed with their provenance.

A lesson that needs many runs (seeds × ranks × learning rates) cannot train them all live in a classroom's time.
It plots the recorded results instead, and re-runs one configuration live to check that it lands inside the
recorded seed band. Each run is one JSON file, ``records/<sweep>/<key>.json``::

    {"sweep", "key", "config": {"task", "recipe"} or {"task", "variant_run"}, "config_hash", "results": {...},
     "provenance": {...}}

Two kinds of run: an SFT run (``recipe``: ``training.train_lora_adapter`` with that recipe, lora_finetuning) and a
variant run (``variant_run``: the settings of ``variants.train_variant``'s plain AdamW loop, lora_from_scratch_and_variants).

``config`` is what the code says the run is (:data:`SWEEPS`), ``config_hash`` its hash. When the code changes what a
run means (the recipe, the sweep's settings), the hash of the run the code now describes no longer matches the
recorded one: :func:`stale_records` lists those files and ``tests/test_records.py`` fails until they are recorded
again. The provenance says where the numbers come from: commit, device (CPU model or GPU name), precision profile,
torch threads, library versions, date.

A sweep is resumable: ``scripts/record_runs.py`` skips every run whose file is there, so a long sweep can go on in
another session; nothing recorded is overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import CourseError
from .recipe import RECIPE, Recipe

RECORDS_DIRNAME = "records"


@dataclass(frozen=True)
class RunSpec:
    """One recorded run: its sweep, its key (the file name), the task, and what it trains: a ``recipe`` (an SFT
    run) or ``variant_run`` (the settings of a ``variants.train_variant`` run, as sorted ``(name, value)`` pairs)."""

    sweep: str
    key: str
    task: str
    recipe: Recipe | None = None
    variant_run: tuple | None = None

    def __post_init__(self):
        if (self.recipe is None) == (self.variant_run is None):
            raise CourseError("Một lần chạy cần đúng một trong hai: `recipe` hoặc `variant_run`.",
                              "RunSpec(sweep, key, task, recipe=...) hoặc RunSpec(sweep, key, task, variant_run=...).")

    @property
    def settings(self) -> dict:
        """The variant run's settings as a dict (empty for an SFT run)."""
        return dict(self.variant_run or ())

    def config(self) -> dict:
        """What the run is: its task, its recipe or variant settings, and the version of the splits it drew
        (``data.SPLITS_VERSION``), so a change of the data makes every record of it stale."""
        from .data import SPLITS_VERSION

        if self.recipe is not None:
            return {"task": self.task, "recipe": self.recipe.as_dict(), "splits_version": SPLITS_VERSION}
        return {"task": self.task, "variant_run": self.settings, "splits_version": SPLITS_VERSION}


def config_hash(config: dict) -> str:
    """A short, stable hash of a run's configuration (canonical JSON: sorted keys, no spaces)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- the sweeps the course records
def _rank_seeds() -> list[RunSpec]:
    """lora_finetuning's rank experiment in its CPU profile, with three seeds per rank instead of two: ``ngay_thang``,
    LoRA all-linear r ∈ {4, 8, 16} with lora_alpha = 2r, learning rate 1e-3, 10 steps at batch 4, validation on
    16 rows, 20 test rows scored. The recipe's seed draws the splits too (``train_lora_adapter``), so the band
    across seeds covers the data drawn as well as the LoRA initialisation and batch order; ranks are compared
    seed by seed, on the same data."""
    base = RECIPE.replace(max_steps=10, batch_size=4, eval_steps=5, n_val=16, n_test=20)
    return [RunSpec("rank_seeds", f"r{r}_seed{seed}", "ngay_thang", base.replace(r=r, lora_alpha=2 * r, seed=seed))
            for r in (4, 8, 16) for seed in (0, 1, 2)]


# lora_from_scratch_and_variants' runs (notebooks/lora_from_scratch_and_variants.ipynb reads them and re-runs seed 0 of each live):
# one plain AdamW loop per run, LoRA on q_proj and v_proj, r = 8, alpha = 16, lr 1e-3, 6 steps at batch 4, the
# splits drawn with seed 0 for every run (the run's seed sets the LoRA initialisation and the batch order), the
# validation loss on 8 rows, 50 test rows scored by teacher forcing in fp32.
VARIANT_RUN = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "learning_rate": 1e-3, "steps": 6,
               "batch_size": 4, "n_train": 400, "n_val": 8, "n_test": 50, "max_length": 112, "data_seed": 0}
VARIANT_SEEDS = (0, 1, 2)


def _variant_seeds() -> list[RunSpec]:
    """Each LoRA variant (``variants.VARIANTS``) with :data:`VARIANT_SEEDS`: lora_from_scratch_and_variants' comparison, 3 seeds each."""
    from .variants import VARIANTS

    return [RunSpec("variant_seeds", f"{v}_seed{seed}", "ngay_thang",
                    variant_run=tuple(sorted({**VARIANT_RUN, "variant": v, "seed": seed}.items(),
                                             key=lambda kv: kv[0])))
            for v in VARIANTS for seed in VARIANT_SEEDS]


SWEEPS = {"rank_seeds": _rank_seeds, "variant_seeds": _variant_seeds}


def sweep_specs(sweep: str) -> list[RunSpec]:
    """The runs of ``sweep`` as the code defines them now."""
    if sweep not in SWEEPS:
        raise CourseError(f"Không có loạt chạy (sweep) tên `{sweep}`.", f"Chọn một trong: {', '.join(sorted(SWEEPS))}.")
    return SWEEPS[sweep]()


# --------------------------------------------------------------------------- files
def records_root(root=None) -> Path:
    if root is not None:
        return Path(root)
    from .adapters import course_root

    return course_root() / RECORDS_DIRNAME


def record_path(spec: RunSpec, root=None) -> Path:
    return records_root(root) / spec.sweep / f"{spec.key}.json"


def _git(*args) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def provenance(device: str | None = None) -> dict:
    """Where a recorded number comes from: commit (``+changes`` when the work tree differs from it), device,
    precision profile, torch threads, CPU count, library versions, UTC date."""
    import torch

    from .env import device_name, library_versions, pick_device, precision_profile

    device = device or pick_device()
    commit = _git("rev-parse", "--short", "HEAD")
    if commit is not None and _git("status", "--porcelain", "--untracked-files=no"):
        commit += "+changes"
    return {"commit": commit, "device": device, "device_name": device_name(device),
            "precision": precision_profile(device).compute, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "versions": library_versions(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_record(spec: RunSpec, results: dict, root=None, device: str | None = None) -> Path:
    """Write one run's record; refuses to replace a file that is there (delete it by hand to re-record)."""
    path = record_path(spec, root)
    if path.exists():
        raise CourseError(f"Đã có kết quả ghi lại `{path}`: không ghi đè.",
                          "Muốn chạy lại thì tự xoá tệp đó trước (nó là kết quả đã commit của một lần chạy).")
    config = spec.config()
    record = {"sweep": spec.sweep, "key": spec.key, "config": config, "config_hash": config_hash(config),
              "results": results, "provenance": provenance(device)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_records(sweep: str, root=None) -> dict[str, dict]:
    """The recorded runs of ``sweep`` by key (only those whose file is there)."""
    folder = records_root(root) / sweep
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}


def stale_records(root=None) -> list[str]:
    """Every record file the code no longer describes: an unknown sweep or key, or a configuration whose hash
    differs from the recorded one. Empty when every record is current."""
    stale = []
    for folder in sorted(p for p in records_root(root).glob("*") if p.is_dir()):
        specs = {s.key: s for s in SWEEPS[folder.name]()} if folder.name in SWEEPS else {}
        for path in sorted(folder.glob("*.json")):
            record = json.loads(path.read_text(encoding="utf-8"))
            spec = specs.get(path.stem)
            if spec is None:
                stale.append(f"{folder.name}/{path.name}: không còn trong SWEEPS")
            elif record.get("config_hash") != config_hash(spec.config()) or record.get("config") != spec.config():
                stale.append(f"{folder.name}/{path.name}: cấu hình trong mã đã khác lúc ghi")
    return stale
