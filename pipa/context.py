"""Each model's context limit applied where the labelled data is built, so that the label
stages' stats are what alignment trains on (a pair never loses its partner later).

Its own module, imported by the label stages only: the SFT, prior and alignment stages'
code manifests do not depend on it (``pipa/code_manifest.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipa.alphamath import Solution
from pipa.config_types import Config
from pipa.models import encode_example


def context_check(cfg: Config, base_models: str | Path) -> Callable[[Solution], list[str]]:
    """``exceeds(solution)``: the models of ``cfg.models`` whose context (``arch.max_len``
    tokens) the solution's prompt + response + EOS does not fit, tokenized by each model's
    own tokenizer (``<base_models>/<model>``) and prompt format, as training tokenizes it
    (``pipa.examples.build_examples``). The labels stages drop such solutions before pairing
    (``pipa.labels.build_setting``), so no pair loses a partner at training time."""
    from pipa.model_io import prompt_formatter, tokenizer_of

    checks = []
    for model in cfg.models:
        tok = tokenizer_of(Path(base_models) / model)
        checks.append((model, tok, prompt_formatter(cfg, model, tok),
                       cfg.family(model).arch.max_len))

    def exceeds(solution: Solution) -> list[str]:
        over = []
        for model, tok, fmt, max_len in checks:
            prompt_ids, response_ids, _ = encode_example(tok, fmt(solution.question),
                                                         "".join(solution.steps))
            if len(prompt_ids) + len(response_ids) > max_len:
                over.append(model)
        return over

    return exceeds
