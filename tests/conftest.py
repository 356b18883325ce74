import pytest
import torch
from check_support import adapter_dirs  # noqa: F401  (module fixture: two saved tiny adapters, for the check tests)


@pytest.fixture(scope="session")
def tiny_model_factory():
    """Tiny random Llama models (same architecture family as SmolLM2), built in milliseconds."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(hidden_size=32, seed=0):
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=64, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                             max_position_embeddings=64)
        return LlamaForCausalLM(config).eval()

    return make


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A 64-token word-level tokenizer (words ``w0``..``w58``; ids fit ``tiny_model_factory``'s vocab)
    with a chat template; ``<eos>`` is id 0 and ``<pad>`` id 1."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<eos>", "<pad>", "<unk>", "<|user|>", "<|assistant|>"]
    vocab = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(64 - len(specials))])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <eos> {% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return tok


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Unit tests use tiny models: one thread avoids thread-pool contention (much faster on 2 shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_base_dir(tmp_path, tiny_model_factory, tiny_tokenizer, monkeypatch):
    """A tiny saved base model + tokenizer, made the course model through LORA_COURSE_MODEL."""
    path = tmp_path / "tiny_base"
    tiny_model_factory().save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    monkeypatch.setenv("LORA_COURSE_MODEL", str(path))
    return path
