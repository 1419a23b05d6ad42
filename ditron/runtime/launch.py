"""``dt.distributed.launch``: run a function on W emulated CPU ranks.

Each rank is a fresh (spawned) process with ``torch.distributed`` initialized over
gloo and the symmetric heap mapped (:func:`ditron.runtime.init`). With ``target="cuda"``
(or ``DITRON_EMULATE=1``) the ranks are emulated GPUs: modules built for the CUDA target
run on the emulator (:mod:`ditron.build.emulate`), NVSHMEM over the same heap. The caller gets the
ranks' return values, or one :class:`~ditron.errors.DitronError` naming every rank that
raised or died. A rank that dies (killed, crashed) does not leave the others hanging:
their waits on it time out (``DITRON_WAIT_TIMEOUT``), and whatever is still running a
grace period after the first failure is terminated.
"""
import os
import pickle
import queue
import shutil
import tempfile
import time
import traceback

from ..errors import DitronError


_IN_RANK = []        # non-empty in the processes that launch() starts


def _rank_main(fn, rank, world_size, store_dir, args, results, target="cpu"):
    if target != "cpu":              # (before anything builds: every CUDA build is emulated)
        os.environ["DITRON_EMULATE"] = "1"
    import torch
    import torch.distributed as tdist
    from . import init
    _IN_RANK.append(rank)
    torch.set_num_threads(1)       # W ranks share the machine's cores
    try:
        tdist.init_process_group("gloo", init_method=f"file://{os.path.join(store_dir, 'store')}",
                                 rank=rank, world_size=world_size)
        init(target)
        value = fn(*args)
        try:
            pickle.dumps(value)
        except Exception as e:  # noqa: BLE001 (the queue would fail later, in a feeder thread)
            results.put((rank, "error", f"rank {rank} returned a value that cannot be pickled "
                                        f"({type(value).__name__}: {type(e).__name__}: {e}); return plain "
                                        "data (numbers, lists, tensors) from the rank function"))
            return
        results.put((rank, "ok", value))
    except BaseException as e:  # noqa: BLE001 (reported to the caller, whatever it was)
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        try:
            results.put((rank, "error", f"{type(e).__name__}: {e}\n{text}"))
        except Exception:
            results.put((rank, "error", f"{type(e).__name__}: {e}"))
    finally:
        if tdist.is_initialized():
            tdist.destroy_process_group()


def launch(fn, world_size, args=(), target=None):
    """Run ``fn(*args)`` on ``world_size`` emulated ranks; returns the list of return values.

    ``fn`` and ``args`` must be picklable (a module-level function). Inside ``fn``,
    ``dt.distributed.rank()``, ``world_size()`` and ``empty()`` work, and modules built
    with ``world_size=W`` communicate through the shared symmetric heap.

    ``target``: what the ranks are. ``"cpu"`` (the default): CPU processes, for modules
    built for the CPU target. ``"cuda"`` (the default under ``DITRON_EMULATE=1``): emulated
    GPUs: every CUDA build inside the ranks is emulated (``DITRON_EMULATE=1`` is set in
    them), the world's target is "cuda", and ``dt.ops`` build for it.

    Raises
    ------
    DitronError
        If any rank raised (its traceback is included) or died.

    Examples
    --------
    >>> import ditron as dt
    >>> def hello():
    ...     return dt.distributed.rank()
    >>> dt.distributed.launch(hello, world_size=2)      # doctest: +SKIP
    [0, 1]
    """
    import multiprocessing as mp
    from . import wait_timeout
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if not callable(fn):
        raise TypeError(f"dt.distributed.launch: fn must be a function, got {type(fn).__name__}")
    from ..build.emulate import emulation_requested
    if target is None:
        target = "cuda" if emulation_requested(None) else "cpu"
    if target not in ("cpu", "cuda"):
        raise ValueError(f"dt.distributed.launch: target={target!r}; valid: 'cpu' (CPU ranks) and 'cuda' "
                         "(emulated GPUs); HIP has no emulated GPU yet")
    if not isinstance(args, (tuple, list)):
        raise TypeError(f"dt.distributed.launch: args must be a tuple of fn's arguments, got "
                        f"{type(args).__name__} (write args=({args!r},))")
    if _IN_RANK or mp.current_process().daemon:
        raise DitronError("dt.distributed.launch cannot be called from inside a rank (or another "
                          "distributed program): the ranks are already running; call the rank "
                          "function directly")
    for what, obj in (("fn", fn), ("args", tuple(args))):
        try:
            pickle.dumps(obj)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"dt.distributed.launch: {what} must be picklable, since each rank is a "
                            f"new process ({type(e).__name__}: {e}); use a function defined at the top "
                            "level of a module, and plain data as arguments") from None
    grace = wait_timeout() + 5.0
    ctx = mp.get_context("spawn")
    store_dir = tempfile.mkdtemp(prefix="ditron-ranks-")
    results = ctx.Queue()
    procs = [ctx.Process(target=_rank_main, args=(fn, r, world_size, store_dir, tuple(args), results, target),
                         name=f"ditron-rank-{r}", daemon=True) for r in range(world_size)]
    values, errors = {}, {}
    try:
        for p in procs:
            p.start()
        first_failure = None
        while len(values) + len(errors) < world_size:
            try:
                rank, status, payload = results.get(timeout=0.2)
                (values if status == "ok" else errors)[rank] = payload
                if status != "ok" and first_failure is None:
                    first_failure = time.monotonic()
                continue
            except queue.Empty:
                pass
            for r, p in enumerate(procs):
                if r in values or r in errors or p.is_alive():
                    continue
                # exited without a report: give its last message a moment to arrive
                try:
                    rank, status, payload = results.get(timeout=1.0)
                    (values if status == "ok" else errors)[rank] = payload
                    continue
                except queue.Empty:
                    pass
                if r not in values and r not in errors:
                    errors[r] = f"rank {r} died (exit code {p.exitcode}) without reporting"
                    if first_failure is None:
                        first_failure = time.monotonic()
            if first_failure is not None and time.monotonic() - first_failure > grace:
                for r, p in enumerate(procs):
                    if r not in values and r not in errors:
                        p.terminate()
                        errors[r] = (f"rank {r} was still running {grace:.0f} s after the first "
                                     "failure and was terminated")
    finally:
        for p in procs:
            if p.pid is None:          # start() failed (e.g. spawn re-importing an unguarded script)
                continue
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        shutil.rmtree(store_dir, ignore_errors=True)
    if errors:
        parts = [f"--- rank {r} ---\n{errors[r]}" for r in sorted(errors)]
        raise DitronError(f"{len(errors)} of {world_size} ranks failed:\n" + "\n".join(parts))
    return [values[r] for r in range(world_size)]
