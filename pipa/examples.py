"""Labelled records -> tokenized ``Example``s, the sequences every training loop batches.

Kept apart from ``pipa/training.py`` so that the loop itself (which pretraining also runs)
does not import the label rules: the base models' stage then does not depend on
``pipa/labels.py`` (``pipa/code_manifest.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from pipa.labels import step_index, token_labels
from pipa.models import encode_example
from pipa.training import Example


def build_examples(records: list[dict], tokenizer, format_prompt: Callable[[str], str],
                   max_len: int) -> tuple[list[Example], dict[str, int]]:
    """Tokenize labelled records; sequences longer than ``max_len`` are skipped and counted."""
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
    return examples, skipped
