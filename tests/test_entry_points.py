"""Workflow glue: evaluation decoding modes, on a tiny random model of the default family."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from pipa import world
from pipa.config import load_params, parse
from pipa.config_types import Arch
from pipa.evaluation import evaluate_model
from pipa.models import build_model, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    params = load_params(ROOT / "params.yaml")
    splits = world.make_splits({"gsm": {"train": 20, "val": 4, "test": 6},
                                "math": {"train": 20, "val": 4, "test": 6}}, seed=3)
    texts = [world.format_prompt(p["question"]) + "".join(p["steps"]) for p in splits["train"]]
    tok = train_tokenizer(texts, 64, tmp_path_factory.mktemp("tok"))
    arch = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2,
            "max_len": 256}
    model = build_model("llama", Arch(**arch), len(tok), tok, seed=0)
    problems = [{"id": p["id"], "question": p["question"], "answer": p["answer"],
                 "benchmark": p["tier"]} for p in splits["test"]]
    return params, tok, model, problems


def test_beam_with_width_one_is_greedy(tiny):
    params, tok, model, problems = tiny
    params = copy.deepcopy(params)
    params["eval"]["max_new_tokens"] = 24
    greedy = evaluate_model(parse(params), "ds", tok, model, problems, progress=False)
    params["eval"]["decoding"] = "beam"
    params["eval"]["beam"] = {"gsm": [1, 1], "math": [1, 1]}
    params["eval"]["max_steps"] = 64
    beam = evaluate_model(parse(params), "ds", tok, model, problems, progress=False)
    assert [r["id"] for r in greedy] == [r["id"] for r in beam]
    # Same tokens, cut at step boundaries: the concatenated texts agree on their common prefix.
    for g, b in zip(greedy, beam):
        n = min(len(g["output"]), len(b["output"]))
        assert g["output"][:n] == b["output"][:n]


def test_unknown_decoding_is_refused(tiny):
    params, tok, model, problems = tiny
    params = copy.deepcopy(params)
    params["eval"]["decoding"] = "nucleus"
    with pytest.raises(ValueError, match="eval.decoding='nucleus'"):
        evaluate_model(parse(params), "ds", tok, model, problems, progress=False)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_saved_world_tokenizer_round_trips_through_model_folder(tmp_path, family):
    """Regression: AutoTokenizer rebuilt a Qwen2-family folder's tokenizer with Qwen2's
    byte-level pre-tokenizer, dropping every space and newline of the world's text."""
    from pipa.model_io import load_policy_model

    text = "Q: Max 20 toys *3 -8 ?\nA:\n20*3=60\n60-8=52\nAnswer: 52\n"
    tok = train_tokenizer([text] * 20, 128, tmp_path)
    arch = {"hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2,
            "max_len": 64}
    build_model(family, Arch(**arch), len(tok), tok, seed=0).save_pretrained(tmp_path)
    params = load_params(ROOT / "params.yaml")
    loaded, _ = load_policy_model(parse(params), "ds", tmp_path)
    ids = loaded(text, add_special_tokens=False)["input_ids"]
    assert loaded.unk_token_id not in ids
    assert loaded.decode(ids) == text


def test_finetune_with_lora_saves_a_merged_plain_model(tiny, tmp_path):
    """sft.lora: adapters on q/v only, two micro-batches per step; the output folder is a
    plain model (merged weights, no adapter files) that load_policy_model reads as before."""
    import torch

    from pipa.finetune import finetune
    from pipa.model_io import load_policy_model

    params, tok, model, _ = tiny
    params = copy.deepcopy(params)
    params["runtime"]["threads"] = 1
    params["sft"].update(epochs=1, batch_size=4, grad_accum=2, lr=1e-2, warmup=0,
                         lora={"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0,
                               "target_modules": ["q_proj", "v_proj"]})
    init = tmp_path / "init"
    model.save_pretrained(init)
    tok.save_pretrained(init)
    train = world.make_splits({"gsm": {"train": 4, "val": 1, "test": 1},
                               "math": {"train": 4, "val": 1, "test": 1}}, seed=3)["train"]
    records = [{"rid": p["id"], "sid": p["id"], "question": p["question"], "steps": p["steps"],
                "step_labels": [1] * len(p["steps"]), "correct": True, "pair": None}
               for p in train]
    summary = finetune(parse(params), "ds", init, records, "sft", tmp_path / "sft")
    assert summary["steps"] == 2 and summary["examples"] == 8
    out = tmp_path / "sft"
    assert (out / "model.safetensors").is_file() and (out / "pipa_train.json").is_file()
    assert not (out / "adapter_config.json").exists()
    _, loaded = load_policy_model(parse(params), "ds", out)
    assert not any("lora" in name for name in loaded.state_dict())
    before = dict(model.named_parameters())
    after = dict(loaded.named_parameters())
    q = "model.layers.0.self_attn.q_proj.weight"
    k = "model.layers.0.self_attn.k_proj.weight"
    assert not torch.equal(before[q], after[q])  # the trained adapter, merged
    assert torch.equal(before[k], after[k])  # not a LoRA target: untouched


def test_a_pair_whose_partner_is_too_long_is_counted(tiny):
    """A too-long solution is skipped and counted; so is the pair partner it leaves alone
    (paired algorithms cannot train on it), where the label stats DVC tracks would not."""
    from pipa.examples import build_examples
    from pipa.world import format_prompt

    _, tok, _, problems = tiny
    q = problems[0]["question"]
    short, long = ["Answer: 1\n"], ["1+1=2\n" * 60, "Answer: 2\n"]
    records = [
        {"rid": "a", "sid": "a", "question": q, "steps": short, "step_labels": [1],
         "correct": True, "pair": 0},
        {"rid": "b", "sid": "b", "question": q, "steps": long, "step_labels": [0, 0],
         "correct": False, "pair": 0},
        {"rid": "c", "sid": "c", "question": q, "steps": short, "step_labels": [1],
         "correct": True, "pair": 1},
        {"rid": "d", "sid": "d", "question": q, "steps": ["Answer: 3\n"], "step_labels": [0],
         "correct": False, "pair": 1},
    ]
    examples, skipped = build_examples(records, tok, format_prompt, max_len=64)
    assert [e.rid for e in examples] == ["a", "c", "d"]
    assert skipped == {"too_long": 1, "pair_partner_too_long": 1}
