"""Facts about an item a user can state (genre, decade, year, a title word), as sentences and back.

The rule-based simulator says one fact per sentence in fixed phrasings; ``read_facts`` reads them
(and the same attribute names in an agent's question) using the catalog's genre vocabulary, so a
rule-based agent can narrow the candidate set by what the user said.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from envs.types import Catalog, Item

ATTRIBUTES = ("genre", "decade", "year", "title")

_STOPWORDS = frozenset("the and with from that this what when your into than them they their there have".split())
_WORD = re.compile(r"[A-Za-z]+")
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_DECADE = re.compile(r"\b(1[89]\d0|20\d0)s\b")
_QUOTED = re.compile(r"['\"]([A-Za-z]+)['\"]")
_NEGATION = re.compile(r"\b(no|not|don't|doesn't|isn't)\b")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Fact:
    """``attribute`` of the wanted item is (``holds``) or is not ``value``."""

    attribute: str
    value: str
    holds: bool = True

    @property
    def key(self) -> str:
        """How the fact is remembered as revealed: ``genre:Comedy``, ``not-genre:Horror``."""
        return f"{'' if self.holds else 'not-'}{self.attribute}:{self.value}"


def decade(year: str) -> str:
    """>>> decade("1977"), decade("")
    ('1970s', '')
    """
    return f"{year[:3]}0s" if len(year) == 4 and year.isdigit() else ""


def title_words(item: Item) -> list[str]:
    """Words of the title a user might remember: alphabetic, 4+ letters, no stopwords, in title order.

    >>> title_words(Item("50", "Star Wars (1977)"))
    ['Star', 'Wars']
    """
    words = []
    for word in _WORD.findall(item.title):
        if len(word) >= 4 and word.lower() not in _STOPWORDS and word not in words:
            words.append(word)
    return words


def item_facts(item: Item) -> list[Fact]:
    """Every positive fact about ``item``: its genres, decade, year and title words."""
    facts = [Fact("genre", genre) for genre in item.genres]
    if decade(item.year):
        facts += [Fact("decade", decade(item.year)), Fact("year", item.year)]
    return facts + [Fact("title", word) for word in title_words(item)]


def holds_for(fact: Fact, item: Item) -> bool:
    """Whether ``item`` is consistent with ``fact``."""
    if fact.attribute == "genre":
        present = fact.value in item.genres
    elif fact.attribute == "decade":
        present = decade(item.year) == fact.value
    elif fact.attribute == "year":
        present = item.year == fact.value
    else:
        present = fact.value.lower() in {word.lower() for word in _WORD.findall(item.title)}
    return present == fact.holds


def say(fact: Fact) -> str:
    """The sentence a rule-based user states ``fact`` in.

    >>> say(Fact("genre", "Comedy")), say(Fact("decade", "1990s", holds=False))
    ("I'd like something Comedy.", 'Not from the 1990s.')
    """
    if fact.attribute == "genre":
        return f"I'd like something {fact.value}." if fact.holds else f"I don't want anything {fact.value}."
    if fact.attribute == "decade":
        return f"Something from the {fact.value}." if fact.holds else f"Not from the {fact.value}."
    if fact.attribute == "year":
        return f"It came out in {fact.value}." if fact.holds else f"Not from {fact.value}."
    if fact.holds:
        return f"The title has the word '{fact.value}' in it."
    return f"The title doesn't have the word '{fact.value}'."


def genre_vocabulary(catalog: Catalog) -> list[str]:
    """Every genre in the catalog, longest first (so "Film-Noir" is found before "Film")."""
    genres = {genre for item in catalog.items.values() for genre in item.genres}
    return sorted(genres, key=lambda genre: (-len(genre), genre))


def mentioned(text: str, genres: Sequence[str]) -> list[Fact]:
    """The attribute values ``text`` names (as positive facts): genres, decades, years, quoted words.

    >>> [fact.key for fact in mentioned("Any Comedy from the 1990s, or 'Wars' in 1977?", ["Comedy", "War"])]
    ['genre:Comedy', 'decade:1990s', 'year:1977', 'title:Wars']
    """
    lowered = text.lower()
    facts = [Fact("genre", genre) for genre in genres
             if re.search(r"(?<![\w-])" + re.escape(genre.lower()) + r"(?![\w-])", lowered)]
    facts += [Fact("decade", value) for value in _unique(match.group(0) for match in _DECADE.finditer(text))]
    facts += [Fact("year", value) for value in _unique(_YEAR.findall(text))]
    return facts + [Fact("title", value) for value in _unique(_QUOTED.findall(text))]


def read_facts(text: str, genres: Sequence[str]) -> list[Fact]:
    """The facts a user's message states, one sentence at a time; a sentence with a negation
    states the opposite of what it names (the phrasings of ``say``).

    >>> read_facts("No, not that one. I don't want anything Horror. Something from the 1990s.", ["Horror"])
    [Fact(attribute='genre', value='Horror', holds=False), Fact(attribute='decade', value='1990s', holds=True)]
    """
    facts = []
    for sentence in _SENTENCE_END.split(text):
        names = mentioned(sentence, genres)
        if "title" in sentence.lower():  # "The title has the word 'Drama'": a title word, not a genre
            names = [fact for fact in names if fact.attribute == "title"]
        else:
            names = [fact for fact in names if fact.attribute != "title"]
        negated = bool(_NEGATION.search(sentence.lower()))
        facts += [Fact(fact.attribute, fact.value, holds=not negated) for fact in names]
    return facts


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
