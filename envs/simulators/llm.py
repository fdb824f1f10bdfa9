"""An LLM user simulator (iEvaLM's protocol): a prompt holds the hidden target, the LLM words the
answers, and rules decide acceptance (``judge``) so success never rests on the generator.

Every output is checked for the target's title and id (``leak``). A leaking output is retried with
a reminder up to ``max_retries`` times, then replaced by a fixed safe reply that carries the
verdict and nothing else, so the agent can never read the answer off the user.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from envs.simulators.base import AgentMove, Dialogue, SimulatorReply, Verdict, check_patience, judge
from envs.simulators.rules import OPENING, UNSURE
from envs.types import Item

Backend = Callable[[list[dict[str, str]]], str]
"""Chat messages (``role``/``content``) in, the assistant's reply out."""

MAX_REPLY_CHARS = 1000
"""Characters of a generated reply that are kept."""

PERSONA = (
    "You are a user chatting with a recommender system to find one item. The item you want is: {item}. "
    "Never write its title or its id {item_id}: describe what you want through its genres, its era and "
    "its feel, in one or two short sentences. Answer only the recommender's last message."
)
REMINDER = "Your reply named the item you want. Reply again without its title or its id."
VERDICT_NOTES = {
    "accepted": "(This is the item you want: accept it.)",
    "rejected": "(Not the item you want: turn it down and say in what way it differs.)",
    "left": "(Not the item you want, and you have run out of patience: turn it down and say goodbye.)",
    "wrap_up": "(The recommender is ending the chat: say goodbye.)",
}


class LLMSimulator:
    """A simulated user whose words come from an LLM.

    Args:
        backend: generates the user's reply from chat messages (see ``from_engine`` for an engine).
        patience: rejections the user takes; at the ``patience``-th the user leaves.
        max_retries: generations after the first that are tried when an output leaks the target;
            then the safe reply (``safe_reply``) is used.
    """

    def __init__(self, backend: Backend, *, patience: int = 3, max_retries: int = 2):
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.backend = backend
        self.patience = check_patience(patience)
        self.max_retries = max_retries
        self.generations = 0
        """Replies generated so far, retries included."""
        self.leaks = 0
        """Of those, the ones refused because they named the target (or were empty)."""
        self.safe_replies = 0
        """Turns where every try leaked and the safe reply was used."""

    @classmethod
    def from_engine(cls, engine: Any, chat: Any, params: Any, **kwargs: Any) -> "LLMSimulator":
        """A simulator over a ``rollout.engines`` Engine.

        ``envs`` may not import ``rollout``, so the pieces are passed in, duck-typed: ``engine``
        has ``generate(prompts, params, seeds=)``, ``chat`` is a ``rollout.chat.ChatFormat`` (its
        ``prompt_ids`` and ``tokenizer.decode``), ``params`` a ``rollout.engines.base.SamplingParams``.
        Each prompt is sampled with a seed derived from its text, so replies are reproducible.
        """

        def backend(messages: list[dict[str, str]]) -> str:
            seed = int.from_bytes(hashlib.blake2b(repr(messages).encode(), digest_size=8).digest(), "little") >> 1
            [generation] = engine.generate([chat.prompt_ids(messages)], params, seeds=[seed])
            return chat.tokenizer.decode(generation.token_ids, skip_special_tokens=True)

        return cls(backend, **kwargs)

    def opening(self, dialogue: Dialogue) -> str:
        messages = [{"role": "system", "content": self._persona(dialogue)},
                    {"role": "user", "content": "Hello! What are you looking for today?"}]
        return self._checked(messages, dialogue, safe=OPENING)

    def reply(self, dialogue: Dialogue, move: AgentMove) -> SimulatorReply:
        verdict = judge(dialogue, move, patience=self.patience)
        messages = [{"role": "system", "content": self._persona(dialogue)}]
        for index, earlier in enumerate(dialogue.moves):
            if index < len(dialogue.replies) - 1:  # the opening is the system's cue, not an answer
                messages += [{"role": "user", "content": self._heard(dialogue, earlier)},
                             {"role": "assistant", "content": dialogue.replies[index + 1]}]
        note = _note(move, verdict)
        messages.append({"role": "user", "content": self._heard(dialogue, move) + (f"\n{note}" if note else "")})
        text = self._checked(messages, dialogue, safe=safe_reply(move, verdict))
        return SimulatorReply(text, accepted=verdict.accepted, left=verdict.left)

    def _checked(self, messages: list[dict[str, str]], dialogue: Dialogue, *, safe: str) -> str:
        target = dialogue.catalog.items[dialogue.task.target_item_id]
        for _ in range(self.max_retries + 1):
            text = str(self.backend(messages)).strip()[:MAX_REPLY_CHARS]
            self.generations += 1
            if text and leak(text, target) is None:
                return text
            self.leaks += 1
            messages = [*messages, {"role": "assistant", "content": text}, {"role": "user", "content": REMINDER}]
        self.safe_replies += 1
        return safe

    @staticmethod
    def _persona(dialogue: Dialogue) -> str:
        target = dialogue.catalog.items[dialogue.task.target_item_id]
        return PERSONA.format(item=describe(target), item_id=target.item_id)

    @staticmethod
    def _heard(dialogue: Dialogue, move: AgentMove) -> str:
        """What the recommender said, with the items it names spelled out for the LLM."""
        if not move.item_ids:
            return move.utterance
        items = "; ".join(describe(dialogue.catalog.items[i]) if i in dialogue.catalog.items else i
                          for i in move.item_ids)
        label = "recommends" if move.act == "recommend" else "suggests narrowing to"
        return f"{move.utterance}\n[{label}: {items}]"


def describe(item: Item) -> str:
    """>>> describe(Item("50", "Star Wars (1977)", "1977", ("Sci-Fi", "War")))
    'Star Wars (1977) (1977; Sci-Fi, War)'
    """
    details = "; ".join(part for part in (item.year, ", ".join(item.genres)) if part)
    return f"{item.title} ({details})" if details else item.title


def safe_reply(move: AgentMove, verdict: Verdict) -> str:
    """The reply used when every generation leaked: the verdict, no information about the target."""
    if verdict.accepted:
        return "Yes, that's the one I want. Thanks!"
    if move.act == "wrap_up":
        return "Okay, bye."
    if verdict.rejected:
        return "No, not that one. I'll look elsewhere. Bye." if verdict.left else "No, not that one."
    return UNSURE


def title_forms(item: Item) -> list[str]:
    """The ways a title can be written, normalized (lowercase words): the whole title, without its
    year, its main and parenthesized parts, and with a trailing article moved to the front.

    >>> title_forms(Item("448", "Omen, The (1976)"))
    ['omen the 1976', 'omen the', 'the omen']
    """
    forms = [item.title, re.sub(r"\s*\(\d{4}\)\s*$", "", item.title)]
    forms += re.split(r"[()]", forms[1])
    for form in list(forms):
        match = re.match(r"^(.*),\s*(the|a|an|les|la|le|il|el|das|der|die)\s*$", form.strip(), re.IGNORECASE)
        if match:
            forms.append(f"{match.group(2)} {match.group(1)}")
    normalized = []
    for form in forms:
        words = _normalize(form)
        if words and words not in {"the", "a", "an"} and words not in normalized:
            normalized.append(words)
    return normalized


def leak(text: str, target: Item) -> str | None:
    """Why ``text`` reveals the target (its id, or its title in any form), or None when it does not.

    >>> star = Item("50", "Star Wars (1977)")
    >>> leak("I loved STAR-WARS!", star), leak("Space opera, 50s feel? no.", star), leak("Item 50 please", star)
    ("names the target's title ('star wars')", None, "names the target's id '50'")
    """
    if re.search(rf"(?<![\w.]){re.escape(target.item_id)}(?![\w]|\.\d)", text):
        return f"names the target's id '{target.item_id}'"
    padded = f" {_normalize(text)} "
    for form in title_forms(target):
        if not form.isdigit() and f" {form} " in padded:
            return f"names the target's title ('{form}')"
    return None


def _normalize(text: str) -> str:
    return " ".join(re.findall(r"[0-9a-z]+", text.lower()))


def _note(move: AgentMove, verdict: Verdict) -> str:
    if verdict.accepted:
        return VERDICT_NOTES["accepted"]
    if move.act == "wrap_up":
        return VERDICT_NOTES["wrap_up"]
    if verdict.rejected:
        return VERDICT_NOTES["left" if verdict.left else "rejected"]
    return ""

