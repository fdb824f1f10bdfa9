"""Reading dataset files of JSON lines, plain or gzipped, with errors that name file and line."""

from __future__ import annotations

import ast
import gzip
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from envs.data.movielens import DataNotFoundError


class DataFormatError(ValueError):
    """A line of a dataset file is not what its loader expects; the message names file and line."""


def read_json_lines(path: str | Path, *, python_literals: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for every non-blank line of a JSON-lines file.

    Args:
        path: The file; a name ending in ``.gz`` is read as gzip.
        python_literals: Also accept lines written as Python dict literals (single quotes), as in the
            2014 Amazon metadata files; they are parsed with ``ast.literal_eval``, never executed.

    Raises:
        DataNotFoundError: The file does not exist.
        DataFormatError: A line is not a JSON object (the message names file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"data file not found: {path}; check the path (data.path in a run config)")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        try:
            for line_no, line in enumerate(handle, start=1):
                if line.strip():
                    yield line_no, _parse_line(line, f"{path}:{line_no}", python_literals=python_literals)
        except (gzip.BadGzipFile, EOFError, UnicodeDecodeError) as error:
            raise DataFormatError(f"{path}: cannot be read as {'gzip' if opener is gzip.open else 'UTF-8'} "
                                  f"text ({error})") from None


def _parse_line(line: str, where: str, *, python_literals: bool) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        row = _python_literal(line) if python_literals else None
        if row is None:
            raise DataFormatError(f"{where}: not JSON ({error.msg}): {line.strip()[:80]!r}") from None
    if not isinstance(row, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {line.strip()[:80]!r}")
    return row


def _python_literal(line: str) -> Any:
    try:
        return ast.literal_eval(line.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def require(row: dict[str, Any], fields: Sequence[str], where: str, what: str) -> None:
    """Raise ``DataFormatError`` naming ``where`` and the missing ``fields`` of a ``what`` row."""
    missing = [name for name in fields if row.get(name) is None]
    if missing:
        raise DataFormatError(f"{where}: missing field(s) {missing}; {what} rows need {list(fields)}")
