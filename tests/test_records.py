"""Recorded runs (lora_helpers.records, scripts/record_runs.py): provenance, resumable sweeps, stale records caught."""

import json

import pytest

from lora_helpers import CourseError, records
from lora_helpers.data import SPLITS_VERSION
from lora_helpers.recipe import RECIPE


def test_every_committed_record_is_described_by_the_code():
    """A recorded run whose configuration the code no longer produces must be recorded again."""
    assert records.stale_records() == []


def test_config_hash_is_stable_and_sees_every_setting():
    spec = records.sweep_specs("rank_seeds")[0]
    assert records.config_hash(spec.config()) == records.config_hash(json.loads(json.dumps(spec.config())))
    changed = records.RunSpec(spec.sweep, spec.key, spec.task, spec.recipe.replace(learning_rate=5e-4))
    assert records.config_hash(changed.config()) != records.config_hash(spec.config())
    keys = [s.key for s in records.sweep_specs("rank_seeds")]
    assert len(keys) == len(set(keys)) == 9
    with pytest.raises(CourseError, match="rank_seeds"):
        records.sweep_specs("khong_co")


@pytest.fixture
def tiny_sweep(tmp_path, tiny_base_dir, monkeypatch):
    """A two-run sweep on a tiny saved base model, recorded under tmp_path."""
    recipe = RECIPE.replace(r=2, lora_alpha=4, max_steps=2, batch_size=2, eval_steps=2, n_train=4, n_val=2, n_test=3)
    sweep = {"tiny": lambda: [records.RunSpec("tiny", f"seed{s}", "ngay_thang", recipe.replace(seed=s)) for s in (0, 1)]}
    monkeypatch.setattr(records, "SWEEPS", sweep)
    return tmp_path / "records", recipe


def test_a_sweep_is_recorded_once_with_its_provenance_then_skipped(tiny_sweep, capsys):
    from scripts import record_runs

    root, recipe = tiny_sweep
    assert record_runs.main(["tiny"], root=root, device="cpu") == 0
    recorded = records.read_records("tiny", root)
    assert sorted(recorded) == ["seed0", "seed1"]
    first = recorded["seed0"]
    assert first["config"] == {"task": "ngay_thang", "recipe": recipe.replace(seed=0).as_dict(),
                               "splits_version": SPLITS_VERSION}
    assert first["config_hash"] == records.config_hash(first["config"])
    assert first["results"]["n_test"] == 3 and first["results"]["steps"] == 2
    assert len(first["results"]["test_correct"]) == 3 and first["results"]["eval_loss"] > 0
    assert first["provenance"]["device"] == "cpu" and first["provenance"]["precision"] in {"fp32", "bf16"}
    assert {"commit", "device_name", "torch_threads", "versions", "date"} <= set(first["provenance"])
    before = {k: (root / "tiny" / f"{k}.json").read_bytes() for k in recorded}
    capsys.readouterr()
    assert record_runs.main(["tiny"], root=root, device="cpu") == 0  # resumable: nothing left to run
    assert "[1/" not in capsys.readouterr().out
    assert {k: (root / "tiny" / f"{k}.json").read_bytes() for k in recorded} == before
    with pytest.raises(CourseError, match="không ghi đè"):
        records.write_record(records.sweep_specs("tiny")[0], {}, root)


def test_a_changed_recipe_makes_the_records_stale(tiny_sweep, monkeypatch):
    from scripts import record_runs

    root, recipe = tiny_sweep
    assert record_runs.main(["tiny", "--keys", "seed0"], root=root, device="cpu") == 0
    assert sorted(records.read_records("tiny", root)) == ["seed0"] and records.stale_records(root) == []
    monkeypatch.setattr(records, "SWEEPS", {"tiny": lambda: [
        records.RunSpec("tiny", "seed0", "ngay_thang", recipe.replace(seed=0, learning_rate=5e-4))]})
    assert records.stale_records(root) == ["tiny/seed0.json: cấu hình trong mã đã khác lúc ghi"]
    assert record_runs.main(["tiny"], root=root, device="cpu") == 1  # refuses to add to a stale sweep
    monkeypatch.setattr(records, "SWEEPS", {})
    assert records.stale_records(root) == ["tiny/seed0.json: không còn trong SWEEPS"]


def test_a_variant_sweep_records_lesson_6s_runs(tmp_path, tiny_base_dir, monkeypatch):
    """A variant run (lesson 6's plain loop) is recorded with the settings the code gives it, and goes stale when
    they change."""
    from scripts import record_runs

    settings = {**records.VARIANT_RUN, "r": 2, "lora_alpha": 4, "steps": 2, "batch_size": 2, "n_train": 4,
                "n_val": 2, "n_test": 3}

    def sweep(**change):
        return {"tiny": lambda: [records.RunSpec("tiny", f"{v}_seed0", "ngay_thang", variant_run=tuple(sorted(
            {**settings, "variant": v, "seed": 0, **change}.items()))) for v in ("lora", "dora")]}

    monkeypatch.setattr(records, "SWEEPS", sweep())
    root = tmp_path / "records"
    assert record_runs.main(["tiny"], root=root, device="cpu") == 0
    recorded = records.read_records("tiny", root)
    assert sorted(recorded) == ["dora_seed0", "lora_seed0"]
    lora, dora = recorded["lora_seed0"]["results"], recorded["dora_seed0"]["results"]
    assert recorded["lora_seed0"]["config"]["variant_run"]["variant"] == "lora"
    assert lora["steps"] == 2 and len(lora["train_losses"]) == 2 and len(lora["test_correct"]) == lora["n_test"] == 3
    assert dora["trainable"] > lora["trainable"] and lora["test_gold_logprob_per_token"] < 0
    monkeypatch.setattr(records, "SWEEPS", sweep(learning_rate=5e-4))
    assert len(records.stale_records(root)) == 2


def test_a_run_spec_says_what_it_trains():
    with pytest.raises(CourseError, match="đúng một"):
        records.RunSpec("s", "k", "ngay_thang")
    specs = records.sweep_specs("variant_seeds")
    assert len(specs) == 15 and {s.settings["variant"] for s in specs} == {"lora", "rslora", "dora", "pissa", "olora"}
    assert all(set(s.settings) == set(records.VARIANT_RUN) | {"variant", "seed"} for s in specs)
