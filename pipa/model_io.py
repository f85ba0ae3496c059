"""The model folders the stages write and read: a policy (full weights or a LoRA adapter
naming its base), its tokenizer exactly as trained, LoRA wrapping, and the prompt format of
its family."""

from __future__ import annotations

import json
from pathlib import Path

from pipa.config_types import Config, Lora


def prompt_formatter(cfg: Config, model_name: str, tokenizer=None):
    """How a question becomes the prompt text: the world's format or the model's chat template."""
    if cfg.family(model_name).prompt_format == "chat":
        def chat(question: str) -> str:
            messages = [{"role": "user", "content": question}]
            return tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                 tokenize=False)
        return chat
    from pipa.world import format_prompt
    return format_prompt


def load_policy_model(cfg: Config, model_name: str, folder: str | Path,
                      on_device: bool = False):
    """Tokenizer and model from a stage output folder (full weights or LoRA adapter).

    ``on_device``: moved to ``runtime.device`` (the one-process stages that only run the
    model: sampling, prior log-probs, evaluation). Training stages leave it where it is
    loaded; ``accelerate`` places it on each process's device.
    """
    from pipa.hardware import resolve_device
    from pipa.models import load_model

    folder = Path(folder)
    meta_path = folder / "pipa_model.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    dtype = cfg.runtime.dtype
    if meta.get("adapter"):
        from peft import PeftModel

        base = load_model(meta["base"], dtype)
        model = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
        tok = tokenizer_of(meta["base"])
    else:
        model = load_model(folder, dtype)
        tok = tokenizer_of(folder)
    if on_device:
        model.to(resolve_device(cfg.runtime.device))
    return tok, model


def tokenizer_of(folder: str | Path):
    """The tokenizer saved in a model folder, exactly as it was trained.

    AutoTokenizer picks the class from the model's ``model_type``: for a Qwen2 config it
    rebuilds our world tokenizer with Qwen2's byte-level pre-tokenizer, silently dropping
    every space and newline. A tokenizer we trained ourselves (saved as the generic
    ``TokenizersBackend``/``PreTrainedTokenizerFast``) is loaded through that generic class;
    hub tokenizers keep going through AutoTokenizer.
    """
    from pipa.models import load_tokenizer

    config = Path(folder) / "tokenizer_config.json"
    saved_class = json.loads(config.read_text()).get("tokenizer_class") if config.exists() else None
    if saved_class in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    return load_tokenizer(folder)


def with_lora(model, lora: Lora):
    """``model`` wrapped by peft with LoRA adapters from a params ``lora`` section."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(
        r=int(lora.r), lora_alpha=int(lora.alpha), lora_dropout=float(lora.dropout),
        target_modules=list(lora.target_modules)))
