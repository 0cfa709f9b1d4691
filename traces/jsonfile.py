"""Reading a user's JSON file with errors that name the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from traces.errors import InputError


def read_json_file(path: str | os.PathLike[str], what: str) -> Any:
    """Parsed JSON of ``path``; missing file or bad JSON is an :class:`InputError`."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: {what} file not found")
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid JSON ({exc})") from None
