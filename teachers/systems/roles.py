"""Role prompts kept as files, and the calls a teacher system makes through them.

A role's prompt is ``teachers/prompts/<system>/<role>.md``: a ``# system`` section (who the role is)
and a ``# user`` section (a ``str.format`` template filled with the episode's data).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Formatter

from rollout.engines.base import derive_seed
from teachers.backends.base import BackendError, ChatBackend, ChatParams, Message, complete

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"
_SECTION = re.compile(r"^# (system|user)\s*$", re.MULTILINE)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RolePrompt:
    """One role's system message and user-message template."""

    name: str
    system: str
    user: str

    @property
    def fields(self) -> set[str]:
        """The names the user template asks for."""
        return {name for _, name, _, _ in Formatter().parse(self.user) if name}

    def messages(self, **fields: object) -> list[Message]:
        missing = self.fields - fields.keys()
        if missing:
            raise KeyError(f"role '{self.name}' needs {sorted(missing)} to fill its prompt")
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": self.user.format(**fields)}]


def load_prompts(system: str, roles: Iterable[str], *, folder: Path | None = None) -> dict[str, RolePrompt]:
    """The role prompts of ``system``, read from ``folder/system/<role>.md`` (``PROMPTS_DIR`` by default)."""
    prompts = {}
    for role in roles:
        path = (folder or PROMPTS_DIR) / system / f"{role}.md"
        if not path.is_file():
            raise FileNotFoundError(f"no prompt for role '{role}' of {system} at {path}")
        parts = _SECTION.split(path.read_text(encoding="utf-8"))
        sections = dict(zip(parts[1::2], (p.strip() for p in parts[2::2])))
        if set(sections) != {"system", "user"}:
            raise ValueError(f"{path} needs a '# system' and a '# user' section")
        prompts[role] = RolePrompt(role, sections["system"], sections["user"])
    return prompts


def prompts_digest(system: str, *, folder: Path | None = None) -> str:
    """A digest of every role prompt file of ``system``: they decide its episodes as much as the
    model does, so episodes saved with other prompts are not resumed.

    Raises:
        FileNotFoundError: ``system`` has no prompt files.
    """
    where = (folder or PROMPTS_DIR) / system
    files = sorted(where.glob("*.md"))
    if not files:
        raise FileNotFoundError(f"no role prompts for {system} in {where}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class RoleReply:
    """What a role said: its text, or the backend's failure (``error``, with an empty text)."""

    role: str
    text: str
    error: str | None = None


class Roles:
    """A system's roles over one backend: ``ask`` fills a role's prompt and returns its reply.

    Args:
        system: the prompts' folder name (``mars``, ``macrec``...).
        roles: the roles it has.
        backend: answers every role.
        params: how each role samples.
    """

    def __init__(self, system: str, roles: Sequence[str], backend: ChatBackend, params: ChatParams):
        self.system = system
        self.prompts = load_prompts(system, roles)
        self.backend = backend
        self.params = params

    def ask(self, role: str, *, seed: int, **fields: object) -> RoleReply:
        """The role's reply. A backend failure is returned (and logged), never raised: the system
        ends its episode cleanly with the reason instead of ending the run."""
        messages = self.prompts[role].messages(**fields)
        try:
            return RoleReply(role, complete(self.backend, messages, self.params, seed=derive_seed(seed, role)).strip())
        except (BackendError, ValueError) as error:
            log.warning("%s %s failed: %s", self.system, role, error)
            return RoleReply(role, "", f"{role}: {error}")
