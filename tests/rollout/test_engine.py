"""HFEngine: left-padded batches give the same tokens' log-probs as an unpadded forward pass."""

import pytest
import torch

from rollout.chat import ChatFormat
from rollout.engines.hf import HFEngine, SamplingParams
from rollout.policy import LoraSettings, load_policy, resolve_device, set_trainable_state, trainable_state


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    model, tokenizer = load_policy(str(tiny_model_dir), lora=None)
    chat = ChatFormat(tokenizer)
    return HFEngine(model, tokenizer, stop_token_ids=[chat.end_of_turn_id], max_batch_size=2), chat


def prompts(chat):
    texts = ["User 1. Candidates: 3, 4", "User 22. Recent: 7 Heat. Candidates: 10, 11, 12, 13", "hi"]
    return [chat.prompt_ids([{"role": "system", "content": "s"}, {"role": "user", "content": t}]) for t in texts]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_logprobs_match_an_unpadded_forward_pass(engine, temperature):
    engine, chat = engine
    batch = prompts(chat)
    generations = engine.generate(batch, SamplingParams(max_new_tokens=6, temperature=temperature), seed=0)
    assert len(generations) == len(batch)
    for prompt, generation in zip(batch, generations):
        assert 0 < len(generation.token_ids) <= 6 and len(generation.logprobs) == len(generation.token_ids)
        ids = torch.tensor([prompt + generation.token_ids])
        with torch.no_grad():
            logits = engine.model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
        if temperature > 0:
            logits = logits / temperature
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(generation.token_ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(generation.logprobs), expected, atol=2e-3)


def test_generation_stops_at_end_of_turn(engine):
    engine, chat = engine
    engine_with_stop_everywhere = HFEngine(engine.model, engine.tokenizer, stop_token_ids=list(range(50000)))
    generation = engine_with_stop_everywhere.generate(prompts(chat)[:1], SamplingParams(max_new_tokens=5))[0]
    assert generation.finished and len(generation.token_ids) == 1


def test_greedy_is_deterministic_and_sampling_is_seeded(engine):
    engine, chat = engine
    greedy = SamplingParams(max_new_tokens=5)
    assert engine.generate(prompts(chat), greedy)[1].token_ids == engine.generate(prompts(chat), greedy)[1].token_ids
    hot = SamplingParams(max_new_tokens=5, temperature=1.0)
    first = [g.token_ids for g in engine.generate(prompts(chat), hot, seed=3)]
    assert first == [g.token_ids for g in engine.generate(prompts(chat), hot, seed=3)]


@pytest.mark.parametrize("lora", [LoraSettings(r=4, alpha=8), None], ids=["lora", "full"])
def test_trainable_state_moves_between_policies(tiny_model_dir, lora):
    source, _ = load_policy(str(tiny_model_dir), lora=lora)
    target, _ = load_policy(str(tiny_model_dir), lora=lora)
    state = trainable_state(source)
    assert state and all("lora" in k for k in state) == (lora is not None)
    changed = {k: v + 1.0 for k, v in state.items()}
    set_trainable_state(target, changed)
    assert all(torch.equal(trainable_state(target)[k], changed[k]) for k in changed)
    with pytest.raises(ValueError, match="unexpected"):
        set_trainable_state(target, {**changed, "not.a.weight": torch.zeros(1)})


def test_devices_are_resolved_or_refused():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA GPU; use device=cpu"):
            resolve_device("cuda")
