"""The CUDA path of the HF engine: static KV cache, compiled decoding (skipped without a GPU)."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from rollout.chat import ChatFormat
from rollout.engines.base import SamplingParams
from rollout.engines.hf import HFEngine
from rollout.models import load_tokenizer
from rollout.policy import LoraSettings, load_policy, trainable_state

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

LORA = LoraSettings(r=4, alpha=8)


@pytest.fixture
def cuda_engine(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).to("cuda")
    chat = ChatFormat(tokenizer)
    engine = HFEngine(model, pad_token_id=tokenizer.pad_token_id, stop_token_ids=[chat.end_of_turn_id], lora=LORA)
    prompts = [chat.prompt_ids([{"role": "user", "content": "x" * n}]) for n in (3, 40, 11)]
    return engine, prompts


def assert_logprobs_match_an_eager_forward(model, prompts, generations):
    for prompt, generation in zip(prompts, generations):
        assert len(generation.token_ids) >= 1
        ids = torch.tensor([prompt + generation.token_ids], device="cuda")
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
        expected = torch.log_softmax(logits, -1).gather(1, ids[0, len(prompt):, None])[:, 0].cpu()
        assert torch.allclose(torch.tensor(generation.logprobs), expected, atol=0.1)


def test_static_cache_generation_on_cuda_matches_an_eager_forward(cuda_engine):
    engine, prompts = cuda_engine
    assert engine.static_cache
    generations = engine.generate(prompts, SamplingParams(max_new_tokens=12))
    assert_logprobs_match_an_eager_forward(engine.model, prompts, generations)


def test_weight_updates_reach_compiled_decoding_and_restore_the_base(cuda_engine, tiny_model_dir):
    engine, prompts = cuda_engine
    greedy = SamplingParams(max_new_tokens=12)
    engine.generate(prompts, greedy)  # compile and capture with the base weights
    base = {name: tensor.clone() for name, tensor in engine.model.state_dict().items()}
    peft_model, _ = load_policy(str(tiny_model_dir), lora=LORA)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                parameter.copy_(0.05 * torch.randn_like(parameter))
    engine.update_weights(trainable_state(peft_model))
    assert_logprobs_match_an_eager_forward(engine.model, prompts, engine.generate(prompts, greedy))
    engine.update_weights({})
    assert all(torch.equal(tensor, base[name]) for name, tensor in engine.model.state_dict().items())
    engine.release_memory()
    assert_logprobs_match_an_eager_forward(engine.model, prompts, engine.generate(prompts, greedy))


def test_compiled_decoding_runs_from_any_thread(cuda_engine):
    """torch asserts when a thread records CUDA graphs after another thread did (pytorch/pytorch#123177):
    a server's batching thread and the main thread both decode, at shapes the other has not seen."""
    engine, prompts = cuda_engine
    greedy = SamplingParams(max_new_tokens=6)
    with ThreadPoolExecutor(max_workers=1) as other_thread:
        from_a_thread = other_thread.submit(engine.generate, prompts[:1], greedy).result()
    from_the_main_thread = engine.generate(prompts, greedy)  # another batch size: new graphs
    assert_logprobs_match_an_eager_forward(engine.model, prompts, from_the_main_thread)
    assert_logprobs_match_an_eager_forward(engine.model, prompts[:1], from_a_thread)
