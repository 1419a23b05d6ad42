"""The symmetric heap of emulated CPU ranks: one shared-memory file holding every rank's heap.

Rank r's heap is bytes ``[r * size, (r + 1) * size)`` of the file; every rank maps the
whole file, so a rank reaches a peer's copy of a symmetric tensor at the same offset in
the peer's segment (what ``nvshmem_ptr`` gives on a GPU). Allocation is a bump
pointer: like ``nvshmem_malloc`` it is collective, and ranks that allocate the same
sizes in the same order get the same offsets. Nothing is ever freed; the heap lives as
long as the ranks (``dt.distributed.launch`` removes the file at the end).
"""
import mmap
import os

from ..errors import DitronError

ALIGN = 256            # bytes; every allocation starts on this boundary (vector accesses, flags)
DEFAULT_SIZE = 64 << 20


MIN_SIZE, MAX_SIZE = 64 << 10, 1 << 40


def heap_size_from_env():
    """``DITRON_SYMMETRIC_SIZE`` (bytes, or with a K/M/G suffix), else 64 MiB per rank;
    between 64 KiB and 1 TiB."""
    text = os.environ.get("DITRON_SYMMETRIC_SIZE", "").strip()
    if not text:
        return DEFAULT_SIZE
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1].upper(), 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise ValueError(f"DITRON_SYMMETRIC_SIZE={text!r}: expected a byte count like 268435456 "
                         "or 256M") from None
    if not MIN_SIZE <= value <= MAX_SIZE:        # (also refuses nan and inf)
        raise ValueError(f"DITRON_SYMMETRIC_SIZE={text!r}: the heap per rank must be between 64K and "
                         "1024G bytes, e.g. 256M")
    return int(value)


class SharedHeap:
    """The mapped heap file, seen from one rank."""

    def __init__(self, path, rank, world_size, size):
        self.path, self.rank, self.world_size, self.size = path, rank, world_size, size
        fd = os.open(path, os.O_RDWR)
        try:
            self.map = mmap.mmap(fd, size * world_size)
        finally:
            os.close(fd)
        import ctypes
        self._base = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        self.offset = 0

    @staticmethod
    def create(path, world_size, size):
        """Make the (sparse, zero-filled) heap file; done once, before the ranks start."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size * world_size)
        finally:
            os.close(fd)

    def base(self, pe):
        """Address of rank ``pe``'s heap in this process."""
        return self._base + pe * self.size

    def allocate(self, nbytes):
        """Offset (within each rank's heap) of a fresh zero-filled block of ``nbytes``."""
        off = self.offset
        end = off + max(int(nbytes), 1)
        if end > self.size:
            raise DitronError(f"rank {self.rank}: the symmetric heap is full ({self.size} bytes per "
                              f"rank, {off} used, {nbytes} asked for); set DITRON_SYMMETRIC_SIZE "
                              "larger (e.g. 1G)")
        self.offset = (end + ALIGN - 1) // ALIGN * ALIGN
        return off

    def tensor(self, offset, shape, dtype):
        """A torch tensor over this rank's bytes at ``offset``."""
        import torch
        n = 1
        for d in shape:
            n *= d
        if n == 0:
            return torch.empty(shape, dtype=dtype)
        start = self.rank * self.size + offset
        return torch.frombuffer(self.map, dtype=dtype, count=n, offset=start).view(shape)

    def owns(self, ptr, nbytes):
        """Whether ``[ptr, ptr + nbytes)`` lies in this rank's own heap."""
        lo = self.base(self.rank)
        return lo <= ptr and ptr + nbytes <= lo + self.size
