"""Executing a launch plan (:mod:`ditron.codegen.launch_plan`) from Python: what the nvcc
path's compiled host code does, for loaders without compiled host code (the NVRTC path,
the emulated GPU). The loader supplies how to launch a kernel and how to allocate."""
from ..codegen import launch_plan as lp
from ..codegen.launch_plan import unrunnable_step
from ..errors import DitronError

class PlanRunner:
    """The steps of ``plan`` (of kernel ``name``) ready for calls: expressions compiled
    (:func:`~ditron.codegen.launch_plan.evaluator`, over the call's scalars by position),
    names resolved to positions in the call's pointers (the arguments, then temporaries in
    allocation order) and scalars.

    ``run(ptrs, scalars, launch, allocate, read_div_flag=None, make_map=None)`` executes it
    for one call: ``launch(kernel, stage, grid, block, smem, ptrs, scalars, wide, maps)``
    launches a kernel (an empty grid is skipped here; ``maps`` are the TMA maps it takes
    first), ``allocate(dtype, count)`` returns a tensor whose memory a temporary uses (kept
    until its Free), ``read_div_flag()`` returns and resets the flag of checked integer
    divisions (plans with a CheckDivisions step need it), and ``make_map(step, address,
    rows, cols)`` makes the TMA map of a MakeTmaMap step (loaders built with ``tma_maps``).
    """

    def __init__(self, plan, name, tma_maps=False):
        self.plan, self.name = plan, name
        bad = unrunnable_step(plan, tma_maps)
        if bad is not None:
            raise DitronError(f"internal: kernel '{name}': the loader cannot run the step {bad.describe()}")
        scalar_index = {cname: i for i, (cname, _) in enumerate(plan.scalars)}
        wide = {cname: v.dtype == "int64" for cname, v in plan.scalars}
        var_names = [v.name for _, v in plan.scalars]
        slots = {a: i for i, a in enumerate(plan.pointers)}
        every_scalar = tuple(range(len(plan.scalars)))
        steps = []
        for step in plan.steps:
            if isinstance(step, lp.Comment):
                continue
            if isinstance(step, lp.Allocate):
                slots[step.buffer] = len(slots)
                steps.append(("allocate", step.buffer, step.dtype, lp.evaluator([step.count], var_names)))
            elif isinstance(step, lp.Free):
                steps.append(("free", step.buffer))
            elif isinstance(step, lp.Precondition):
                steps.append(("require", lp.evaluator([step.cond], var_names), step.message))
            elif isinstance(step, lp.CheckAlignment):
                steps.append(("align", slots[step.argument], step.argument, step.bytes))
            elif isinstance(step, lp.CheckDivisions):
                steps.append(("divisions", step.sites))
            else:
                maps = tuple((m, slots[m.tensor], lp.evaluator([m.rows, m.cols], var_names)) for m in step.setup)
                if tuple(step.args[:len(maps)]) != tuple(m.name for m, _, _ in maps):
                    raise DitronError(f"internal: kernel '{name}': {step.kernel} does not take its TMA maps first")
                args = step.args[len(maps):]
                ptrs = [a for a in args if a not in scalar_index]
                scalars = [a for a in args if a in scalar_index]
                if list(args) != ptrs + scalars:
                    raise DitronError(f"internal: kernel '{name}': {step.kernel} takes scalars before pointers")
                ptr_at = tuple(slots[a] for a in ptrs)
                scalar_at = tuple(scalar_index[a] for a in scalars)
                # None: the call's pointers (or scalars) as they are, the common case
                steps.append(("launch", step.kernel, step.stage, lp.evaluator(step.grid, var_names),
                              tuple(step.block), step.smem,
                              None if ptr_at == tuple(range(len(slots))) else ptr_at,
                              None if scalar_at == every_scalar else scalar_at, tuple(wide[a] for a in scalars),
                              maps))
        self.steps = steps

    def run(self, ptrs, scalars, launch, allocate, read_div_flag=None, make_map=None):
        ptrs, scalars = tuple(ptrs), tuple(scalars)
        temps = {}
        for step in self.steps:
            kind = step[0]
            if kind == "launch":
                _, kernel, stage, grid, block, smem, ptr_at, scalar_at, wide, maps = step
                made = tuple(make_map(m, ptrs[at], *shape(scalars)) for m, at, shape in maps)
                dims = grid(scalars)
                if min(dims) <= 0:
                    continue
                launch(kernel, stage, dims, block, smem, ptrs if ptr_at is None else tuple(ptrs[i] for i in ptr_at),
                       scalars if scalar_at is None else tuple(scalars[i] for i in scalar_at), wide, made)
            elif kind == "allocate":
                _, buf, dtype, count = step
                t = temps[buf] = allocate(dtype, int(count(scalars)[0]))
                ptrs += (t.data_ptr(),)
            elif kind == "require":
                if not step[1](scalars)[0]:
                    raise ValueError(f"kernel '{self.name}': {step[2]}")
            elif kind == "align":
                if ptrs[step[1]] % step[3]:
                    raise ValueError(f"kernel '{self.name}': argument {step[2]} must be {step[3]}-byte aligned "
                                     "(vector accesses)")
            elif kind == "free":
                # (torch's allocator orders the memory's reuse after the work already queued
                # on the current stream)
                del temps[step[1]]
            else:       # "divisions"
                site = read_div_flag()
                if site:
                    where = step[1][site - 1] if 0 < site <= len(step[1]) else f"integer division by zero (site {site})"
                    raise ZeroDivisionError(f"kernel '{self.name}': {where}")
