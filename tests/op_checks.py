"""Checks of the library ops shared by the tests that run them on ranks: the emulated GPU's
(tests/test_emulate_distributed.py) and a real GPU's (tests/test_nvshmem_gpu.py)."""
import torch

import ditron as dt


def reduce_and_gather_failures(x, parts, copy, call):
    """``dt.ops.all_reduce`` (one and two shot) and ``all_gather`` (push and pull) of ``x``
    with ``copy``, where rank q holds ``parts[q]``, against torch: what went wrong (call:
    the call's number, for the report)."""
    bad = []
    for algorithm in ("one_shot", "two_shot"):
        if not torch.allclose(dt.ops.all_reduce(x, algorithm=algorithm, copy=copy), sum(parts)):
            bad.append(("all_reduce", algorithm, copy, call))
    for algorithm in ("push", "pull"):
        if not torch.equal(dt.ops.all_gather(x, algorithm=algorithm, copy=copy), torch.cat(parts)):
            bad.append(("all_gather", algorithm, copy, call))
    return bad
