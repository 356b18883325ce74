"""``env.compact_lm_head_on_cpu``: TRL's fused LM head scores only the labelled positions on CPU, with the same
numbers as when it scores every position (log-probabilities, entropies, top-1 flags, loss and gradients)."""

import pytest
import torch

trl_utils = pytest.importorskip("trl.trainer.utils")


@pytest.fixture
def restore_trl_choice():
    """Put TRL's own device choice back after the test (the switch is process-wide)."""
    original = trl_utils._use_triton
    yield
    trl_utils._use_triton = original


def _fused_model(seed=0):
    """A tiny Llama with a vocabulary of 3,000 words (three of TRL's 1,024-word tiles) and TRL's fused head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=3000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    return model


def _batch():
    """Two rows, right-padded; only the last few tokens of each row carry a label, like an SFT answer."""
    torch.manual_seed(1)
    ids = torch.randint(2, 3000, (2, 20))
    mask = torch.ones_like(ids)
    mask[1, 16:] = 0
    labels = torch.full_like(ids, -100)
    labels[0, 14:20] = ids[0, 14:20]
    labels[1, 11:16] = ids[1, 11:16]
    return ids, mask, labels


def _run(model):
    model.zero_grad()
    ids, mask, labels = _batch()
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_compact_path_gives_the_same_numbers(restore_trl_choice):
    from lora_helpers.env import compact_lm_head_on_cpu

    model = _fused_model()
    every_position, grads_every = _run(model)
    assert compact_lm_head_on_cpu() is True
    assert trl_utils._use_triton(torch.device("cpu")) is True
    compact, grads_compact = _run(model)

    torch.testing.assert_close(compact.loss, every_position.loss, rtol=1e-5, atol=1e-6)
    for field in ("log_probs", "entropy"):
        torch.testing.assert_close(getattr(compact, field), getattr(every_position, field), rtol=1e-5, atol=1e-6)
    assert torch.equal(compact.is_top1, every_position.is_top1)
    assert torch.equal(compact.label_mask, every_position.label_mask)
    assert grads_compact.keys() == grads_every.keys() and grads_every
    for name, grad in grads_every.items():
        torch.testing.assert_close(grads_compact[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # the unlabelled positions carry exactly zero on both paths
    assert torch.all(compact.log_probs[~compact.label_mask] == 0)


def test_compact_path_is_cpu_only_and_idempotent(restore_trl_choice):
    from lora_helpers.env import compact_lm_head_on_cpu

    before = trl_utils._use_triton
    assert compact_lm_head_on_cpu() is True
    switched = trl_utils._use_triton
    assert compact_lm_head_on_cpu() is True
    assert trl_utils._use_triton is switched          # a second call does not wrap the wrapper again
    for device in ("cuda", "xpu", "meta"):            # every other device keeps TRL's own choice
        assert switched(torch.device(device)) == before(torch.device(device))


def test_compact_switch_says_when_trl_has_no_such_decision(restore_trl_choice, monkeypatch):
    from lora_helpers import env

    monkeypatch.delattr(trl_utils, "_use_triton")
    assert env.compact_lm_head_on_cpu() is False
