"""Conversational-recommendation policies without an LLM: a rule-based one and a random one.

Both are Agents (``rollout.episode.Agent``) for ``ConversationalRec-v0``; they speak text only, so
their episodes carry no tokens. The rule-based policy plays MACRS's acts by hand: ask what the user
likes and what limits there are, keep the candidates consistent with every answer, narrow the set
to them, and recommend from what remains. It is the bar an RL-trained conversational agent has to
clear, and a source of well-formed dialogues for SFT.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from envs.simulators import DIALOGUE_ACTS
from envs.simulators.facts import Fact, genre_vocabulary, holds_for, read_facts
from envs.types import Catalog, DialogueTask
from rollout.episode import Episode, TextAgent

ASKS = {"ask_preference": "What are you in the mood for?",
        "ask_constraint": "Any limits, like when it came out?"}


class RuleBasedCRSPolicy(TextAgent):
    """Asks, filters the candidates by the user's answers, narrows, then recommends.

    Each turn it reads every user reply so far (``envs.simulators.facts.read_facts``) and keeps the
    current candidates consistent with all of them. It asks while more than one remains and turns
    are left (an ask kind is dropped after ``max_unproductive`` answers that ruled nothing out),
    narrows the set once to what remains, and recommends the remaining item whose genres the user's
    history holds most.

    Args:
        catalog: the items the ids refer to.
        reserve_turns: turns kept for narrowing and recommending once asking stops.
        max_unproductive: answers that ruled out no candidate before an ask kind is dropped.
    """

    role = "crs_rules"

    def __init__(self, catalog: Catalog, *, reserve_turns: int = 3, max_unproductive: int = 2):
        self.catalog = catalog
        self.genres = genre_vocabulary(catalog)
        self.reserve_turns = reserve_turns
        self.max_unproductive = max_unproductive

    def turn(self, episode: Episode) -> str:
        task = episode.task
        if not isinstance(task, DialogueTask):
            raise ValueError(f"the conversational policy plays dialogue tasks, not {type(task).__name__}")
        current = list(episode.infos[-1]["candidate_item_ids"])
        turns_left = episode.infos[0]["max_turns"] - (len(episode.infos) - 1)
        facts, unproductive, asked, narrowed = self._read(episode)
        remaining = self.consistent(current, facts)
        askable = [act for act in ASKS if unproductive[act] < self.max_unproductive]
        if len(remaining) > 1 and askable and turns_left > self.reserve_turns:
            act = min(askable, key=lambda a: asked[a])  # alternate, preference first
            return f"<act>{act}</act><say>{ASKS[act]}</say>"
        if 1 < len(remaining) < len(current) and not narrowed and turns_left >= 3:
            return (f"<act>narrow</act><say>Let me keep the {len(remaining)} that fit what you said.</say>"
                    f"<recommend>{', '.join(remaining)}</recommend>")
        if not current:
            return "<act>wrap_up</act><say>Sorry, I have nothing left to suggest.</say>"
        pick = self.best(task, remaining)
        item = self.catalog.items[pick]
        why = ", ".join(part for part in (item.year, " and ".join(item.genres)) if part)
        say = f"Try {item.title}" + (f" ({why})." if why else ".")
        return f"<act>recommend</act><say>{say}</say><recommend>{pick}</recommend>"

    def consistent(self, item_ids: Sequence[str], facts: Sequence[Fact]) -> list[str]:
        """The items every fact holds for; if none (a misheard answer), those most facts hold for."""
        score = {i: sum(holds_for(f, self.catalog.items[i]) for f in facts) for i in item_ids}
        best = max(score.values(), default=0)
        return [i for i in item_ids if score[i] == best]

    def best(self, task: DialogueTask, item_ids: Sequence[str]) -> str:
        """The item whose genres the user's history holds most (ties: the order shown)."""
        seen = Counter(g for i in task.history if i in self.catalog.items for g in self.catalog.items[i].genres)
        return max(item_ids, key=lambda i: sum(seen[g] for g in self.catalog.items[i].genres))

    def _read(self, episode: Episode) -> tuple[list[Fact], Counter, Counter, bool]:
        """Facts the user stated; per ask kind, answers that ruled nothing out and times asked; and
        whether the policy already narrowed."""
        facts: list[Fact] = []
        unproductive: Counter = Counter()
        asked: Counter = Counter()
        narrowed = False
        turns = episode.trajectory.turns
        for index, turn in enumerate(turns):
            if not turn.is_agent or turn.action is None or index + 1 >= len(turns):
                continue
            reply = turns[index + 1]
            if reply.role != "user":
                continue
            act = turn.action.act
            narrowed = narrowed or act == "narrow"
            said = reply.text.split("\nCandidates (")[0].removeprefix("User: ")
            new = [f for f in read_facts(said, self.genres) if f not in facts]
            if act in ASKS:
                asked[act] += 1
                candidates = list(episode.task.candidate_item_ids)
                if len(self.consistent(candidates, facts + new)) == len(self.consistent(candidates, facts)):
                    unproductive[act] += 1
            facts += new
        return facts, unproductive, asked, narrowed


class RandomCRSPolicy(TextAgent):
    """Plays a uniformly random act of ``acts`` each turn: ``recommend`` a random current candidate,
    ``narrow`` to a random half of them; seeded by the episode's per-turn seed."""

    role = "crs_random"

    def __init__(self, *, acts: Sequence[str] = DIALOGUE_ACTS):
        unknown = sorted(set(acts) - set(DIALOGUE_ACTS))
        if unknown or not acts:
            raise ValueError(f"acts must be a non-empty subset of {DIALOGUE_ACTS}, got {list(acts)}")
        self.acts = list(acts)

    def turn(self, episode: Episode) -> str:
        rng = np.random.default_rng(episode.seed)
        current = list(episode.infos[-1]["candidate_item_ids"])
        act = self.acts[int(rng.integers(len(self.acts)))]
        if act in ("recommend", "narrow") and not current:
            act = "wrap_up"
        if act == "recommend":
            pick = current[int(rng.integers(len(current)))]
            return f"<act>recommend</act><say>How about this?</say><recommend>{pick}</recommend>"
        if act == "narrow":
            kept = [i for i in current if rng.random() < 0.5] or current[:1]
            return f"<act>narrow</act><say>Let me keep a few.</say><recommend>{', '.join(kept)}</recommend>"
        return f"<act>{act}</act><say>{ASKS.get(act, 'Tell me more.')}</say>"
