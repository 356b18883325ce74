import pytest
import torch


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


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Unit tests use tiny models: one thread avoids thread-pool contention (much faster on 2 shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
