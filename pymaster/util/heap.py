"""Giving freed heap memory back to the system (glibc's malloc_trim).

A long-lived process that handled a burst (the master brokering a connection
storm's anvil requests: libzmq allocates buffers per connected peer in its
I/O thread) frees that memory but glibc keeps it in its arenas, so the
process's resident size stays at the burst's high-water mark. malloc_trim(0)
returns the free pages of every arena. Elsewhere than glibc it does nothing.

Interface:
    release_free_memory() -> bool     True when malloc_trim ran
"""

from __future__ import annotations

import ctypes

_trim = None
_looked = False


def _malloc_trim():
    """_malloc_trim - glibc's malloc_trim, or None where there is none."""
    global _trim, _looked
    if not _looked:
        _looked = True
        try:
            # The C library is already loaded: CDLL(None) finds its symbols
            # without ctypes.util.find_library, whose imports (subprocess,
            # tempfile, shutil, lzma, bz2) cost the master about 1 MB.
            _trim = ctypes.CDLL(None).malloc_trim
            _trim.argtypes = [ctypes.c_size_t]
            _trim.restype = ctypes.c_int
        except (OSError, AttributeError):
            _trim = None
    return _trim


def release_free_memory() -> bool:
    """release_free_memory - return the heap's free pages to the system."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
