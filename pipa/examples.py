"""Labelled records -> tokenized ``Example``s, the sequences every training loop batches.

Kept apart from ``pipa/training.py`` so that the loop itself (which pretraining also runs)
does not import the label rules: the base models' stage then does not depend on
``pipa/labels.py`` (``pipa/code_manifest.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from pipa.batching import Example
from pipa.labels import step_index, token_labels
from pipa.models import encode_example


def build_examples(records: list[dict], tokenizer, format_prompt: Callable[[str], str],
                   max_len: int) -> tuple[list[Example], dict[str, int]]:
    """Tokenize labelled records; sequences longer than ``max_len`` are skipped and counted.

    ``skipped``: ``too_long``, and ``pair_partner_too_long``: the kept records of a pair whose
    other half was too long (paired algorithms cannot train on them; the decoupled
    algorithms still read them as single records)."""
    examples, skipped = [], {"too_long": 0}
    for rec in records:
        prompt_ids, response_ids, offsets = encode_example(
            tokenizer, format_prompt(rec["question"]), "".join(rec["steps"])
        )
        if len(prompt_ids) + len(response_ids) > max_len:
            skipped["too_long"] += 1
            continue
        examples.append(
            Example(
                rid=rec["rid"],
                sid=rec["sid"],
                prompt_ids=prompt_ids,
                response_ids=response_ids,
                token_labels=token_labels(rec["steps"], rec["step_labels"], offsets),
                step_ids=step_index(rec["steps"], offsets),
                correct=bool(rec["correct"]),
                pair=rec.get("pair"),
            )
        )
    pairs = Counter(r.get("pair") for r in records if r.get("pair") is not None)
    kept = Counter(e.pair for e in examples if e.pair is not None)
    skipped["pair_partner_too_long"] = sum(1 for p, n in kept.items() if n < pairs[p])
    return examples, skipped
