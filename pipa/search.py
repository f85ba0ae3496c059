"""Search at inference guided by a step scorer, against majority vote at equal compute.

PIPA trains g = p(c = 1 | x, y<t) beside the policy; the paper leaves "search during
inference" with it as future work. Three modes, as the anchors use a step scorer:

* ``value_beam``: AlphaMath's step-level beam search. Each of up to B1 partial solutions is
  extended by B2 sampled next steps (a step ends at the format's step separator) and the B1
  candidates with the highest score at their last step end are kept; a finished solution
  stays in the pool with its score, and the best finished one is the answer.
* ``best_of_n``: N whole solutions, ranked by the scorer at their step ends: the minimum
  over them (Math-Shepherd's ranking) or the last one.
* ``majority_vote``: self-consistency over the same N samples, the baseline a step scorer
  has to beat at the same compute.

Every mode counts the tokens it samples per problem (each drawn token, a closing EOS
included), so modes are compared at equal sampled tokens, not at equal widths. A scorer's
own forward passes read the text and sample nothing; they are not counted.

The parts are functions, so a scorer or a proposer can be swapped without touching the
search: a ``Proposer`` draws next steps (``lm_proposer``: the generation engine, batched,
with a KV cache), a ``Sampler`` draws whole solutions (``lm_sampler``), a ``StepScorer``
scores step ends: ``value_scorer`` (PIPA's g), ``world_oracle`` (the world's exact checker
on the prefix: 1 while every step so far is right; the reference that shows the search works
before g is blamed or praised) and ``random_scorer`` (a hash: no information at all).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import torch

# The engine's batched decoding loop with per-row seeds (private names: an edit to
# generation.py re-runs every evaluating stage of the study, so its API stays as it is).
from pipa.generation import _forward_kwarg_names, _row_seed, _run


@dataclass(frozen=True)
class Step:
    """One proposed next step: its text, the tokens drawn for it, whether it ends the
    solution (EOS, a final stop string, or the final answer line), and the policy's
    log-probability of the drawn tokens (untempered, summed; a closing EOS included)."""
    text: str
    tokens: int
    done: bool
    logprob: float = 0.0


@dataclass(frozen=True)
class Searched:
    """A mode's answer for one problem and the tokens it sampled to find it."""
    text: str
    tokens: int


# proposer(requests = [(problem index, prefix so far)], round) -> one Step per request
Proposer = Callable[[Sequence[tuple[int, str]], int], list[Step]]
# sampler(problem indices, round) -> one (text, tokens) per index: a whole solution each
Sampler = Callable[[Sequence[int], int], list[tuple[str, int]]]
# scorer(problem indices, step lists) -> the score at each step end of each candidate
StepScorer = Callable[[Sequence[int], Sequence[Sequence[str]]], list[list[float]]]


# ---------------------------------------------------------------- proposing with the LM

class SharedPrefill(torch.nn.Module):
    """``model`` as the generation engine sees it, except that a prefill (a forward of more
    than one position) computes each distinct row of the batch once and copies its KV cache
    and logits to the rows that repeat it; decoding steps pass through. A step beam asks
    for B2 next steps of each beam, B2 copies of one prefix in one batch, so the prefill
    reads each prefix once instead of B2 times. Same padded shape, same rows: the logits
    are those of the unshared prefill up to float rounding between batch sizes."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.generation_config = getattr(model, "generation_config", None)
        self._cache_name, self._has_keep = _forward_kwarg_names(model)

    def forward(self, input_ids, attention_mask=None, position_ids=None,
                past_key_values=None, use_cache=True, logits_to_keep=0):
        extra = {"logits_to_keep": logits_to_keep} if self._has_keep else {}
        kwargs = {self._cache_name: past_key_values, "use_cache": use_cache, **extra}
        width = input_ids.shape[1]
        if width == 1 or attention_mask is None or position_ids is None:
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=position_ids, **kwargs)
        # a row is its tokens, padding and positions: equal rows compute equal caches
        rows, inverse = torch.unique(torch.cat([input_ids, attention_mask, position_ids], 1),
                                     dim=0, return_inverse=True)
        if len(rows) == len(input_ids):  # nothing repeats
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=position_ids, **kwargs)
        out = self.model(input_ids=rows[:, :width], attention_mask=rows[:, width:2 * width],
                         position_ids=rows[:, 2 * width:], **kwargs)
        if past_key_values is not None:
            past_key_values.batch_select_indices(inverse)
        return SimpleNamespace(logits=out.logits[inverse])


def _drawn(result) -> int:
    """Tokens a decode drew: the kept ones, plus the EOS that ended it (drawn, not kept)."""
    return len(result.token_ids) + (result.finish == "eos")


def lm_proposer(model, tokenizer, prompts: Sequence[str], *, max_step_tokens: int,
                temperature: float, seed: int, batch_size: int = 64,
                step_delimiter: str = "\n", is_final: Callable[[str], bool] = lambda s: False,
                share_prefill: bool = True) -> Proposer:
    """Next steps from ``model``: each request continues ``prompts[p] + prefix`` up to and
    including ``step_delimiter``. A step is final when the model stops with EOS, draws
    nothing more, runs out of ``max_step_tokens`` (the step is cut and the solution ends
    there), or writes a line ``is_final`` accepts (the world's answer line), so no round is
    spent waiting for the EOS after an answer.
    Request k of round r samples with the row seed of (seed, r * 2^20 + k): reproducible,
    independent across rounds. ``share_prefill``: the requests that continue the same
    prefix (a beam's B2 samples) read it once and decode from copies of its KV cache; the
    samples are the same as without it up to float rounding between batch shapes
    (``SharedPrefill``)."""
    decoder = SharedPrefill(model) if share_prefill else model

    def propose(requests: Sequence[tuple[int, str]], round_: int) -> list[Step]:
        texts = [prompts[p] + prefix for p, prefix in requests]
        seeds = [_row_seed(seed, (round_ << 20) + k) for k in range(len(texts))]
        results = _run(decoder, tokenizer, texts, max_new_tokens=max_step_tokens,
                       batch_size=batch_size, temperature=temperature, top_p=1.0,
                       stop_strings=(step_delimiter,),
                       row_seeds=seeds if temperature > 0 else None, progress=False,
                       want_logprobs=True)
        return [Step(r.text, _drawn(r),
                     r.finish != "stop" or not r.text or is_final(r.text), r.logprob)
                for r in results]
    return propose


def lm_sampler(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int,
               temperature: float, seed: int, batch_size: int = 64) -> Sampler:
    """Whole solutions from ``model`` at ``temperature``; sample k of round r uses the row
    seed of (seed, r * 2^20 + k)."""
    def sample(indices: Sequence[int], round_: int) -> list[tuple[str, int]]:
        seeds = [_row_seed(seed, (round_ << 20) + k) for k in range(len(indices))]
        results = _run(model, tokenizer, [prompts[p] for p in indices],
                       max_new_tokens=max_new_tokens, batch_size=batch_size,
                       temperature=temperature, top_p=1.0, stop_strings=(),
                       row_seeds=seeds, progress=False, want_logprobs=False)
        return [(r.text, _drawn(r)) for r in results]
    return sample


# ---------------------------------------------------------------- scorers

def value_scorer(policy, tokenizer, format_prompt: Callable[[str], str],
                 questions: Sequence[str], batch_size: int = 32) -> StepScorer:
    """PIPA's g at each step end (``pipa.verifier.step_end_values``): ``policy`` is a
    ``PolicyWithValueHead`` with a head."""
    from pipa.verifier import step_end_values

    def score(indices: Sequence[int], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        return step_end_values(policy, tokenizer, format_prompt,
                               [(questions[p], list(s)) for p, s in zip(indices, steps)],
                               batch_size=batch_size)
    return score


_RESULT_RE = re.compile(r"=\s*(-?\d+)")


def world_oracle(questions: Sequence[str]) -> StepScorer:
    """The world's exact checker on each prefix: at the end of step k, 1.0 while steps 1..k
    all write the right intermediate value (and the answer line the right answer), else 0.0.
    What a perfect process reward model would say; it needs the world's own problems."""
    from pipa.world import extract_answer, gold_values, parse_question

    golds = [gold_values(*parse_question(q)) for q in questions]

    def score(indices: Sequence[int], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        out = []
        for p, solution in zip(indices, steps):
            gold, right, scores = golds[p], True, []
            for k, step in enumerate(solution):
                answer = extract_answer(step)
                if answer is not None:
                    right = right and int(answer) == gold[-1]
                else:
                    found = _RESULT_RE.search(step)
                    right = (right and found is not None and k + 1 < len(gold)
                             and int(found.group(1)) == gold[k + 1])
                scores.append(1.0 if right else 0.0)
            out.append(scores)
        return out
    return score


def random_scorer(seed: int, questions: Sequence[str]) -> StepScorer:
    """A score in [0, 1) hashed from (seed, question, the steps so far): the same prefix
    always scores the same, and the score says nothing about correctness."""
    def one(p: int, prefix: str) -> float:
        digest = hashlib.sha256(f"{seed}\x00{questions[p]}\x00{prefix}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2.0 ** 64

    def score(indices: Sequence[int], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        return [[one(p, "".join(s[:k + 1])) for k in range(len(s))]
                for p, s in zip(indices, steps)]
    return score


# ---------------------------------------------------------------- the modes

@dataclass
class _Beam:
    steps: tuple[str, ...]
    score: float
    done: bool
    tokens: int = 0  # drawn for this path's own steps
    logprob: float = 0.0  # the policy's, of this path's drawn tokens


def value_beam(n_problems: int, propose: Proposer, score: StepScorer | None, *,
               beam_width: int, n_samples: int, max_steps: int,
               max_tokens: int | None = None) -> list[Searched]:
    """Step-level beam search with B1 = ``beam_width`` beams and B2 = ``n_samples`` next steps
    per beam, scored by ``score`` at the new step's end; ``score=None``: by the policy's own
    log-probability of the path, summed over the proposals' drawn tokens (the paper's step
    beam; read from the proposer's forward, nothing encoded again). Each round every unfinished beam of
    every problem is extended (one batched ``propose`` call); the pool (new candidates and
    the solutions already finished) keeps its ``beam_width`` best by score, ties to the
    earlier candidate. After ``max_steps`` rounds, or when every beam is finished, the best
    finished solution is the answer (the best partial one if none finished).

    ``max_tokens``: a path whose own steps have drawn that many tokens is finished, as a
    whole-solution sample stops at its ``max_new_tokens`` (so the beam may not write longer
    solutions than the samples it is compared with). A proposal that drew only an EOS adds
    no step: its path ends as it was, with the score it had (-inf for an empty solution,
    which the scorer cannot score)."""
    if beam_width < 1 or n_samples < 1 or max_steps < 1:
        raise ValueError("value_beam: beam_width, n_samples and max_steps must be >= 1")
    beams = [[_Beam((), 0.0, False)] for _ in range(n_problems)]
    tokens = [0] * n_problems
    for round_ in range(max_steps):
        requests = [(p, beam) for p in range(n_problems) for beam in beams[p]
                    if not beam.done for _ in range(n_samples)]
        if not requests:
            break
        steps = propose([(p, "".join(beam.steps)) for p, beam in requests], round_)
        grown = [beam.steps + (step.text,) if step.text else beam.steps
                 for (_, beam), step in zip(requests, steps)]
        new = [k for k, step in enumerate(steps) if step.text and score is not None]
        scored = (dict(zip(new, score([requests[k][0] for k in new], [grown[k] for k in new])))
                  if new else {})
        pools = [[b for b in plist if b.done] for plist in beams]
        for k, ((p, beam), step, path) in enumerate(zip(requests, steps, grown)):
            tokens[p] += step.tokens
            used = beam.tokens + step.tokens
            logprob = beam.logprob + step.logprob
            if score is None:
                value = logprob if path else float("-inf")
            elif k in scored:
                value = scored[k][-1]
            else:  # nothing new to score: the path keeps its score, or has none
                value = beam.score if path else float("-inf")
            done = step.done or (max_tokens is not None and used >= max_tokens)
            pools[p].append(_Beam(path, value, done, used, logprob))
        # sorted() is stable: equal scores keep the order they were proposed in
        beams = [sorted(pool, key=lambda b: -b.score)[:beam_width] for pool in pools]
    out = []
    for p, plist in enumerate(beams):
        best = next((b for b in plist if b.done), plist[0])  # plist is sorted by score
        out.append(Searched("".join(best.steps), tokens[p]))
    return out


def sample_n(n_problems: int, sample: Sampler, n: int) -> list[list[tuple[str, int]]]:
    """``n`` whole solutions per problem (n rounds of one batched call each)."""
    if n < 1:
        raise ValueError("sample_n: n must be >= 1")
    out: list[list[tuple[str, int]]] = [[] for _ in range(n_problems)]
    for round_ in range(n):
        for p, drawn in enumerate(sample(range(n_problems), round_)):
            out[p].append(drawn)
    return out


def majority_vote(samples: Sequence[tuple[str, int]],
                  extract: Callable[[str], str | None]) -> Searched:
    """Self-consistency: the first sample whose extracted answer is the most common one
    (ties: the answer that appeared first); samples without an answer do not vote. Tokens:
    every sample's."""
    if not samples:
        raise ValueError("majority_vote: no samples")
    answers = [extract(text) for text, _ in samples]
    votes = Counter(a for a in answers if a is not None)
    tokens = sum(t for _, t in samples)
    if not votes:
        return Searched(samples[0][0], tokens)
    top = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == top)
    return Searched(samples[answers.index(winner)][0], tokens)


def step_scores(samples: Sequence[Sequence[tuple[str, int]]], score: StepScorer,
                split: Callable[[str], list[str]]) -> list[list[list[float]]]:
    """The scorer's value at every step end of every sample of every problem, in one call
    (one batch for a model's scorer)."""
    flat = [(p, split(text)) for p, drawn in enumerate(samples) for text, _ in drawn]
    values = score([p for p, _ in flat], [steps for _, steps in flat])
    out, k = [], 0
    for drawn in samples:
        out.append(values[k:k + len(drawn)])
        k += len(drawn)
    return out


REDUCTIONS = {"min": min, "last": lambda scores: scores[-1]}


def best_of_n(samples: Sequence[tuple[str, int]], values: Sequence[Sequence[float]],
              reduce: str = "min") -> Searched:
    """The sample ranked highest by ``reduce`` over its step-end ``values`` (``min``:
    Math-Shepherd's ranking; ``last``: the last step end); ties to the earlier sample, a
    sample without a step ranks last. Tokens: every sample's."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"best_of_n: reduce {reduce!r}; use one of {sorted(REDUCTIONS)}")
    if not samples or len(samples) != len(values):
        raise ValueError(f"best_of_n: {len(samples)} samples, {len(values)} score lists")
    ranked = [REDUCTIONS[reduce](v) if len(v) else float("-inf") for v in values]
    best = max(range(len(samples)), key=lambda i: (ranked[i], -i))
    return Searched(samples[best][0], sum(t for _, t in samples))
