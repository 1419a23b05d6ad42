"""Which program each rank runs: module headers, call records, and the first-call check.

Ranks that call different communicating modules, or the same one with other shapes, must
fail, naming what each rank called, instead of exchanging meaningless data (every
module's buffers sit at the same heap offsets when the ranks allocated the same sizes,
and flags carry only the call's epoch). Three pieces make that so:

* **Module header.** A module's symmetric block starts with a header: a magic number,
  the module's identity (a 63-bit hash of its generated source, which holds every shape,
  dtype and strategy) and a description of the call (``name(arg: dtype[shape], ...)``).
* **First-call check.** On its first call a module allocates its block and every rank
  exchanges ``(identity, description, heap offset)`` over the world's gloo group, which
  times out after ``DITRON_WAIT_TIMEOUT``. A rank whose peers called something else, or
  placed the block elsewhere (they allocated different symmetric tensors before), raises
  a :class:`~ditron.DitronError` naming every rank's call.
* **Call records** (CPU target). Each rank's heap begins with a record of its current
  call: how many communicating calls it has made (``seq``), the heap offset of that
  call's module header, and its epoch. Every call updates it (``shm_begin_call``), and a
  wait that does not complete at once compares its own record with the sending rank's
  (``shm_wait`` in csrc/ditron/shmem_cpu.h): the same call number with another module
  means the ranks called different programs, and the wait fails at once, naming both
  calls. A timed-out wait names what the sender was doing.

Layouts (int64 words): record ``[2 * seq, header offset, epoch, failed]`` (a seqlock: the
first word is odd while the rank rewrites the record); header ``[magic, identity,
description length, description bytes ...]``.

On GPUs (NVSHMEM / rocSHMEM) the first-call check runs as on the CPU; the per-call
records are not kept yet (their waits cannot time out outside ``DITRON_DEBUG=1`` builds),
so a later mismatch in call order hangs there as it did before.
"""
import hashlib
import re

from ..errors import DitronError
from ..target import make_target

MAGIC = 0x444954524f4e4d48          # "DITRONMH"
HEADER_BYTES = 512
RECORD_BYTES = 256
DESCRIPTION_MAX = HEADER_BYTES - 3 * 8


def identity(source, world_size, name=None):
    """A module's identity: 63 bits of sha256 over its source (with its kernel name taken
    out: ranks may name the same program differently) and the world size."""
    if name:
        source = re.sub(rf"\b{re.escape(name)}(?=_|\b)", "@", source)
    h = hashlib.sha256(f"{world_size}\n{source}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def describe(signature):
    """``name(arg: dtype[shape], ...)``: what a rank called, for messages."""
    args = ", ".join(f"{a.name}: {a.dtype}[{', '.join(str(d) for d in a.shape)}]" for a in signature.args)
    text = f"'{signature.name}'({args})"
    return text if len(text) <= DESCRIPTION_MAX else text[:DESCRIPTION_MAX - 3] + "..."


def write_header(heap, offset, ident, text):
    """Fill the module header at ``offset`` of this rank's heap."""
    import torch
    raw = text.encode()[:DESCRIPTION_MAX]
    words = torch.zeros(HEADER_BYTES // 8, dtype=torch.int64)
    words[0], words[1], words[2] = MAGIC, ident, len(raw)
    body = words.view(torch.uint8)
    body[24:24 + len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    heap.tensor(offset, (HEADER_BYTES // 8,), torch.int64).copy_(words.to(_device(heap)))


def _device(heap):
    # torch names every GPU "cuda", ROCm's too
    return "cuda" if make_target(getattr(heap, "target", "cpu")).is_gpu else "cpu"


def check_first_call(world, ident, text, offset, seq):
    """Every rank's first call of this module: the same identity at the same heap offset
    (``offset`` from the world's first allocation; ``seq``: calls this rank made before).
    DitronError naming every rank's call otherwise (or when a peer does not get here
    within the wait timeout)."""
    if world.world_size == 1 or world.group is None:
        return
    import torch.distributed as tdist
    mine = (ident, text, offset, seq)
    got = [None] * world.world_size
    try:
        tdist.all_gather_object(got, mine, group=world.group)
    except Exception as e:  # noqa: BLE001 (gloo reports a timeout or a closed peer as it likes)
        raise DitronError(
            f"rank {world.rank}: the first call of {text} did not meet the other ranks' first calls "
            f"within DITRON_WAIT_TIMEOUT ({world.timeout:.0f} s): some rank called another "
            "communicating module first, none, or died; every rank must call the same modules in "
            f"the same order ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    calls = "; ".join(f"rank {r}: {t}" for r, (_, t, _, _) in enumerate(got))
    if any(g[0] != ident for g in got):
        raise DitronError(f"ranks called different communicating modules (or the same one with other "
                          f"shapes) at the same point: {calls}. Every rank must call the same modules, "
                          "with the same shapes, in the same order")
    if any(g[2] != mine[2] for g in got):
        where = ", ".join(f"rank {r} at {g[2]}" for r, g in enumerate(got))
        raise DitronError(f"{text}: the ranks placed its buffers at different symmetric heap offsets "
                          f"({where}): they allocated different symmetric tensors before (every rank "
                          "must call dt.distributed.empty with the same shapes, in the same order)")


def record(heap, offset):
    """This rank's call record (a writable int64 view)."""
    import torch
    return heap.tensor(offset, (RECORD_BYTES // 8,), torch.int64)
