"""Project-wide infrastructure that every package uses: the one input-error type, atomic file
writes and the reader for users' text files. Lives under ``traces`` because traces is the bottom
layer of the pipeline; nothing here knows about routing."""

from traces.infra.errors import InputError

__all__ = ["InputError"]
