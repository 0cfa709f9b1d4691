"""Reading a user's JSON file: every failure (missing, unreadable, not UTF-8, not JSON) is an
:class:`InputError` naming the file, never an ``OSError`` or ``JSONDecodeError``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from traces.infra.errors import InputError


def read_text_file(
    path: str | os.PathLike[str], what: str, undecodable: str = "not a text file"
) -> str:
    """The UTF-8 text of ``path``; ``what`` names the file in messages ("topology file")."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: {what} not found")
    try:
        return p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{p}: cannot read {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: {undecodable} ({exc})") from None


def read_json_file(path: str | os.PathLike[str], what: str) -> Any:
    """The parsed JSON value of ``path``; ``what`` names the file in messages ("topology file")."""
    p = Path(path)
    text = read_text_file(p, what, undecodable="not valid JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not valid JSON ({exc})") from None
