"""Batched KV-cache generation, sampling, and step-level beam search.

``generate`` runs its own decoding loop over ``model(input_ids, attention_mask,
position_ids, cache, use_cache=True)``: prompts are sorted by length, left-padded by hand
(the tokenizer is never mutated), position ids come from the attention mask, every row stops
at EOS or at a stop string, and a batch ends when every row is done.

Sampling draws one uniform number per row and step from that row's own ``torch.Generator``
seeded from ``(seed, prompt index)``, so a seed reproduces the samples whatever the batch size
(up to float differences between padded shapes), never touches the global RNG, and repeated
prompts in one call get different samples.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

_MASK64 = (1 << 64) - 1


def _row_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for row ``index`` of a call seeded with ``seed``."""
    x = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 29
    return x & ((1 << 63) - 1)


@dataclass
class _Result:
    token_ids: list[int]
    text: str
    logprob: float  # sum of the policy's log-probs (temperature 1) of the kept tokens
    finish: str  # "eos", "stop", "length"
    stop: str | None = None


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    gen_config = getattr(model, "generation_config", None)
    for src in (tokenizer.eos_token_id, getattr(gen_config, "eos_token_id", None)):
        if src is None:
            continue
        ids.update(src if isinstance(src, (list, tuple)) else [src])
    return ids


def _forward_kwarg_names(model) -> tuple[str, bool]:
    params = inspect.signature(model.forward).parameters
    cache_name = "cache" if "cache" in params else "past_key_values"
    return cache_name, "logits_to_keep" in params


def _new_cache(model):
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older signature
        return DynamicCache()


def _select_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    gens: list[torch.Generator | None],
) -> torch.Tensor:
    """Greedy when temperature == 0, else inverse-CDF sampling with per-row uniforms."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_p, sorted_idx = probs.sort(dim=-1, descending=True)
    if top_p < 1.0:
        before = sorted_p.cumsum(dim=-1) - sorted_p  # mass strictly before each token
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
    cdf = sorted_p.cumsum(dim=-1)
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in gens])
    u = (u.to(device=cdf.device, dtype=cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    pos = torch.searchsorted(cdf, u, right=True).clamp(max=cdf.shape[-1] - 1)
    # never land on a token whose mass was removed by top-p
    pos = torch.minimum(pos, (sorted_p > 0).sum(dim=-1, keepdim=True) - 1)
    return sorted_idx.gather(-1, pos).squeeze(-1)


def _first_stop(text: str, stop_strings: Sequence[str]) -> tuple[int, str] | None:
    best = None
    for s in stop_strings:
        i = text.find(s)
        if i >= 0 and (best is None or i + len(s) < best[0]):
            best = (i + len(s), s)
    return best


@torch.inference_mode()
def _decode_batch(
    model,
    tokenizer,
    batch_ids: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop_strings: Sequence[str],
    gens: list[torch.Generator | None],
    eos_ids: set[int],
    pad_id: int,
    want_logprobs: bool,
) -> list[_Result]:
    device = next(model.parameters()).device
    bsz = len(batch_ids)
    width = max(len(ids) for ids in batch_ids)
    input_ids = torch.full((bsz, width), pad_id, dtype=torch.long)
    attn = torch.zeros((bsz, width), dtype=torch.long)
    for r, ids in enumerate(batch_ids):
        if ids:
            input_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attn[r, width - len(ids) :] = 1
    input_ids, attn = input_ids.to(device), attn.to(device)
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    cache_name, has_keep = _forward_kwarg_names(model)
    cache = _new_cache(model)
    extra = {"logits_to_keep": 1} if has_keep else {}

    out = model(
        input_ids=input_ids,
        attention_mask=attn,
        position_ids=position_ids,
        use_cache=True,
        **{cache_name: cache},
        **extra,
    )
    logits = out.logits[:, -1, :]
    next_pos = position_ids[:, -1] + 1

    generated: list[list[int]] = [[] for _ in range(bsz)]
    logps = [0.0] * bsz
    finish: list[str | None] = [None] * bsz
    eos_tensor = torch.tensor(sorted(eos_ids), device=device, dtype=torch.long)
    window = max((len(s) for s in stop_strings), default=0) + 4

    rows = list(range(bsz))  # original row of each live tensor row (finished rows are dropped)
    for step in range(max_new_tokens):
        tokens = _select_tokens(logits, temperature, top_p, gens)
        if want_logprobs:
            step_lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[:, None])
            step_lp = step_lp.squeeze(-1).tolist()
        is_eos = torch.isin(tokens, eos_tensor).tolist() if eos_ids else [False] * len(rows)
        tok_list = tokens.tolist()
        for k, r in enumerate(rows):
            if finish[r] is not None:
                continue
            if want_logprobs:
                logps[r] += step_lp[k]
            if is_eos[k]:
                finish[r] = "eos"
                continue
            generated[r].append(tok_list[k])
            if stop_strings:
                tail = tokenizer.decode(generated[r][-window:], skip_special_tokens=True)
                if _first_stop(tail, stop_strings) is not None:
                    finish[r] = "stop"
        live = [k for k, r in enumerate(rows) if finish[r] is None]
        if not live or step == max_new_tokens - 1:
            break
        if 2 * len(live) <= len(rows):  # compact: drop finished rows from the batch and cache
            keep = torch.tensor(live, device=device)
            cache.batch_select_indices(keep)
            attn, next_pos = attn[keep], next_pos[keep]
            rows = [rows[k] for k in live]
            tok_list = [tok_list[k] for k in live]
            if gens is not None:
                gens = [gens[k] for k in live]
        n = len(rows)
        feed = torch.tensor(
            [pad_id if finish[r] is not None else tok_list[k] for k, r in enumerate(rows)],
            device=device,
        )
        attn = torch.cat([attn, torch.ones((n, 1), dtype=attn.dtype, device=device)], dim=-1)
        out = model(
            input_ids=feed[:, None],
            attention_mask=attn,
            position_ids=next_pos[:, None],
            use_cache=True,
            **{cache_name: cache},
            **extra,
        )
        logits = out.logits[:, -1, :]
        next_pos = next_pos + 1

    results = []
    for r in range(bsz):
        text = tokenizer.decode(generated[r], skip_special_tokens=True)
        stop = None
        hit = _first_stop(text, stop_strings) if stop_strings else None
        if hit is not None:
            text, stop = text[: hit[0]], hit[1]
            finish[r] = "stop"
        results.append(_Result(generated[r], text, logps[r], finish[r] or "length", stop))
    return results


def _run(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    temperature: float,
    top_p: float,
    stop_strings: Sequence[str],
    row_seeds: Sequence[int] | None,
    progress: bool,
    want_logprobs: bool,
) -> list[_Result]:
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if not 0.0 < top_p <= 1.0:
        raise ValueError("top_p must be in (0, 1]")
    if temperature > 0 and row_seeds is None:
        row_seeds = [int(torch.randint(0, 2**62, ()).item()) for _ in prompts]
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("tokenizer needs a pad or eos token")
    eos_ids = _eos_ids(model, tokenizer)
    encoded = tokenizer(list(prompts))["input_ids"]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise ValueError(f"prompt(s) {empty[:5]} encode to no tokens; nothing to condition on")
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    results: list[_Result | None] = [None] * len(prompts)

    was_training = model.training
    model.eval()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="generate", unit="batch")
    try:
        for idxs in batches:
            gens = None
            if temperature > 0:
                gens = []
                for i in idxs:
                    g = torch.Generator()
                    g.manual_seed(int(row_seeds[i]))
                    gens.append(g)
            outs = _decode_batch(
                model,
                tokenizer,
                [encoded[i] for i in idxs],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                stop_strings=tuple(stop_strings),
                gens=gens,
                eos_ids=eos_ids,
                pad_id=pad_id,
                want_logprobs=want_logprobs,
            )
            for i, res in zip(idxs, outs):
                results[i] = res
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop_strings: tuple[str, ...] = (),
    seed: int | None = None,
    progress: bool = False,
) -> list[str]:
    """Continuations of ``prompts`` (decoded, special tokens skipped), in the input order.

    Greedy when ``temperature == 0``. A continuation ends at EOS (not included) or right after
    the first stop string (included), or after ``max_new_tokens``. With ``temperature > 0``
    the same ``seed`` gives the same samples; ``seed=None`` draws fresh seeds from torch's
    global RNG. Repeated prompts get independent samples.
    """
    row_seeds = None
    if temperature > 0 and seed is not None:
        row_seeds = [_row_seed(int(seed), i) for i in range(len(prompts))]
    res = _run(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        temperature=temperature,
        top_p=top_p,
        stop_strings=stop_strings,
        row_seeds=row_seeds,
        progress=progress,
        want_logprobs=False,
    )
    return [r.text for r in res]


# --------------------------------------------------------------------------- beam search


@dataclass
class _Beam:
    text: str
    score: float
    finished: bool


def step_beam_search(
    model,
    tokenizer,
    prompts: list[str],
    *,
    beam_width: int,
    n_samples: int,
    max_steps: int,
    max_step_tokens: int,
    step_delimiter: str = "\n",
    temperature: float = 0.0,
    stop_strings: tuple[str, ...] = (),
    seed: int | None = None,
    batch_size: int = 64,
) -> list[str]:
    """Step-level beam search (the paper's B1 = ``beam_width``, B2 = ``n_samples``).

    Each prompt keeps up to ``beam_width`` partial solutions. Every step, each unfinished beam
    is extended by ``n_samples`` next steps (sampled at ``temperature``, or greedy when it is
    0: then duplicate candidates collapse to one); a step is the text up to and including
    ``step_delimiter``. Candidates are scored by cumulative policy log-probability (the
    untempered model's, summed over tokens); the ``beam_width`` best of the new candidates and
    the solutions already finished are kept. A solution is finished at EOS or at one of
    ``stop_strings``. Returns, per prompt, the best finished solution (the best partial one
    if none finished within ``max_steps``). All expansions of a step run as one batched call.
    """
    if beam_width < 1 or n_samples < 1 or max_steps < 1:
        raise ValueError("beam_width, n_samples and max_steps must be >= 1")
    stops = (step_delimiter, *[s for s in stop_strings if s != step_delimiter])
    beams: list[list[_Beam]] = [[_Beam("", 0.0, False)] for _ in prompts]
    base_seed = seed if seed is not None else int(torch.randint(0, 2**62, ()).item())
    samples = n_samples if temperature > 0 else 1
    counter = 0
    for _step in range(max_steps):
        requests: list[tuple[int, _Beam]] = []
        for p, plist in enumerate(beams):
            for beam in plist:
                if not beam.finished:
                    requests.extend((p, beam) for _ in range(samples))
        if not requests:
            break
        texts = [prompts[p] + beam.text for p, beam in requests]
        row_seeds = [_row_seed(base_seed, counter + k) for k in range(len(requests))]
        counter += len(requests)
        res = _run(
            model,
            tokenizer,
            texts,
            max_new_tokens=max_step_tokens,
            batch_size=batch_size,
            temperature=temperature,
            top_p=1.0,
            stop_strings=stops,
            row_seeds=row_seeds if temperature > 0 else None,
            progress=False,
            want_logprobs=True,
        )
        candidates: list[dict[str, _Beam]] = [{} for _ in prompts]
        for p, plist in enumerate(beams):
            for beam in plist:
                if beam.finished:
                    candidates[p].setdefault(beam.text, beam)
        for (p, beam), r in zip(requests, res):
            done = r.finish == "eos" or (r.finish == "stop" and r.stop != step_delimiter)
            if r.finish == "stop" and r.stop == step_delimiter:
                # a final stop string inside the same step also finishes the solution
                done = any(s in r.text for s in stops[1:])
            new = _Beam(beam.text + r.text, beam.score + r.logprob, done)
            if not r.text and not done:
                new.finished = True  # nothing generated: nothing more will come
            old = candidates[p].get(new.text)
            if old is None or old.score < new.score:
                candidates[p][new.text] = new
        beams = [sorted(c.values(), key=lambda b: -b.score)[:beam_width] for c in candidates]
    out = []
    for plist in beams:
        finished = [b for b in plist if b.finished]
        pool = finished or plist
        out.append(max(pool, key=lambda b: b.score).text if pool else "")
    return out
