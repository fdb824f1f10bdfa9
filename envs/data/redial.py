"""ReDial-style movie dialogues: a Catalog of the movies they mention, and DialogueTasks.

Input: JSON lines (plain or ``.gz``), one conversation a line, with ``conversationId``, ``messages``
(``[{"senderWorkerId", "text", ...}]``), ``movieMentions`` (``{movie id: "Title (Year)"}``),
``initiatorWorkerId`` (the seeker), ``respondentWorkerId`` (the recommender) and, optionally,
``initiatorQuestions`` / ``respondentQuestions`` (``{movie id: {"suggested", "seen", "liked"}}``).
A message mentions a movie as ``@<id>``. The rules:

* **Movies** are the ids in ``movieMentions`` with a non-empty name; a name ending in ``(YYYY)``
  splits into title and year, any other keeps its whole text as the title. The first name of an
  id wins. An ``@<id>`` or answer for an id outside its conversation's ``movieMentions`` is ignored.
* **Answers**: for each movie, the seeker's form (``initiatorQuestions``) where it has the movie,
  else the recommender's. ``suggested`` 1: the recommender suggested it; ``liked`` 1 yes, 0 no,
  2 did not say.
* **Users** are the seekers (``str(initiatorWorkerId)``).
* **Interactions**, per conversation: the movies the seeker mentions in their own messages and the
  movies the answers say the seeker liked; rating 5 if liked, 1 if not, 3 if not said (a 1-5 scale
  like the other datasets', so ``min_rating=4`` keeps liked movies). Timestamp: the conversation's
  position in the file x 1000 + the movie's rank by first mention in it (movies never mentioned in
  text come last, by id), so conversations count in file order.
* **Tasks** (``dialogue_tasks``), at most one per conversation, ``task_id = "redial:<conversationId>"``:
  the *target* is, by first mention, the first movie first mentioned in a recommender's message
  after the seeker's first message that the answers mark suggested and liked; the *opening* is the
  seeker's first message with every ``@<id>`` of a known movie replaced by its title; the *history*
  is the movies mentioned in the seeker's messages before the target's first mention, in order of
  first mention; the *candidates* are the target and ``num_negatives`` movies sampled (seeded by
  seed and task id) from the catalog's movies neither mentioned in the conversation nor among the
  seeker's interactions, shuffled. A conversation without a target, or whose seeker never
  speaks, gives no task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.data.jsonl import DataFormatError, read_json_lines, require
from envs.data.splits import id_sort_key, user_rng
from envs.types import Catalog, DialogueTask, Interaction, Item, User

REDIAL_NAME = "redial"
MENTION = re.compile(r"@(\d+)")
_TITLE_YEAR = re.compile(r"^(?P<title>.*\S)\s*\((?P<year>\d{4})\)$")
_FIELDS = ("conversationId", "messages", "movieMentions", "initiatorWorkerId", "respondentWorkerId")
_RATING_BY_LIKED = {1: 5.0, 0: 1.0}
_NOT_SAID_RATING = 3.0
_MENTIONS_PER_CONVERSATION = 1000


@dataclass(frozen=True)
class Message:
    """One message: who sent it (a worker id as text) and what it says."""

    sender_id: str
    text: str


@dataclass(frozen=True)
class Answer:
    """A movie's answers: ``suggested`` (1: by the recommender), ``liked`` (1 yes, 0 no, 2 not said)."""

    suggested: int | None = None
    liked: int | None = None


@dataclass(frozen=True)
class Conversation:
    """One dialogue with its movies (``titles``: id -> "Title (Year)") and resolved answers by movie id."""

    conversation_id: str
    seeker_id: str
    recommender_id: str
    messages: tuple[Message, ...]
    titles: dict[str, str]
    answers: dict[str, Answer]

    def first_mentions(self) -> list[tuple[str, int]]:
        """(movie id, index of the message that first mentions it), in order of first mention."""
        seen: dict[str, int] = {}
        for index, message in enumerate(self.messages):
            for movie_id in MENTION.findall(message.text):
                if movie_id in self.titles and movie_id not in seen:
                    seen[movie_id] = index
        return list(seen.items())


def _id(value: Any, where: str, name: str) -> str:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise DataFormatError(f"{where}: {name} must be a string or integer id, got {value!r}")


def _flag(entry: Any, name: str) -> int | None:
    value = entry.get(name) if isinstance(entry, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _answers(row: dict[str, Any], titles: dict[str, str]) -> dict[str, Answer]:
    # Forms without answers come as {} or [] in the ReDial files.
    seeker = row.get("initiatorQuestions") or {}
    recommender = row.get("respondentQuestions") or {}
    answers = {}
    for movie_id in titles:
        entry = seeker.get(movie_id) if isinstance(seeker, dict) else None
        if not isinstance(entry, dict) or not entry:
            entry = recommender.get(movie_id) if isinstance(recommender, dict) else None
        if isinstance(entry, dict) and entry:
            answers[movie_id] = Answer(suggested=_flag(entry, "suggested"), liked=_flag(entry, "liked"))
    return answers


def _conversation(row: dict[str, Any], where: str) -> Conversation:
    require(row, _FIELDS, where, "ReDial conversation")
    raw_messages, raw_mentions = row["messages"], row["movieMentions"] or {}
    if not isinstance(raw_messages, list):
        raise DataFormatError(f"{where}: messages must be a list, got {raw_messages!r:.80}")
    if not isinstance(raw_mentions, dict):
        raise DataFormatError(f"{where}: movieMentions must be an object of id -> name, got {raw_mentions!r:.80}")
    messages = []
    for number, message in enumerate(raw_messages, start=1):
        if not isinstance(message, dict):
            raise DataFormatError(f"{where}: message {number} must be an object, got {message!r:.80}")
        require(message, ("senderWorkerId", "text"), f"{where}: message {number}", "message")
        messages.append(Message(sender_id=_id(message["senderWorkerId"], where, "senderWorkerId"),
                                text=str(message["text"])))
    titles = {str(movie_id): name.strip() for movie_id, name in raw_mentions.items()
              if isinstance(name, str) and name.strip()}
    return Conversation(conversation_id=_id(row["conversationId"], where, "conversationId"),
                        seeker_id=_id(row["initiatorWorkerId"], where, "initiatorWorkerId"),
                        recommender_id=_id(row["respondentWorkerId"], where, "respondentWorkerId"),
                        messages=tuple(messages), titles=titles, answers=_answers(row, titles))


def read_conversations(path: str | Path) -> list[Conversation]:
    """Every conversation of a ReDial-style JSON-lines file, in file order.

    Raises:
        DataNotFoundError: The file does not exist.
        DataFormatError: A line is not JSON, lacks a field or repeats a conversationId (the message
            names file and line).
    """
    conversations: list[Conversation] = []
    lines: dict[str, int] = {}
    for line_no, row in read_json_lines(path):
        conversation = _conversation(row, f"{path}:{line_no}")
        if conversation.conversation_id in lines:
            raise DataFormatError(f"{path}:{line_no}: conversationId {conversation.conversation_id!r} "
                                  f"already used on line {lines[conversation.conversation_id]}")
        lines[conversation.conversation_id] = line_no
        conversations.append(conversation)
    return conversations


def split_title(name: str) -> tuple[str, str]:
    """``"Title (Year)"`` as (title, year); a name without a trailing year is all title.

    >>> split_title("The Triplets of Belleville (2003)")
    ('The Triplets of Belleville', '2003')
    >>> split_title("Star Wars")
    ('Star Wars', '')
    """
    match = _TITLE_YEAR.match(name.strip())
    return (match["title"], match["year"]) if match else (name.strip(), "")


def _seeker_mentions(conversation: Conversation, *, before: int | None = None) -> set[str]:
    """Movies the seeker mentions in their messages (those before message index ``before``, if given)."""
    return {movie_id for index, message in enumerate(conversation.messages)
            if message.sender_id == conversation.seeker_id and (before is None or index < before)
            for movie_id in MENTION.findall(message.text) if movie_id in conversation.titles}


def _seeker_movies(conversation: Conversation) -> list[str]:
    """The movies that become the seeker's interactions: by first mention, then unmentioned ones by id."""
    liked = {movie_id for movie_id, answer in conversation.answers.items() if answer.liked == 1}
    order = [movie_id for movie_id, _ in conversation.first_mentions()]
    return sorted(_seeker_mentions(conversation) | liked,
                  key=lambda m: (order.index(m) if m in order else len(order), id_sort_key(m)))


def redial_catalog(conversations: list[Conversation], *, name: str = REDIAL_NAME) -> Catalog:
    """The catalog of ``conversations``: every mentioned movie, the seekers and their movies (rules above)."""
    items: dict[str, Item] = {}
    for conversation in conversations:
        for movie_id, movie_name in conversation.titles.items():
            if movie_id not in items:
                title, year = split_title(movie_name)
                items[movie_id] = Item(item_id=movie_id, title=title, year=year)
    users: dict[str, User] = {}
    interactions: list[Interaction] = []
    for position, conversation in enumerate(conversations):
        movies = _seeker_movies(conversation)
        if len(movies) > _MENTIONS_PER_CONVERSATION:
            raise ValueError(f"conversation {conversation.conversation_id!r} has {len(movies)} movies, more than "
                             f"the {_MENTIONS_PER_CONVERSATION} its timestamps leave room for")
        users.setdefault(conversation.seeker_id, User(conversation.seeker_id))
        for rank, movie_id in enumerate(movies):
            answer = conversation.answers.get(movie_id, Answer())
            interactions.append(Interaction(
                user_id=conversation.seeker_id, item_id=movie_id,
                rating=_RATING_BY_LIKED.get(answer.liked, _NOT_SAID_RATING),
                timestamp=float(position * _MENTIONS_PER_CONVERSATION + rank)))
    return Catalog(name=name, users=users, items=items, interactions=interactions)


def load_redial(path: str | Path) -> Catalog:
    """Load a ReDial-style JSON-lines file as a Catalog named ``"redial"`` (rules in the module docstring)."""
    return redial_catalog(read_conversations(path))


def replace_mentions(text: str, items: dict[str, Item]) -> str:
    """``text`` with each ``@<id>`` of a known movie replaced by its title.

    >>> replace_mentions("Loved @42! and @7", {"42": Item("42", "Up", "2009")})
    'Loved Up! and @7'
    """
    return MENTION.sub(lambda m: items[m[1]].title if m[1] in items else m[0], text)


def _target(conversation: Conversation, mentions: list[tuple[str, int]], opening_index: int) -> str | None:
    for movie_id, index in mentions:
        answer = conversation.answers.get(movie_id, Answer())
        if (index > opening_index and conversation.messages[index].sender_id == conversation.recommender_id
                and answer.suggested == 1 and answer.liked == 1):
            return movie_id
    return None


def dialogue_tasks(conversations: list[Conversation], catalog: Catalog, *, num_negatives: int = 19,
                   seed: int = 0) -> list[DialogueTask]:
    """One DialogueTask per conversation that has a target (the rules are in the module docstring).

    Args:
        conversations: From ``read_conversations``.
        catalog: The catalog they make (``redial_catalog``); negatives are drawn from its items.
        num_negatives: Negatives per task.
        seed: Base seed; a task's sampling depends only on (seed, task id) and the catalog.

    Returns:
        Tasks in file order, each with ``num_negatives + 1`` shuffled candidates.

    Raises:
        ValueError: A conversation leaves fewer than ``num_negatives`` movies to sample.
    """
    seen_by_user: dict[str, set[str]] = {}
    for interaction in catalog.interactions:
        seen_by_user.setdefault(interaction.user_id, set()).add(interaction.item_id)
    item_ids = sorted(catalog.items, key=id_sort_key)
    tasks = []
    for conversation in conversations:
        seeker_turns = [i for i, m in enumerate(conversation.messages) if m.sender_id == conversation.seeker_id]
        if not seeker_turns:
            continue
        mentions = conversation.first_mentions()
        target = _target(conversation, mentions, seeker_turns[0])
        if target is None:
            continue
        target_index = dict(mentions)[target]
        earlier = _seeker_mentions(conversation, before=target_index)
        history = [movie_id for movie_id, _ in mentions if movie_id in earlier]
        excluded = {*conversation.titles, *seen_by_user.get(conversation.seeker_id, ())}
        pool = [item_id for item_id in item_ids if item_id not in excluded]
        task_id = f"{catalog.name}:{conversation.conversation_id}"
        if len(pool) < num_negatives:
            raise ValueError(f"conversation {conversation.conversation_id!r} leaves {len(pool)} movies to sample, "
                             f"fewer than num_negatives={num_negatives}; lower num_negatives")
        rng = user_rng(seed, task_id)
        candidates = [target, *(pool[i] for i in rng.choice(len(pool), size=num_negatives, replace=False))]
        rng.shuffle(candidates)
        tasks.append(DialogueTask(
            task_id=task_id, user_id=conversation.seeker_id, history=tuple(history),
            candidate_item_ids=tuple(candidates), target_item_id=target,
            opening=replace_mentions(conversation.messages[seeker_turns[0]].text, catalog.items)))
    return tasks
