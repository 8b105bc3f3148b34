"""Request bytes in flight, counted on every protocol as they arrive, and freed memory given back after a burst."""

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import functools
import gc

from keras_robust.serving.plane.errors import ServingError, received

# After a burst of at least this many request bytes, once none is held, freed memory goes back to the
# system: glibc keeps large freed blocks in its arenas, so a burst of large requests left the
# process gigabytes larger for good.
TRIM_AFTER_BYTES = 16 * 2**20
# The trim waits this long after the burst, so that the handlers that held its bytes have returned.
TRIM_DELAY_S = 0.5
# glibc's M_MMAP_THRESHOLD: blocks this large or larger are mapped apart and unmapped when freed.
# Left dynamic, the threshold rises to 32 MiB after the first large free, and a burst of large
# requests then lands in the heap arenas, of which a trim gives back only part.
MMAP_THRESHOLD_BYTES = 2**20
_M_MMAP_THRESHOLD = -3


class InflightBytes:
    """Counts the request bytes received and not yet answered; refuses (503) beyond the limit.

    Bytes count as they arrive, not as a Content-Length announces them: a
    connection that announces 32 MiB and sends nothing holds nothing, so
    idle announcers cannot make every other request wait. Used only from
    the event loop's thread, so a plain counter is enough.
    """

    def __init__(self, limits):
        self._limits = limits
        self._bytes = 0
        self._by_client = collections.Counter()
        self._peak = 0  # the most bytes held since the server last returned freed memory

    @contextlib.contextmanager
    def counter(self, request, client=None):
        """Yields `add(size)`, which counts `size` more bytes of `request` (a Starlette request, or a
        description of one), from `client`; they are released when the block ends."""
        held = 0
        where = request if isinstance(request, str) else received(request)

        def add(size):
            nonlocal held
            if self._bytes + size > self._limits.max_inflight_bytes:
                raise ServingError(
                    503, f"The server holds {self._bytes} request bytes received or being parsed, and this "
                         f"request's would pass max_inflight_bytes={self._limits.max_inflight_bytes}; retry "
                         f"later. Received: {where} with {held + size} bytes so far"
                )
            if self._by_client[client] + size > self._limits.max_client_inflight_bytes:
                raise ServingError(
                    503, f"This client's requests hold {self._by_client[client]} bytes received or being parsed, "
                         f"and this one's would pass max_client_inflight_bytes="
                         f"{self._limits.max_client_inflight_bytes}; send them one after another. Received: "
                         f"{where} from {client} with {held + size} bytes so far"
                )
            self._bytes += size
            self._by_client[client] += size
            self._peak = max(self._peak, self._bytes)
            held += size

        try:
            yield add
        finally:
            self._bytes -= held
            self._by_client[client] -= held
            if not self._by_client[client]:
                del self._by_client[client]
            if not self._bytes and self._peak >= TRIM_AFTER_BYTES:
                self._peak = 0
                asyncio.get_running_loop().call_later(TRIM_DELAY_S, release_freed_memory)


def keep_memory_returnable():
    """Called once the server has loaded: fixes glibc's mmap threshold, and freezes what is loaded
    (it lives as long as the server), so the collections after a burst scan only what requests
    made and take microseconds."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    gc.collect()
    gc.freeze()


def release_freed_memory():
    """Frees request bytes that only reference cycles still hold (an error's traceback holds its
    request's frames until the cycle collector runs), then returns the C heap's free memory to the
    system (glibc's `malloc_trim`; nothing elsewhere)."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _libc():
    """glibc, looked up once (`find_library` runs ldconfig: not on every burst, in the event loop), or
    None off glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None
