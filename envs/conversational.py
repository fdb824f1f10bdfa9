"""ConversationalRec-v0: find a simulated user's hidden target by conversation (MACRS's setting).

The agent speaks one dialogue act a turn, the user simulator answers, and the candidate set is
explicit state that ``narrow`` shrinks and rejections prune. Success is the user accepting a
recommendation within the turn budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from envs.config import DEFAULTS
from envs.parsing import distinct_ids
from envs.simulators import DIALOGUE_ACTS, AgentMove, Dialogue, RuleBasedSimulator, UserSimulator
from envs.tools import InteractionGraph
from envs.turns import capped, episode_task, read_action, text_spaces, whitespace_tokens
from envs.types import Catalog, DialogueOutcome, DialogueTask, ParsedAction, RankingTask

CONVERSATION_TAGS = ("plan", "reflection", "act", "say", "recommend")
"""Tags an agent turn may hold: one <act>, one <say>, ids in <recommend>, optional thinking."""
MAX_TURNS = 8
"""Default agent turns before the conversation is cut (MACRS's budget)."""
MAX_EPISODE_TOKENS = 4096
"""Default token budget: prompt, actions and replies together."""
_SHOWN_ID_CHARS = 40
"""Characters of an unknown id quoted back in an error."""

INSTRUCTIONS = (
    "You help a user pick one item by conversation. The user wants one of the candidates and will not say "
    "which. Each turn write <act>ACT</act><say>what you tell the user</say>, where ACT is one of: "
    "ask_preference (ask what they like), ask_constraint (ask about era or other limits), "
    "narrow (keep only some candidates: add <recommend>ids to keep</recommend>), "
    "recommend (propose up to {max_recommend} candidate(s): add <recommend>id</recommend> and say why), "
    "clarify_rejection (ask why they turned the last one down), wrap_up (end the chat). "
    "You may think first in <plan>...</plan>. You have {max_turns} turns."
)


class ConversationalRecEnv(gym.Env):
    """A text environment over DialogueTasks with a user simulator.

    ``reset`` returns the user, the candidates with their attributes, and the user's opening; each
    ``step`` takes one agent turn and returns the user's reply (``info["observation_role"] ==
    "user"``) followed by the current candidate set and the turns left. A malformed turn is answered
    by an error observation (role ``env``) and ``malformed_reward``, never an exception, and still
    costs a turn. Recommended ids the user rejects leave the candidate set.

    Step reward: ``turn_reward`` every turn, plus ``accept_reward`` on the turn the user accepts,
    plus ``malformed_reward`` on a turn with any error. The episode ends (``terminated``) when the
    user accepts, leaves (patience spent) or the agent wraps up; it is cut (``truncated``) when the
    turn or token budget runs out. Either way ``info["outcome"]`` is a ``DialogueOutcome``.

    ``info`` of a step: ``turn``, ``action`` (the ParsedAction), ``act`` (the act carried out, None
    for an unusable turn), ``errors``, ``observation_role``, ``format_valid`` (every turn so far
    well-formed), ``outcome``, ``ended_by`` (``accepted``, ``user_left``, ``wrap_up``,
    ``turn_budget``, ``token_budget``; None while it goes on), ``candidate_item_ids`` (the current
    set) and ``tokens``. ``reset``'s info adds ``task``, ``system_prompt`` and ``max_turns``.

    Args:
        catalog: the items the ids refer to (titles, years and genres are shown and simulated from).
        graph: the interaction graph; this env's rules do not read it, it is taken so that every env
            is built by the same ``make_env(env_id, catalog=, graph=, tasks=)``.
        tasks: dialogue tasks ``reset`` draws from when ``options`` names none.
        simulator: the user (default ``RuleBasedSimulator()``).
        max_turns: agent turns before the conversation is cut.
        max_episode_tokens: prompt, actions and replies together, in ``count_tokens``'s tokens.
        history_in_prompt: recent history items shown in the first prompt.
        max_recommend: ids one ``recommend`` may carry (more are dropped, with an error).
        turn_reward: reward of every agent turn (a small cost, so shorter dialogues score higher).
        accept_reward: added on the turn the user accepts.
        malformed_reward: added on a turn with any error.
        count_tokens: token counter for the budget.
        env_id: the registered id.
    """

    metadata = {"render_modes": []}
    task_kind = DialogueTask.kind

    def __init__(
        self,
        catalog: Catalog,
        graph: InteractionGraph | None = None,
        tasks: Sequence[DialogueTask] = (),
        *,
        simulator: UserSimulator | None = None,
        signals: Mapping[str, Any] | None = None,
        tool_names: Sequence[str] | None = None,
        max_turns: int = MAX_TURNS,
        max_episode_tokens: int = MAX_EPISODE_TOKENS,
        history_in_prompt: int = DEFAULTS.history_in_prompt,
        max_recommend: int = 1,
        turn_reward: float = -0.05,
        accept_reward: float = 1.0,
        malformed_reward: float = -0.2,
        count_tokens: Callable[[str], int] = whitespace_tokens,
        env_id: str = "ConversationalRec-v0",
    ):
        if max_turns < 1 or max_recommend < 1:
            raise ValueError(f"max_turns and max_recommend must be >= 1, got {max_turns} and {max_recommend}")
        if tool_names:  # ``signals`` and ``tool_names`` come with every env's arguments; this one has no tools
            raise ValueError(f"{env_id} has no tools, got tool names {list(tool_names)}: set env.tools=[]")
        self.catalog = catalog
        self.graph = graph
        self.tasks = list(tasks)
        self.simulator = simulator if simulator is not None else RuleBasedSimulator()
        self.max_turns = max_turns
        self.max_episode_tokens = max_episode_tokens
        self.history_in_prompt = history_in_prompt
        self.max_recommend = max_recommend
        self.turn_reward = turn_reward
        self.accept_reward = accept_reward
        self.malformed_reward = malformed_reward
        self.count_tokens = count_tokens
        self.env_id = env_id
        self.system_prompt = INSTRUCTIONS.format(max_recommend=max_recommend, max_turns=max_turns)
        self.observation_space, self.action_space = text_spaces(catalog)
        self._dialogue: Dialogue | None = None

    # Gymnasium API ---------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        if isinstance((options or {}).get("task"), RankingTask):
            raise ValueError(f"{self.env_id} plays dialogue tasks: convert ranking tasks with "
                             "envs.conversational.dialogue_task")
        task = episode_task(self, options, DialogueTask)
        unknown = [i for i in (*task.candidate_item_ids, task.target_item_id) if i not in self.catalog.items]
        if unknown:
            raise ValueError(f"task {task.task_id}: item ids {unknown[:5]} are not in catalog {self.catalog.name!r}")
        if task.target_item_id not in task.candidate_item_ids:
            raise ValueError(f"task {task.task_id}: the target {task.target_item_id} is not among its candidates")
        # The simulator's draws come from the env's seeded generator, so reset(seed=s) replays a dialogue.
        rng = np.random.default_rng(int(self.np_random.integers(2**62)))
        self._dialogue = Dialogue(task, self.catalog, rng, list(task.candidate_item_ids))
        opening = task.opening or self.simulator.opening(self._dialogue)
        self._dialogue.replies.append(opening)
        self._turns = 0
        self._recommended: list[str] = []
        self._format_clean = True
        self._done = False
        prompt = f"{self._task_prompt(task)}\nUser: {opening}\nTurns left: {self.max_turns}."
        self._tokens = self.count_tokens(self.system_prompt) + self.count_tokens(prompt)
        info = {"task": task, "system_prompt": self.system_prompt, "tokens": self._tokens,
                "candidate_item_ids": tuple(self._dialogue.candidate_item_ids), "max_turns": self.max_turns}
        return prompt, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self._dialogue is None or self._done:
            raise RuntimeError("call reset() before step() (the episode is over or never started)")
        dialogue = self._dialogue
        self._turns += 1
        action, parsed, errors = read_action(action, tags=CONVERSATION_TAGS)
        move = self._move(parsed, errors)
        reward, accepted, terminated, truncated, ended_by = self.turn_reward, False, False, False, None
        if move is None:
            detail = "; ".join(capped(errors))
            observation = (f"Error: {detail}. Write <act>{'|'.join(DIALOGUE_ACTS)}</act><say>...</say>; "
                           "recommend and narrow carry <recommend>ids</recommend>.")
            role = "env"
        else:
            dialogue.moves.append(move)
            reply = self.simulator.reply(dialogue, move)
            dialogue.replies.append(reply.text)
            if move.act == "recommend":
                self._recommended += move.item_ids
                if not reply.accepted:
                    dialogue.rejected += move.item_ids
                    dialogue.candidate_item_ids = [i for i in dialogue.candidate_item_ids if i not in move.item_ids]
            elif move.act == "narrow" and move.item_ids:
                dialogue.candidate_item_ids = [i for i in dialogue.candidate_item_ids if i in move.item_ids]
            accepted = reply.accepted
            terminated = reply.accepted or reply.left
            ended_by = "accepted" if accepted else ("wrap_up" if move.act == "wrap_up" else "user_left")
            observation, role = f"User: {reply.text}", "user"
        self._tokens += self.count_tokens(action)
        if not terminated:
            ended_by = None
            observation += f"\n{self._state_line()}"
            self._tokens += self.count_tokens(observation)
            if self._turns >= self.max_turns:
                truncated, ended_by = True, "turn_budget"
            elif self._tokens >= self.max_episode_tokens:
                truncated, ended_by = True, "token_budget"
        if accepted:
            reward += self.accept_reward
        if errors:
            reward += self.malformed_reward
        self._format_clean = self._format_clean and not errors
        self._done = terminated or truncated
        outcome = None
        if self._done:
            outcome = DialogueOutcome(accepted=accepted, accepted_at=self._turns if accepted else None,
                                      turns=self._turns, recommended=tuple(self._recommended))
        info = {
            "turn": self._turns,
            "action": parsed,
            "act": None if move is None else move.act,
            "errors": capped(errors),
            "observation_role": role,
            "format_valid": self._format_clean,
            "outcome": outcome,
            "ended_by": ended_by,
            "candidate_item_ids": tuple(dialogue.candidate_item_ids),
            "tokens": self._tokens,
        }
        return observation, float(reward), terminated, truncated, info

    # Internals -------------------------------------------------------------------------------

    def _move(self, parsed: ParsedAction, errors: list[str]) -> AgentMove | None:
        """The turn as the user hears it, or None when nothing usable was said (errors explain)."""
        act = parsed.act
        if act is None:
            if parsed.recommend is not None:
                errors.append(f"no <act> tag: name one of {', '.join(DIALOGUE_ACTS)}")
            return None
        if act not in DIALOGUE_ACTS:
            errors.append(f"unknown act '{act[:_SHOWN_ID_CHARS]}'; use one of {', '.join(DIALOGUE_ACTS)}")
            return None
        if not parsed.utterance:
            errors.append("no <say>: every turn says something to the user")
        item_ids: list[str] = []
        if act in ("recommend", "narrow") and parsed.recommend is not None:
            item_ids = self._current_ids(parsed.recommend, errors)
            if act == "recommend" and len(item_ids) > self.max_recommend:
                errors.append(f"{len(item_ids)} ids recommended: only the first {self.max_recommend} were")
                item_ids = item_ids[: self.max_recommend]
            if not item_ids:
                return None
        elif act == "recommend":
            errors.append("act recommend needs <recommend>id</recommend>")
            return None
        elif parsed.recommend is not None:
            errors.append(f"<recommend> ids go with act recommend or narrow; they were ignored with {act}")
        return AgentMove(act, parsed.utterance or "", tuple(item_ids))

    def _current_ids(self, item_ids: list[str], errors: list[str]) -> list[str]:
        kept, wrong = distinct_ids(item_ids, self._dialogue.candidate_item_ids,
                                   outside="id '{}' is not in the current candidate set", twice="id '{}' is listed twice")
        errors.extend(wrong)
        return kept

    def _task_prompt(self, task: DialogueTask) -> str:
        recent = task.history[-self.history_in_prompt:] if self.history_in_prompt > 0 else ()
        recent_text = "; ".join(f"{i} {self._title(i)}" for i in recent) or "none"
        lines = [f"User {task.user_id}. Recent: {recent_text}.", f"Candidates ({len(task.candidate_item_ids)}):"]
        for item_id in task.candidate_item_ids:
            item = self.catalog.items[item_id]
            details = ", ".join(part for part in (item.year, "|".join(item.genres)) if part)
            lines.append(f"{item_id} {self._title(item_id)}" + (f" ({details})" if details else ""))
        return "\n".join(lines)

    def _title(self, item_id: str) -> str:
        item = self.catalog.items.get(item_id)
        return item.title[:40] if item else "?"

    def _state_line(self) -> str:
        current = self._dialogue.candidate_item_ids
        return (f"Candidates ({len(current)}): {', '.join(current) or 'none'}\n"
                f"Turns left: {self.max_turns - self._turns}.")


def dialogue_task(task: RankingTask, *, opening: str = "") -> DialogueTask:
    """The conversation over a ranking task's candidates, with its target as the user's hidden wish."""
    return DialogueTask(task_id=task.task_id, user_id=task.user_id, history=task.history,
                        candidate_item_ids=task.candidate_item_ids, target_item_id=task.target_item_id,
                        opening=opening)


# Metrics ---------------------------------------------------------------------------------------


def success_rate(outcomes: Sequence[DialogueOutcome]) -> float:
    """Share of conversations the user accepted a recommendation in.

    >>> success_rate([DialogueOutcome(accepted=True, accepted_at=2, turns=2), DialogueOutcome(turns=8)])
    0.5
    """
    return sum(outcome.accepted for outcome in outcomes) / len(outcomes) if outcomes else 0.0


def turns_to_acceptance(outcomes: Sequence[DialogueOutcome]) -> float:
    """Mean agent turn of acceptance over the accepted conversations (nan when none was).

    >>> turns_to_acceptance([DialogueOutcome(accepted=True, accepted_at=2, turns=2),
    ...                      DialogueOutcome(accepted=True, accepted_at=5, turns=5), DialogueOutcome(turns=8)])
    3.5
    """
    turns = [outcome.accepted_at for outcome in outcomes if outcome.accepted and outcome.accepted_at is not None]
    return sum(turns) / len(turns) if turns else float("nan")


def recall_at_k(outcomes: Sequence[DialogueOutcome], target_item_ids: Sequence[str], k: int) -> float:
    """Share of conversations whose first ``k`` recommended ids hold the target.

    >>> recall_at_k([DialogueOutcome(recommended=("3", "7")), DialogueOutcome(recommended=("1",))], ["7", "2"], 2)
    0.5
    """
    if len(outcomes) != len(target_item_ids):
        raise ValueError(f"{len(outcomes)} outcomes but {len(target_item_ids)} targets")
    hits = sum(target in outcome.recommended[:k] for outcome, target in zip(outcomes, target_item_ids))
    return hits / len(outcomes) if outcomes else 0.0


def dialogue_metrics(outcomes: Sequence[DialogueOutcome], target_item_ids: Sequence[str], *,
                     ks: Sequence[int] = (1, 3, 5)) -> dict[str, float]:
    """``crs/success``, ``crs/turns_to_accept`` and ``crs/recall@k`` over conversations."""
    metrics = {"crs/success": success_rate(outcomes), "crs/turns_to_accept": turns_to_acceptance(outcomes)}
    metrics.update({f"crs/recall@{k}": recall_at_k(outcomes, target_item_ids, k) for k in ks})
    return metrics
