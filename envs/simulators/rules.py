"""A rule-based user simulator: truthful answers from the hidden target's attributes."""

from __future__ import annotations

from envs.simulators.base import AgentMove, Dialogue, SimulatorReply, check_patience, judge
from envs.simulators.facts import (ATTRIBUTES, Fact, decade, genre_vocabulary, holds_for, item_facts, mentioned, say,
                                   title_words)
from envs.types import Item

OPENING = "Hi! Can you recommend something for me?"
UNSURE = "Hmm, I'm not sure."


class RuleBasedSimulator:
    """A user who wants ``task.target_item_id`` and answers by rules, one fact per sentence.

    * ``ask_preference``: the target's next unstated genre, then a word of its title.
    * ``ask_constraint``: its decade, then its year.
    * Attributes the agent names (a genre, decade, year or quoted title word, in any act but
      ``recommend``) are confirmed or denied first.
    * ``recommend``: accepted exactly when the ids hold the target; a rejection states one fact
      that tells the first recommended item from the target. The ``patience``-th rejection ends
      the conversation.
    * ``clarify_rejection``: one more fact telling the last rejected item from the target.
    * ``narrow``: acknowledged (after answering what it names); ``wrap_up``: goodbye.

    Args:
        patience: rejections the user takes; at the ``patience``-th the user leaves.
        noise: probability that an answer carries no information ("Hmm, I'm not sure."; a rejection
            then gives no reason). Drawn from the dialogue's rng, which ``env.reset(seed=...)`` seeds.
        attributes: the attributes the user ever states (of ``facts.ATTRIBUTES``); fewer make a
            harder user.
    """

    def __init__(self, *, patience: int = 3, noise: float = 0.0, attributes: tuple[str, ...] = ATTRIBUTES):
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise is a probability, got {noise}")
        unknown = sorted(set(attributes) - set(ATTRIBUTES))
        if unknown:
            raise ValueError(f"unknown attribute(s) {unknown}; known: {list(ATTRIBUTES)}")
        self.patience = check_patience(patience)
        self.noise = noise
        self.attributes = tuple(attributes)

    def opening(self, dialogue: Dialogue) -> str:
        return OPENING

    def reply(self, dialogue: Dialogue, move: AgentMove) -> SimulatorReply:
        verdict = judge(dialogue, move, patience=self.patience)
        if verdict.accepted:
            return SimulatorReply("Yes, that's the one I want. Thanks!", accepted=True)
        if move.act == "wrap_up":
            return SimulatorReply("Okay, bye.", left=True)
        target = dialogue.catalog.items[dialogue.task.target_item_id]
        noisy = self.noise > 0 and bool(dialogue.rng.random() < self.noise)
        if verdict.rejected:
            reason = "" if noisy else self._tell_apart(dialogue, target, move.item_ids[0])
            text = " ".join(part for part in ("No, not that one.", reason) if part)
            if verdict.left:
                text += " I'll look elsewhere. Bye."
            return SimulatorReply(text, left=verdict.left)
        if noisy:
            return SimulatorReply(UNSURE)
        named = mentioned(move.utterance, genre_vocabulary(dialogue.catalog))
        named = [fact for fact in named if fact.attribute in self.attributes]
        if named:
            return SimulatorReply(" ".join(self._state(dialogue, Fact(f.attribute, f.value, holds_for(f, target)))
                                           for f in named))
        if move.act == "ask_preference":
            facts = [Fact("genre", genre) for genre in target.genres]
            facts += [Fact("title", word) for word in title_words(target)]
            text = self._first_unstated(dialogue, facts) or "That's all I can tell you about what I like."
        elif move.act == "ask_constraint":
            facts = [Fact("decade", decade(target.year)), Fact("year", target.year)] if decade(target.year) else []
            if not [fact for fact in facts if fact.attribute in self.attributes]:
                text = "Any year is fine."
            else:
                text = self._first_unstated(dialogue, facts) or "No other constraints."
        elif move.act == "clarify_rejection":
            if not dialogue.rejected:
                text = "You haven't recommended anything yet."
            else:
                text = self._tell_apart(dialogue, target, dialogue.rejected[-1])
        else:  # narrow
            text = "Sounds good."
        return SimulatorReply(text)

    def _tell_apart(self, dialogue: Dialogue, target: Item, item_id: str) -> str:
        """One fact that holds for the target and not for ``item_id`` (or the reverse), unstated first."""
        item = dialogue.catalog.items.get(item_id)
        if item is None:
            return "I don't know that one."
        wanted = [fact for fact in item_facts(target) if fact.attribute != "title" and not holds_for(fact, item)]
        unwanted = [Fact(fact.attribute, fact.value, holds=False) for fact in item_facts(item)
                    if fact.attribute == "genre" and not holds_for(fact, target)]
        title = [fact for fact in item_facts(target) if fact.attribute == "title" and not holds_for(fact, item)]
        facts = [fact for fact in wanted + unwanted + title if fact.attribute in self.attributes]
        if not facts:
            return "It's just not what I have in mind."
        return self._first_unstated(dialogue, facts) or say(facts[0])

    def _first_unstated(self, dialogue: Dialogue, facts: list[Fact]) -> str:
        for fact in facts:
            if fact.key not in dialogue.revealed and fact.attribute in self.attributes:
                return self._state(dialogue, fact)
        return ""

    @staticmethod
    def _state(dialogue: Dialogue, fact: Fact) -> str:
        dialogue.revealed.add(fact.key)
        return say(fact)
