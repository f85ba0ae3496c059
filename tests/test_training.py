"""The training engine: accelerate, gradient accumulation, batch sharding, NaN checks."""

from __future__ import annotations

import copy
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pipa.align import alignment_step
from pipa.batching import Example, batch_plan, collate, to_device
from pipa.config import ConfigError
from pipa.losses import ALGORITHMS, LossParams, Responses, UnpairedBatch
from pipa.training import NonFiniteLoss, cosine_lr, fit, forward_logps, make_accelerator
from pipa.value_head import PolicyWithValueHead, ValueHead

ROOT = Path(__file__).resolve().parents[1]


def _tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64)
    return LlamaForCausalLM(config)


def _examples(n: int = 16, seed: int = 0) -> list[Example]:
    """Random (prompt, response) pairs of varied lengths; even ids correct; pairs (2i, 2i+1)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = [rng.randrange(3, 64) for _ in range(rng.randint(3, 8))]
        response = [rng.randrange(3, 64) for _ in range(rng.randint(4, 12))]
        half = len(response) // 2
        labels = [1] * len(response) if i % 2 == 0 else [1] * half + [0] * (len(response) - half)
        out.append(Example(rid=f"r{i}", sid=f"s{i}", prompt_ids=prompt, response_ids=response,
                           token_labels=labels, step_ids=[k // 3 for k in range(len(response))],
                           correct=i % 2 == 0, pair=i // 2))
    return out


def _sft_step(policy, batches):
    """finetune.finetune's step: per-row mean NLL, mean over rows (a mean over sequences)."""
    sft = ALGORITHMS["sft"]

    def step_fn(step: int, model=None):
        exs = next(batches)
        batch = to_device(collate(exs, 0), next(policy.parameters()).device)
        logps, _ = forward_logps(policy if model is None else model, batch)
        responses = Responses(policy_logps=logps, prior_logps=batch["prior_logps"],
                              mask=batch["response_mask"], token_labels=batch["token_labels"])
        loss, logs = sft.loss_fn(UnpairedBatch(responses, torch.ones_like(batch["is_correct"])),
                                 LossParams(reduction="mean"))
        return loss, logs, [e.rid for e in exs], int(batch["attention_mask"].sum())

    return step_fn


def _train_sft(grad_accum: int, n_steps: int = 3, batch_size: int = 8, lr: float = 1e-3,
               **kw):
    model = _tiny_llama()
    policy = PolicyWithValueHead(model, None).train()
    batches = batch_plan(_examples(), "unpaired", False, batch_size, n_steps, seed=5,
                         grad_accum=grad_accum)
    last = fit(policy.parameters(), _sft_step(policy, batches), n_steps, lr=lr, warmup=1,
               min_lr_ratio=0.1, progress=False, grad_accum=grad_accum, model=policy, **kw)
    return policy, last


# ---------------------------------------------------------------- batch plan


def test_batch_plan_default_is_the_global_batch():
    exs = _examples()
    plan = list(batch_plan(exs, "unpaired", False, 8, 5, seed=1))
    assert len(plan) == 5 and all(len(b) == 8 for b in plan)
    paired = list(batch_plan(exs, "paired", False, 8, 3, seed=1))
    assert all(len(b) == 4 and all(c.correct and not r.correct for c, r in b) for b in paired)


def _key(unit) -> str:
    return "+".join(e.rid for e in unit) if isinstance(unit, tuple) else unit.rid


@pytest.mark.parametrize(("data_kind", "batch_size", "grad_accum", "world"),
                         [("unpaired", 8, 2, 1), ("unpaired", 8, 2, 2), ("unpaired", 12, 3, 2),
                          ("paired", 8, 2, 2), ("paired", 16, 2, 2)])
def test_micro_batches_partition_each_global_batch(data_kind, batch_size, grad_accum, world):
    exs = _examples(24)
    n_steps = 4
    full = list(batch_plan(exs, data_kind, False, batch_size, n_steps, seed=7))
    shards = [list(batch_plan(exs, data_kind, False, batch_size, n_steps, seed=7,
                              grad_accum=grad_accum, num_processes=world, process_index=r))
              for r in range(world)]
    per_micro = len(full[0]) // (grad_accum * world)
    for shard in shards:
        assert len(shard) == n_steps * grad_accum
        assert all(len(m) == per_micro for m in shard)
    for step, global_batch in enumerate(full):
        micro = [m for shard in shards
                 for m in shard[step * grad_accum : (step + 1) * grad_accum]]
        got = [u for m in micro for u in m]
        assert sorted(map(_key, got)) == sorted(map(_key, global_batch))


@pytest.mark.parametrize(("data_kind", "batch_size", "grad_accum", "world"),
                         [("unpaired", 8, 3, 1), ("unpaired", 8, 2, 3), ("paired", 8, 4, 2)])
def test_batch_that_does_not_split_is_refused(data_kind, batch_size, grad_accum, world):
    with pytest.raises(ConfigError, match=f"grad_accum={grad_accum} x {world} processes"):
        next(batch_plan(_examples(), data_kind, False, batch_size, 2, seed=0,
                        grad_accum=grad_accum, num_processes=world, process_index=0))


def test_make_accelerator_on_cpu_is_one_plain_process():
    acc = make_accelerator(2, batch_size=8)
    assert acc.device.type == "cpu" and acc.num_processes == 1 and acc.is_main_process
    assert acc.gradient_accumulation_steps == 2
    with pytest.raises(ConfigError, match="batch_size=9"):
        make_accelerator(2, batch_size=9)
    with pytest.raises(ConfigError, match="positive integer"):
        make_accelerator(0)


# ---------------------------------------------------------------- the loop


def _plain_loop(params, step_fn, n_steps, *, lr, warmup, min_lr_ratio, grad_clip=1.0):
    """The loop before accelerate (reference): one forward per optimizer step."""
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_lr(s, n_steps, warmup, min_lr_ratio))
    losses = []
    for step in range(n_steps):
        loss, _, _, _ = step_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("algorithm", ["sft", "pipa_m", "kto", "dpo"])
def test_one_process_no_accumulation_is_the_plain_loop_bit_for_bit(algorithm):
    spec = ALGORITHMS[algorithm]
    exs = _examples()
    prior = {e.sid: -torch.rand(len(e.response_ids), generator=torch.Generator().manual_seed(i))
             for i, e in enumerate(exs)}
    hparams = LossParams(beta=0.1, reduction="sum", ipo_normalize=False, sft_coef=1.0)
    results = []
    for engine in ("plain", "fit"):
        torch.manual_seed(1)
        base = _tiny_llama()
        head = ValueHead(32) if spec.needs_value_head else None
        policy = PolicyWithValueHead(base, head).train()
        ref = None
        if spec.needs_mismatched:
            ref = PolicyWithValueHead(copy.deepcopy(base).eval(), None).requires_grad_(False)
        batches = batch_plan(exs, spec.data_kind, spec.correct_only, 8, 4, seed=3)
        step_fn = alignment_step(spec, policy, batches, prior, 0, hparams, ref)
        losses = []

        def recorded(*args, step_fn=step_fn, losses=losses):
            out = step_fn(*args)
            losses.append(float(out[0].detach()))
            return out

        kw = {"lr": 1e-3, "warmup": 2, "min_lr_ratio": 0.1}
        if engine == "plain":
            _plain_loop(policy.parameters(), recorded, 4, **kw)
        else:
            fit(policy.parameters(), recorded, 4, progress=False, model=policy,
                accelerator=make_accelerator(1), **kw)
        results.append((losses, [p.detach().clone() for p in policy.parameters()]))
    (plain_losses, plain_params), (fit_losses, fit_params) = results
    assert plain_losses == fit_losses
    assert all(torch.equal(a, b) for a, b in zip(plain_params, fit_params))


@pytest.mark.parametrize("algorithm", ["kto", "step_kto"])
def test_cached_mismatched_reference_equals_the_reference_in_the_loop(algorithm):
    """The cell scores every mismatched pair of its plan once, before training; the run
    then matches the one that calls the reference inside the loop, step for step."""
    from pipa.batching import mismatched_examples
    from pipa.prior import response_logps

    spec = ALGORITHMS[algorithm]
    exs = _examples()
    prior = {e.sid: -torch.rand(len(e.response_ids), generator=torch.Generator().manual_seed(i))
             for i, e in enumerate(exs)}
    hparams = LossParams(beta=0.1, reduction="sum", ipo_normalize=False, sft_coef=1.0)
    plan = list(batch_plan(exs, spec.data_kind, spec.correct_only, 8, 4, seed=3))
    pairs = mismatched_examples(plan, spec.data_kind)
    assert len({e.sid for e in pairs}) == len(pairs) and all("~" in e.sid for e in pairs)
    runs = []
    for cached in (False, True):
        base = _tiny_llama()
        policy = PolicyWithValueHead(base, None).train()

        class Tok:
            pad_token_id = 0

        kw = {"mismatched_prior": response_logps(copy.deepcopy(base), Tok(), pairs, 5)} \
            if cached else \
            {"ref_model": PolicyWithValueHead(copy.deepcopy(base).eval(), None)}
        step_fn = alignment_step(spec, policy, iter(plan), prior, 0, hparams, **kw)
        losses = []

        def recorded(*args, step_fn=step_fn, losses=losses):
            out = step_fn(*args)
            losses.append(float(out[0].detach()))
            return out

        fit(policy.parameters(), recorded, 4, lr=1e-3, progress=False, model=policy)
        runs.append(losses)
    assert runs[0] == pytest.approx(runs[1], abs=1e-5)
    with pytest.raises(ValueError, match="mismatched_prior"):
        alignment_step(spec, policy, iter(plan), prior, 0, hparams)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_accumulating_half_batches_gives_the_full_batch_update(monkeypatch, optimizer):
    """grad_accum=2 over the two halves of each batch = grad_accum=1 over the whole batch.

    With SGD the parameters compare the gradients themselves. AdamW's first steps are
    lr * g / (|g| + eps), about lr * sign(g): a float-rounding difference in a gradient
    entry near zero moves that weight by up to lr, so AdamW runs at a small lr.
    """
    lr = 1e-3
    if optimizer == "sgd":
        monkeypatch.setattr(torch.optim, "AdamW",
                            lambda params, lr, **_: torch.optim.SGD(params, lr=lr))
    else:
        lr = 1e-5
    full, full_last = _train_sft(grad_accum=1, lr=lr)
    accum, accum_last = _train_sft(grad_accum=2, lr=lr)
    for (name, a), b in zip(full.named_parameters(), accum.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name
    assert abs(full_last["loss"] - accum_last["loss"]) < 1e-5  # logged: mean of micro-batches
    assert full_last["lr"] == accum_last["lr"]


def test_fit_with_an_accelerator_on_cpu_logs_once_per_step():
    class FakeLive:
        def __init__(self):
            self.metrics, self.steps = [], 0

        def log_metric(self, name, value):
            self.metrics.append((self.steps, name, value))

        def next_step(self):
            self.steps += 1

    accelerator = make_accelerator(2, batch_size=8)
    live = FakeLive()
    before = [p.detach().clone() for p in _tiny_llama().parameters()]
    policy, last = _train_sft(grad_accum=2, n_steps=3, accelerator=accelerator, live=live)
    assert live.steps == 3
    losses = [v for _, name, v in live.metrics if name == "train/loss"]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert last["tokens_per_s"] > 0 and math.isfinite(last["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert accelerator.device.type == "cpu"


def test_bf16_mixed_precision_runs_forwards_in_bf16_and_keeps_fp32_weights():
    """``mixed_precision='bf16'``: the step runs under autocast (the linear layers compute in
    bf16), weights and their gradients stay fp32, the update stays close to fp32's and is
    the same bytes on a rerun."""
    seen = []
    model = _tiny_llama()
    hook = model.model.layers[0].mlp.down_proj.register_forward_hook(
        lambda mod, args, out: seen.append(out.dtype))
    policy = PolicyWithValueHead(model, None).train()
    batches = batch_plan(_examples(), "unpaired", False, 8, 3, seed=5)
    fit(policy.parameters(), _sft_step(policy, batches), 3, lr=1e-3, warmup=1,
        min_lr_ratio=0.1, progress=False, model=policy, mixed_precision="bf16")
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in policy.parameters())
    fp32, _ = _train_sft(grad_accum=1)
    bf16_again, _ = _train_sft(grad_accum=1, mixed_precision="bf16")
    for a, b, c in zip(fp32.parameters(), policy.parameters(), bf16_again.parameters()):
        assert torch.equal(b, c)  # deterministic
        assert torch.allclose(a, b, atol=5e-3)  # three lr=1e-3 steps apart: rounding only
    assert any(not torch.equal(a, b) for a, b in zip(fp32.parameters(), policy.parameters()))


def test_prior_log_probs_in_bf16_match_the_policy_forward_of_training():
    """The cached prior and the policy's first training forward use the same precision, so
    the log-ratio starts at zero up to rounding (not at the bf16-vs-fp32 gap)."""
    from pipa.hardware import autocast
    from pipa.prior import response_logps

    model = _tiny_llama().eval()
    exs = _examples(8)

    class Tok:
        pad_token_id = 0

    prior = response_logps(model, Tok(), exs, batch_size=3, mixed_precision="bf16")
    prior_fp32 = response_logps(model, Tok(), exs, batch_size=3)
    batch = collate(exs, 0, prior)
    with torch.no_grad(), autocast("bf16"):
        logps, _ = forward_logps(PolicyWithValueHead(model, None), batch)
    ratio = ((logps - batch["prior_logps"]) * batch["response_mask"]).abs().max()
    gap = max((prior[e.sid] - prior_fp32[e.sid]).abs().max() for e in exs)
    assert ratio < 0.02 and gap > ratio
    with pytest.raises(ConfigError, match="runtime.mixed_precision='fp8'; valid: auto, fp32, bf16"):
        autocast("fp8")


@pytest.mark.parametrize("capability, cpu_flags, expected, kernels", [
    ("AVX2", (False, False), "fp32", "no"),        # AVX2-only: bf16 would be emulated
    ("AVX512", (True, True), "bf16", "amx"),       # AMX (which has AVX512-BF16 too)
    ("AVX512", (False, True), "bf16", "avx512_bf16"),  # AVX512-BF16 alone
    ("AVX512", (False, False), "fp32", "no"),      # AVX512 without bf16 units
    ("AVX2", (True, True), "fp32", "no"),          # the same CPU with kernels capped at AVX2
])                                                 # (ATEN_CPU_CAPABILITY=avx2): emulated again
def test_auto_precision_is_bf16_only_where_the_cpu_runs_it_natively(monkeypatch, capability,
                                                                  cpu_flags, expected,
                                                                  kernels):
    from pipa.hardware import autocast, machine, resolve_precision

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: cpu_flags[0])
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: cpu_flags[1])
    assert resolve_precision("auto", "cpu") == expected
    # The record tells AMX from AVX512-BF16: one model name, two kinds of bf16 kernels.
    assert machine()["bf16_native"] == kernels
    with autocast("auto", "cpu"):
        assert torch.is_autocast_enabled("cpu") == (expected == "bf16")
    # Written values are taken as written, whatever the hardware; `no` and YAML's false
    # (an unquoted `no`) are the old spelling of fp32.
    for value, name in (("bf16", "bf16"), ("fp32", "fp32"), ("no", "fp32"), (False, "fp32")):
        assert resolve_precision(value, "cpu") == name
    with autocast(False):
        assert not torch.is_autocast_enabled("cpu")


def test_logged_values_are_means_over_micro_batches():
    weight = torch.nn.Parameter(torch.tensor(1.0))
    values = iter([1.0, 3.0, float("nan"), 5.0])

    def step_fn(step):
        v = next(values)
        logs = {"metric": torch.tensor(v)}
        return weight * 2.0, logs, [f"m{step}"], 10

    last = fit([weight], step_fn, 2, lr=0.0, grad_accum=2, progress=False)
    assert last["loss"] == 2.0
    assert last["metric"] == 5.0  # NaN (nothing to average in that micro-batch) is left out
    assert last["tokens_per_s"] > 0


def test_nan_loss_in_a_micro_batch_names_the_step_and_samples():
    model = _tiny_llama()
    policy = PolicyWithValueHead(model, None).train()
    batches = batch_plan(_examples(), "unpaired", False, 8, 3, seed=5, grad_accum=2)
    inner = _sft_step(policy, batches)
    calls = []

    def step_fn(step, model=None):
        loss, logs, ids, n = inner(step, model)
        calls.append(step)
        if len(calls) == 4:  # step 1, second micro-batch
            loss = loss * float("nan")
        return loss, logs, ids, n

    before = [p.detach().clone() for p in policy.parameters()]
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at step 1 \(samples: r") as err:
        fit(policy.parameters(), step_fn, 3, lr=1e-3, grad_accum=2, progress=False,
            model=policy)
    assert "lower the learning rate" in str(err.value)
    assert calls == [0, 0, 1, 1]  # stopped before the optimizer step of step 1
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))  # step 0 ran


def test_nan_gradient_names_the_step():
    weight = torch.nn.Parameter(torch.tensor(1.0))

    def step_fn(step):
        loss = weight * 2.0
        if step == 2:  # a finite loss whose gradient is NaN
            loss = loss + _NanGrad.apply(weight)
        return loss, {}, [f"w{step}"], 1

    with pytest.raises(NonFiniteLoss, match=r"non-finite gradient_norm at step 2 \(samples: w2"):
        fit([weight], step_fn, 4, lr=1e-2, grad_accum=1, progress=False)


class _NanGrad(torch.autograd.Function):
    """Zero in the forward, NaN gradient in the backward."""

    @staticmethod
    def forward(ctx, x):
        return x * 0.0

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


# ---------------------------------------------------------------- several processes


@pytest.mark.slow
def test_two_cpu_processes_match_one_process(tmp_path):
    """torchrun, 2 CPU processes (gloo DDP), each with half of every batch: the same
    parameters and logged loss as one process with the whole batch, and as one process
    accumulating 2 micro-batches (SGD, so the parameters compare the gradients)."""
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "ACCELERATE_USE_CPU": "true"}  # what `accelerate launch --cpu` sets
    outputs = {}
    for name, cmd in {
        "one": [sys.executable, str(script), str(tmp_path / "one.pt"), "1"],
        "accum": [sys.executable, str(script), str(tmp_path / "accum.pt"), "2"],
        "two": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", "29517", str(script), str(tmp_path / "two.pt"), "1"],
    }.items():
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                              check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs[name] = torch.load(tmp_path / f"{name}.pt")
    one = outputs["one"]
    assert one["processes"] == 1 and outputs["two"]["processes"] == 2
    assert outputs["two"]["distributed"].endswith("MULTI_CPU")
    for other in ("accum", "two"):
        got = outputs[other]
        assert abs(got["loss"] - one["loss"]) < 1e-5, other
        for a, b in zip(one["params"], got["params"]):
            assert torch.allclose(a, b, atol=1e-6, rtol=0), other


_DDP_SCRIPT = '''
import sys
import torch
from pipa.batching import batch_plan
from pipa.hardware import setup_runtime
from pipa.training import fit, make_accelerator
from pipa.value_head import PolicyWithValueHead
sys.path.insert(0, "TESTS_DIR")
from test_training import _examples, _sft_step, _tiny_llama

out, grad_accum = sys.argv[1], int(sys.argv[2])
# SGD: the parameters compare the gradients (see the accumulation test on AdamW's sign).
torch.optim.AdamW = lambda params, lr, **_: torch.optim.SGD(params, lr=lr)
setup_runtime(1, 0)
acc = make_accelerator(grad_accum, batch_size=8)
policy = PolicyWithValueHead(_tiny_llama(), None).train()
batches = batch_plan(_examples(), "unpaired", False, 8, 3, seed=5, grad_accum=grad_accum,
                     num_processes=acc.num_processes, process_index=acc.process_index)
last = fit(policy.parameters(), _sft_step(policy, batches), 3, lr=1e-3, warmup=1,
           min_lr_ratio=0.1, progress=False, grad_accum=grad_accum, accelerator=acc,
           model=policy)
acc.wait_for_everyone()
if acc.is_main_process:
    torch.save({"loss": last["loss"], "processes": acc.num_processes,
                "distributed": str(acc.distributed_type),
                "params": [p.detach().clone() for p in policy.parameters()]}, out)
'''.replace("TESTS_DIR", str(Path(__file__).resolve().parent))


def test_full_weights_holder_is_the_policy_unless_fsdp_shards_it():
    """Replicated parameters: the policy itself holds the trained weights. FSDP: a copy made
    before training receives the gathered full state dict (here gathered from a plain
    module, which ``get_model_state_dict`` also accepts), so saving and validation read
    complete weights, and the copy is a plain module, not the wrapped one."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from pipa.training import full_weights_holder

    model = _tiny_llama()
    policy = PolicyWithValueHead(model, ValueHead(model.config.hidden_size))
    plain = SimpleNamespace(distributed_type=DistributedType.NO, device=torch.device("cpu"))
    assert full_weights_holder(plain, policy) == (policy, None)

    fsdp = SimpleNamespace(distributed_type=DistributedType.FSDP, device=torch.device("cpu"))
    holder, gather = full_weights_holder(fsdp, policy)
    assert holder is not policy and gather is not None
    with torch.no_grad():  # "training" changes the weights of the prepared module
        for p in policy.parameters():
            p.add_(0.5)
    gather(policy)
    trained, copied = policy.state_dict(), holder.state_dict()
    assert trained.keys() == copied.keys()
    assert all(torch.equal(trained[k], copied[k]) for k in trained)


def test_fsdp_refuses_mixed_parameter_dtypes():
    from pipa.training import _check_fsdp_dtypes

    model = _tiny_llama()
    _check_fsdp_dtypes(PolicyWithValueHead(model, ValueHead(model.config.hidden_size)))
    mixed = PolicyWithValueHead(model.to(torch.bfloat16), ValueHead(model.config.hidden_size))
    with pytest.raises(ConfigError, match="FSDP needs one parameter dtype.*bfloat16, float32"):
        _check_fsdp_dtypes(mixed)


def test_param_groups_give_the_value_head_its_own_learning_rate():
    """align.value_head_lr: fit takes torch param groups; the head's group trains at its own
    lr (here 100x the policy's, so it moves further) while the policy's group, and a fit
    given the plain parameter list, train exactly as before."""
    spec = ALGORITHMS["pipa_m"]
    exs = _examples()
    prior = {e.sid: -torch.rand(len(e.response_ids), generator=torch.Generator().manual_seed(i))
             for i, e in enumerate(exs)}
    hparams = LossParams()
    moved = {}
    for name, head_lr in (("plain", None), ("grouped_same", 1e-3), ("grouped_fast", 1e-1)):
        torch.manual_seed(1)
        base = _tiny_llama()
        head = ValueHead(32)
        policy = PolicyWithValueHead(base, head).train()
        before = [p.detach().clone() for p in head.parameters()]
        base_before = [p.detach().clone() for p in base.parameters()]
        step_fn = alignment_step(spec, policy, batch_plan(exs, "unpaired", False, 8, 3, seed=3),
                                 prior, 0, hparams)
        to_train = (list(policy.parameters()) if head_lr is None else
                    [{"params": list(base.parameters())},
                     {"params": list(head.parameters()), "lr": head_lr}])
        fit(to_train, step_fn, 3, lr=1e-3, progress=False, model=policy)
        moved[name] = (sum(float((p - b).abs().sum()) for p, b in zip(head.parameters(), before)),
                       [p.detach().clone() for p in base.parameters()], base_before)
    assert moved["plain"][0] == moved["grouped_same"][0]  # same lr: the same run, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(moved["plain"][1], moved["grouped_same"][1]))
    assert moved["grouped_fast"][0] > 10 * moved["plain"][0]
