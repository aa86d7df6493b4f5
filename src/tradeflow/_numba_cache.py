"""Keep numba's on-disk cache honest across modules.

numba keys a cached kernel on the source of the file that *defines* it. A strategy kernel
that inlines ``indicators.supertrend_step`` would therefore keep serving machine code built
from an old ``indicators.py`` after that file changes (an upgrade, a fix), silently. For
code that trades money that is not acceptable, so each dependent kernel's cache is
stamped with the sources it inlines and flushed when they differ.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["guard_cache", "source_stamp"]

log = logging.getLogger(__name__)


def source_stamp(*modules: ModuleType) -> str:
    """SHA-256 over the source files of ``modules``."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def guard_cache(kernels: list[Any], depends_on: list[ModuleType]) -> bool:
    """Flush the cached machine code of ``kernels`` if ``depends_on`` changed since it was built.

    Returns True when a flush happened. Works on whatever cache directory numba chose; a
    read-only location just means numba compiles in memory, and nothing is flushed.
    """
    stamp = source_stamp(*depends_on)
    flushed = False
    for kernel in kernels:
        cache = getattr(kernel, "_cache", None)
        path = getattr(cache, "cache_path", None)
        if not path:
            continue
        marker = Path(path) / f"{kernel.py_func.__module__}.{kernel.py_func.__qualname__}.deps"
        try:
            current = marker.read_text() if marker.exists() else ""
            if current != stamp:
                cache.flush()
                marker.write_text(stamp)
                flushed = flushed or bool(current)
        except OSError:
            with contextlib.suppress(Exception):
                cache.flush()
    if flushed:
        log.info("numba cache of %s flushed: its dependencies changed", ", ".join(k.py_func.__name__ for k in kernels))
    return flushed
