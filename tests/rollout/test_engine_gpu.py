"""The CUDA path of the HF engine: static KV cache, compiled decoding (skipped without a GPU)."""

import pytest
import torch

from rollout.chat import ChatFormat
from rollout.engines.hf import HFEngine, SamplingParams
from rollout.models import load_tokenizer, resolve_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_static_cache_generation_on_cuda_matches_an_eager_forward():
    from transformers import AutoModelForCausalLM

    tiny_model_dir = resolve_model("tiny-random")
    tokenizer = load_tokenizer(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).to("cuda")
    chat = ChatFormat(tokenizer)
    engine = HFEngine(model, tokenizer, stop_token_ids=[chat.end_of_turn_id])
    assert engine.static_cache
    prompts = [chat.prompt_ids([{"role": "user", "content": "x" * n}]) for n in (3, 40, 11)]
    generations = engine.generate(prompts, SamplingParams(max_new_tokens=12))
    for prompt, generation in zip(prompts, generations):
        assert len(generation.token_ids) >= 1
        ids = torch.tensor([prompt + generation.token_ids], device="cuda")
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
        expected = torch.log_softmax(logits, -1).gather(1, ids[0, len(prompt):, None])[:, 0].cpu()
        assert torch.allclose(torch.tensor(generation.logprobs), expected, atol=0.1)
