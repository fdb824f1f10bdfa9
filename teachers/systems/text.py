"""Reading and writing the free text of LLM roles: what a teacher system lets through into a turn."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_TAGGED = re.compile(r"<recommend>(.*?)(?:</recommend>|$)", re.DOTALL)
_WORD = re.compile(r"[A-Za-z0-9_.\-]+")


def clean(text: str, *, max_chars: int = 240) -> str:
    """One line of role text, safe inside a tag: no angle brackets (a role cannot open or close a
    tag of the turn), whitespace collapsed, cut at ``max_chars``.

    >>> clean("a <recommend>1</recommend>\\n b")
    'a recommend1/recommend b'
    """
    return " ".join(text.replace("<", "").replace(">", "").split())[:max_chars]


def ids_in(text: str, allowed: Iterable[str]) -> list[str]:
    """The allowed ids a reply names, in order, each once: inside its ``<recommend>`` when it has
    one, else anywhere in the text.

    >>> ids_in("I pick <recommend>7, 9, 7, 42</recommend>", ["7", "9", "3"])
    ['7', '9']
    """
    allowed_set = set(allowed)
    tagged = _TAGGED.search(text)
    words = _WORD.findall(tagged.group(1) if tagged else text)
    return list(dict.fromkeys(w.strip(".") for w in words if w.strip(".") in allowed_set))


def named(text: str, names: Sequence[str]) -> list[str]:
    """The ``names`` a text mentions (case-insensitive), in ``names``' order.

    >>> named("Ask the Recent and profile analysts", ["profile", "historical", "recent"])
    ['profile', 'recent']
    """
    lowered = text.lower()
    return [name for name in names if name in lowered]


def stopped(reason: str, ending: str = "<recommend></recommend>") -> str:
    """A final turn that ends an episode cleanly and says why: the reason in ``<reflection>``, then
    ``ending`` (by default an empty ranking, which the env scores invalid).

    >>> stopped("backend down")
    '<reflection>Stopped: backend down</reflection>\\n<recommend></recommend>'
    """
    return f"<reflection>Stopped: {clean(reason, max_chars=200)}</reflection>\n{ending}"
