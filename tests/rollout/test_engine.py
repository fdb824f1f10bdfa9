"""HFEngine: padded batches give an unpadded forward pass's log-probs, seeds repeat samples, and
weight updates match peft without ever drifting from the base model."""

import re

import pytest
import torch

from rollout.chat import ChatFormat
from rollout.engines.base import SamplingParams
from rollout.engines.hf import HFEngine
from rollout.policy import LoraSettings, load_policy, resolve_device, set_trainable_state, trainable_state

LORA = LoraSettings(r=4, alpha=8)


def plain_engine(tiny_model_dir, *, lora=LORA, **kwargs):
    model, tokenizer = load_policy(str(tiny_model_dir), lora=None)
    chat = ChatFormat(tokenizer)
    kwargs.setdefault("stop_token_ids", [chat.end_of_turn_id])
    return HFEngine(model, pad_token_id=tokenizer.pad_token_id, lora=lora, **kwargs), chat


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return plain_engine(tiny_model_dir, max_batch_size=2)


def prompts(chat):
    texts = ["User 1. Candidates: 3, 4", "User 22. Recent: 7 Heat. Candidates: 10, 11, 12, 13", "hi"]
    return [chat.prompt_ids([{"role": "system", "content": "s"}, {"role": "user", "content": t}]) for t in texts]


def random_adapter(tiny_model_dir, seed: int):
    """A peft model whose LoRA weights are all random (peft starts lora_B at zero: no change)."""
    peft_model, _ = load_policy(str(tiny_model_dir), lora=LORA)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    return peft_model


def weights(model) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def same_weights(model, expected: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(tensor, expected[name]) for name, tensor in model.state_dict().items())


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_logprobs_match_an_unpadded_forward_pass(engine, temperature):
    engine, chat = engine
    batch = prompts(chat)
    generations = engine.generate(batch, SamplingParams(max_new_tokens=6, temperature=temperature), seeds=[0, 1, 2])
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


def test_finish_reason_is_stop_at_a_stop_token_and_length_at_max_new_tokens(engine):
    engine, chat = engine
    prompt, greedy = prompts(chat)[:1], SamplingParams(max_new_tokens=4)
    free = engine.generate(prompt, greedy)[0]  # greedy: the same tokens from every engine below
    assert free.finish_reason == "length" and len(free.token_ids) == 4

    def stopping_at(stop_token_ids):
        return HFEngine(engine.model, pad_token_id=engine.pad_token_id, stop_token_ids=stop_token_ids)

    third = free.token_ids[2]
    stopped = stopping_at([third]).generate(prompt, greedy)[0]
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == free.token_ids[: free.token_ids.index(third) + 1]  # the stop token is kept
    assert stopped.logprobs == pytest.approx(free.logprobs[: len(stopped.token_ids)], abs=1e-5)
    elsewhere = [token for token in range(50000) if token not in free.token_ids]
    ran_out = stopping_at(elsewhere).generate(prompt, greedy)[0]
    assert ran_out.finish_reason == "length" and ran_out.token_ids == free.token_ids


def test_seeds_repeat_samples_and_leave_the_global_rng_alone(engine):
    engine, chat = engine
    batch, hot = prompts(chat), SamplingParams(max_new_tokens=8, temperature=1.0)

    def sample(seeds):
        return [generation.token_ids for generation in engine.generate(batch, hot, seeds=seeds)]

    torch.manual_seed(0)
    global_rng = torch.random.get_rng_state()
    first = sample([1, 2, 3])
    assert torch.equal(torch.random.get_rng_state(), global_rng)
    torch.manual_seed(1)  # a different global RNG does not change seeded samples
    assert sample([1, 2, 3]) == first
    assert sample([4, 5, 6]) != first
    greedy = SamplingParams(max_new_tokens=5)
    assert engine.generate(batch, greedy)[1].token_ids == engine.generate(batch, greedy)[1].token_ids
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        engine.generate(batch, hot, seeds=[1, 2])


def test_a_lora_update_gives_the_logits_of_the_peft_model(tiny_model_dir):
    peft_model = random_adapter(tiny_model_dir, seed=0)
    state = trainable_state(peft_model)
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" in state
    engine, chat = plain_engine(tiny_model_dir)
    ids = torch.tensor([prompt[:12] for prompt in prompts(chat)[:2]])
    with torch.no_grad():
        base_logits = engine.model(input_ids=ids).logits
        engine.update_weights(state)
        logits = engine.model(input_ids=ids).logits
        expected = peft_model(input_ids=ids).logits
    assert not torch.allclose(base_logits, expected, atol=1e-2)  # the adapter does change the policy
    assert torch.allclose(logits, expected, atol=1e-4)


def test_lora_updates_never_drift_from_the_base_weights(tiny_model_dir):
    state_a = trainable_state(random_adapter(tiny_model_dir, seed=1))
    state_b = trainable_state(random_adapter(tiny_model_dir, seed=2))
    engine, _ = plain_engine(tiny_model_dir)
    base = weights(engine.model)
    engine.update_weights(state_a)
    first_a = weights(engine.model)
    for _ in range(100):
        engine.update_weights(state_a)
        engine.update_weights(state_b)
    engine.update_weights({})
    assert same_weights(engine.model, base)
    engine.update_weights(state_a)
    assert same_weights(engine.model, first_a)
    engine.update_weights({key: value for key, value in state_b.items() if ".q_proj." in key})
    changed = {name for name, tensor in engine.model.state_dict().items() if not torch.equal(tensor, base[name])}
    assert changed and all(".q_proj." in name for name in changed)  # the modules a state leaves out revert


def test_a_full_update_replaces_the_base_model(tiny_model_dir):
    engine, _ = plain_engine(tiny_model_dir, lora=None)
    full = {name: tensor + 0.01 for name, tensor in engine.model.state_dict().items()}
    del full["lm_head.weight"]  # tied to the embeddings; a saved model.safetensors leaves it out too
    engine.update_weights(full)
    assert all(torch.equal(engine.model.state_dict()[name], tensor) for name, tensor in full.items())
    assert torch.equal(engine.model.lm_head.weight, full["model.embed_tokens.weight"])
    with pytest.raises(ValueError, match="full weight update replaced the base model"):
        engine.update_weights({})


def test_weights_that_do_not_fit_are_refused_by_name_and_change_nothing(tiny_model_dir):
    engine, _ = plain_engine(tiny_model_dir)
    lora = trainable_state(random_adapter(tiny_model_dir, seed=3))
    full = weights(engine.model)
    q_a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    q_b = q_a.replace("lora_A", "lora_B")
    nowhere = q_a.replace("layers.0", "layers.9")
    refused = [  # (the key the error must name, a state that does not fit)
        (nowhere, {**lora, nowhere: lora[q_a], nowhere.replace("lora_A", "lora_B"): lora[q_b]}),
        (q_a, {**lora, q_a: lora[q_a][:, :-1]}),
        (q_b, {key: value for key, value in lora.items() if key != q_a}),
        ("model.norm.weight", {**lora, "model.norm.weight": full["model.norm.weight"]}),
        ("not.a.weight", {**full, "not.a.weight": torch.zeros(1)}),
        ("model.layers.1.mlp.up_proj.weight",
         {key: value for key, value in full.items() if key != "model.layers.1.mlp.up_proj.weight"}),
        ("model.norm.weight", {**full, "model.norm.weight": torch.zeros(3)}),
    ]
    before = weights(engine.model)
    for key, state in refused:
        with pytest.raises(ValueError, match=re.escape(key)):
            engine.update_weights(state)
        assert same_weights(engine.model, before)
    engine_without_lora, _ = plain_engine(tiny_model_dir, lora=None)
    with pytest.raises(ValueError, match="without lora=LoraSettings"):
        engine_without_lora.update_weights(lora)
    with pytest.raises(TypeError, match="not a peft model"):
        HFEngine(random_adapter(tiny_model_dir, seed=4), pad_token_id=0, stop_token_ids=[0])


def test_release_memory_keeps_the_engine_working(engine):
    engine, chat = engine
    greedy = SamplingParams(max_new_tokens=3)
    before = engine.generate(prompts(chat), greedy)
    engine.release_memory()
    assert engine.generate(prompts(chat), greedy) == before


@pytest.mark.parametrize("lora", [LORA, None], ids=["lora", "full"])
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
