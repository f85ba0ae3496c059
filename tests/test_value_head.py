"""Tests of pipa.value_head: the head, token log-probs, and training/saving under LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from pipa.losses import LossParams, Responses, UnpairedBatch, pipa_m_loss
from pipa.value_head import (
    VALUE_HEAD_CONFIG,
    VALUE_HEAD_WEIGHTS,
    PolicyWithValueHead,
    ValueHead,
    load_value_head,
    save_value_head,
    token_logps,
)

HIDDEN = 32


def _tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=HIDDEN, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 64, (2, 7), generator=g)
    attention_mask = torch.ones(2, 7, dtype=torch.long)
    attention_mask[1, -2:] = 0  # right padding
    return input_ids, attention_mask


def test_value_head_shape_and_init_near_half() -> None:
    torch.manual_seed(0)
    head = ValueHead(HIDDEN)
    v = head(torch.randn(3, 5, HIDDEN))
    assert v.shape == (3, 5)
    assert torch.all((torch.sigmoid(v) - 0.5).abs() < 0.01)
    with pytest.raises(ValueError, match="last dimension"):
        head(torch.randn(3, 5, HIDDEN + 1))


def test_value_head_first_layer_gets_gradient_at_first_step() -> None:
    torch.manual_seed(0)
    head = ValueHead(HIDDEN)
    torch.nn.functional.logsigmoid(head(torch.randn(4, 6, HIDDEN))).sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_token_logps_alignment_and_dtype() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g).to(torch.bfloat16)
    ids = torch.randint(0, 11, (2, 5), generator=g)
    out = token_logps(logits, ids)
    assert out.dtype == torch.float32 and out.shape == (2, 5)
    assert torch.all(out[:, 0] == 0)
    ref = torch.log_softmax(logits.float(), -1)
    for b in range(2):
        for t in range(1, 5):
            assert torch.allclose(out[b, t], ref[b, t - 1, ids[b, t]], atol=1e-6)
    assert torch.all(token_logps(logits[:, :1], ids[:, :1]) == 0)
    with pytest.raises(ValueError, match="input_ids"):
        token_logps(logits, ids[:, :4])


def test_hidden_states_last_is_post_norm_and_value_alignment() -> None:
    model = _tiny_llama()
    input_ids, attention_mask = _batch()
    head = ValueHead(HIDDEN)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask,
                    output_hidden_states=True)
        hidden = out.hidden_states[-1]
        # what lm_head sees: the final hidden state after the last norm
        assert torch.allclose(model.lm_head(hidden), out.logits, atol=1e-5)
        logits, values = PolicyWithValueHead(model, head)(input_ids, attention_mask)
        assert torch.allclose(logits, out.logits)
        assert values.shape == input_ids.shape and values.dtype == torch.float32
        assert torch.all(values[:, 0] == 0)
        # position t: the head on the state that predicts token t (position t - 1)
        assert torch.allclose(values[:, 1:], head(hidden[:, :-1]), atol=1e-6)
        logits2, none = PolicyWithValueHead(model, None)(input_ids, attention_mask)
        assert none is None and torch.allclose(logits2, out.logits)


def test_save_load_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    head = ValueHead(HIDDEN)
    save_value_head(head, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / VALUE_HEAD_CONFIG).read_text())
    assert config["hidden_size"] == HIDDEN
    loaded = load_value_head(tmp_path / "adapter")
    x = torch.randn(2, 3, HIDDEN)
    assert torch.equal(loaded(x), head(x))
    with pytest.raises(FileNotFoundError, match=VALUE_HEAD_CONFIG):
        load_value_head(tmp_path / "nowhere")


def test_value_head_trains_under_lora_saves_and_reloads(tmp_path: Path) -> None:
    """Issue test 8: one optimizer step under LoRA moves the head; the head is saved in the
    adapter folder and a reload (fresh base with the same init) gives the same outputs."""
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                      lora_dropout=0.0, task_type="CAUSAL_LM")
    peft_model = get_peft_model(_tiny_llama(seed=0), lora)
    torch.manual_seed(5)
    head = ValueHead(HIDDEN)
    policy = PolicyWithValueHead(peft_model, head)
    assert all(p.requires_grad for p in head.parameters())
    lora_params = [p for n, p in peft_model.named_parameters() if p.requires_grad]
    assert lora_params and all("lora_" in n for n, p in peft_model.named_parameters()
                               if p.requires_grad)
    frozen_before = {n: p.detach().clone() for n, p in peft_model.named_parameters()
                     if not p.requires_grad}
    head_before = {n: p.detach().clone() for n, p in head.named_parameters()}
    lora_before = [p.detach().clone() for p in lora_params]

    input_ids, attention_mask = _batch()
    mask = attention_mask.bool().clone()
    mask[:, :2] = False  # two prompt tokens
    with torch.no_grad():
        prior = token_logps(policy(input_ids, attention_mask)[0], input_ids)
    labels = torch.tensor([[1.0] * 7, [1.0, 1, 1, 0, 0, 0, 0]])

    trainable = policy.trainable_parameters()
    assert {id(p) for p in trainable} == {id(p) for p in lora_params + list(head.parameters())}
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    policy.train()
    logits, values = policy(input_ids, attention_mask)
    responses = Responses(policy_logps=token_logps(logits, input_ids), prior_logps=prior,
                          mask=mask, value_logits=values, token_labels=labels)
    loss, _ = pipa_m_loss(UnpairedBatch(responses, torch.tensor([True, False])), LossParams())
    loss.backward()
    optimizer.step()
    policy.eval()

    for name, before in head_before.items():  # both layers moved
        assert not torch.equal(dict(head.named_parameters())[name], before), name
    assert any(not torch.equal(p, b) for p, b in zip(lora_params, lora_before))
    for name, p in peft_model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen_before[name]), name

    folder = tmp_path / "align" / "adapter"
    policy.save_pretrained(folder)
    assert (folder / "adapter_config.json").is_file()
    assert (folder / VALUE_HEAD_WEIGHTS).is_file() and (folder / VALUE_HEAD_CONFIG).is_file()

    reloaded = PeftModel.from_pretrained(_tiny_llama(seed=0), str(folder)).eval()
    policy2 = PolicyWithValueHead(reloaded, load_value_head(folder))
    with torch.no_grad():
        logits_a, values_a = policy(input_ids, attention_mask)
        logits_b, values_b = policy2(input_ids, attention_mask)
    assert torch.allclose(logits_a, logits_b, atol=1e-6)
    assert torch.allclose(values_a, values_b, atol=1e-6)
    for name, p in head.named_parameters():
        assert torch.equal(p, dict(policy2.value_head.named_parameters())[name])


def test_fsdp_units_are_the_decoder_layers_and_the_value_head() -> None:
    """accelerate's TRANSFORMER_BASED_WRAP reads ``_no_split_modules`` of the prepared module."""
    model = _tiny_llama()
    assert PolicyWithValueHead(model, None)._no_split_modules == ["LlamaDecoderLayer"]
    assert PolicyWithValueHead(model, ValueHead(HIDDEN))._no_split_modules == [
        "LlamaDecoderLayer", "ValueHead"]
    lora = get_peft_model(_tiny_llama(), LoraConfig(r=2, lora_alpha=4,
                                                    target_modules=["q_proj", "v_proj"]))
    assert PolicyWithValueHead(lora, ValueHead(HIDDEN))._no_split_modules == [
        "LlamaDecoderLayer", "ValueHead"]
