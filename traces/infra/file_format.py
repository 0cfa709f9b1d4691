"""The header of the project's own file formats: ``{"format": NAME, "version": 1, ...}``.

A trace's Parquet metadata, a load-statistics file's metadata and a cluster description each
start with it.  Writers take :meth:`FileFormat.header`; readers call :meth:`FileFormat.check`,
the one place that refuses another format, another version or keys the format does not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from traces.infra.errors import InputError

VERSION = 1


@dataclass(frozen=True)
class FileFormat:
    """One file format: its ``format`` value, how messages name it, the keys it holds."""

    name: str  # the "format" value, e.g. "moe-netsim-trace"
    title: str  # what a message says it is not, e.g. "moe-netsim trace"
    noun: str  # what a message says has another version, e.g. "trace"
    keys: tuple[str, ...]  # the keys besides format and version
    unknown_hint: str = ""  # appended to the unknown-keys message

    def header(self) -> dict[str, Any]:
        return {"format": self.name, "version": VERSION}

    def check(self, d: Any, where: str) -> dict[str, Any]:
        """``d`` itself when it is a header of this format; otherwise a one-line error."""
        if not isinstance(d, dict) or d.get("format") != self.name:
            raise InputError(f"{where}: not a {self.title} ('format' missing)")
        if d.get("version") != VERSION:
            raise InputError(
                f"{where}: unsupported {self.noun} format version {d.get('version')!r}"
            )
        unknown = set(d) - {"format", "version", *self.keys}
        if unknown:
            keys = sorted(map(str, unknown))
            raise InputError(f"{where}: unknown keys {keys}{self.unknown_hint}")
        return d
