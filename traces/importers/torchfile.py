"""Read and write PyTorch ``torch.save`` files, the form SGLang and Megatron dumps take.

torch is the optional extra ``[record]``; it is imported only when such a file is read or
written, and its absence is a one-line input error that says how to install it.  Files are
loaded with ``weights_only=True`` (plain containers, numbers, strings and tensors only: a dump
cannot run code) and memory-mapped, so tensors are paged in as they are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from traces.infra.errors import InputError


def _torch(where: str) -> Any:
    try:
        import torch
    except ImportError:
        raise InputError(
            f"{where}: reading PyTorch files needs torch; install the extra:"
            " pip install 'moe-netsim[record]'"
        ) from None
    return torch


def load_torch_file(path: Path) -> Any:
    """The object a ``torch.save`` file holds; unreadable or unsafe files are input errors."""
    torch = _torch(str(path))
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any loader failure means a bad file
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise InputError(f"{path}: not a readable PyTorch file ({reason[:200]})") from None


def save_torch_file(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` (the caller writes through an atomic temporary)."""
    _torch(str(path)).save(obj, path)


def to_array(x: Any, where: str) -> np.ndarray:
    """A tensor, array or (nested) list as a NumPy array."""
    if hasattr(x, "detach") and hasattr(x, "numpy"):
        return np.asarray(x.detach().cpu().numpy())
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected an array, got {type(x).__name__}") from None


def tensor(arr: np.ndarray, where: str) -> Any:
    """A NumPy array as a torch tensor (for writers)."""
    return _torch(where).from_numpy(np.ascontiguousarray(arr))
