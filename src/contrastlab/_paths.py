"""Output paths checked before any work: one line naming the option when a path cannot be used.

``--out /dev/null/x`` (a file where a directory must be), a directory without write permission,
or a file path that is a directory would otherwise fail after the work, with a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["check_output_dir", "check_output_file", "confined"]


def _first_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: str | os.PathLike[str], name: str) -> Path:
    """``path`` is a directory that exists and is writable, or can be created (its nearest
    existing ancestor is a writable directory). Returns it; a one-line ValueError naming
    ``name`` otherwise. Nothing is created."""
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"{name}: {str(p)!r} exists and is not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ValueError(f"{name}: {str(p)!r} is not writable")
        return p
    base = _first_existing(p.absolute())
    if not base.is_dir():
        raise ValueError(f"{name}: {str(p)!r} cannot be created: {str(base)!r} is not a "
                         "directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: {str(p)!r} cannot be created: {str(base)!r} is not writable")
    return p


def check_output_file(path: str | os.PathLike[str], name: str,
                      suffixes: Sequence[str] = ()) -> Path:
    """``path`` can be written as a file: not a directory, a suffix among ``suffixes`` (when
    given), its directory usable (:func:`check_output_dir`). One-line ValueError otherwise."""
    p = Path(path).expanduser()
    if suffixes and p.suffix.lower() not in suffixes:
        raise ValueError(f"{name} must end in {', '.join(suffixes)}; got {str(p)!r}")
    if p.is_dir():
        raise ValueError(f"{name}: {str(p)!r} is a directory; a file path is expected")
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"{name}: {str(p)!r} is not writable")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"{name}: {str(p)!r} cannot be written: {str(parent)!r} is not a "
                         "directory")
    try:
        check_output_dir(parent, name)
    except ValueError as exc:
        raise ValueError(f"{name}: {str(p)!r} cannot be written ({str(exc)[len(name) + 2:]})"
                         ) from None
    return p


def confined(root: str | os.PathLike[str], *parts: str) -> Path:
    """``root / parts...`` resolved, refused (one-line ValueError) when it leaves ``root`` (a
    part such as ``..`` or an absolute path)."""
    base = Path(root).resolve()
    out = base.joinpath(*parts).resolve()
    if out != base and base not in out.parents:
        raise ValueError(f"{'/'.join(parts)!r} leaves the output directory {str(base)!r}")
    return out
