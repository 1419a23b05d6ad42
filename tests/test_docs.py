"""help() shows real documentation: every public class a user meets, and its public
methods and properties, have docstrings."""
import importlib
import inspect
import pydoc

import ditron as dt


def _met_classes():
    A = dt.placeholder((4,), name="A")
    B = dt.compute((4,), lambda i: A[i] + 1, name="B")
    s = dt.create_schedule(B)
    classes = {o for o in vars(dt).values() if inspect.isclass(o)}
    classes |= {type(A), type(A.op), type(B.op), type(B.op.axis[0]), type(s), type(s[B])}
    for name, cls in (("ditron.build.module", "Module"), ("ditron.runtime.module", "DistributedModule"),
                      ("ditron.target", "Target"), ("ditron.build.nvrtc", "NvrtcModule"),
                      ("ditron.codegen.launch_plan", "LaunchPlan"), ("ditron.codegen.launch_plan", "Step"),
                      ("ditron.codegen", "Rendered"), ("ditron.build.emulate", "EmulatedModule")):
        classes.add(getattr(importlib.import_module(name), cls))
    return classes


def test_public_classes_and_members_have_docstrings():
    missing = []
    for cls in _met_classes():
        if not inspect.getdoc(cls):
            missing.append(cls.__name__)
        for k, v in vars(cls).items():
            if k.startswith("_"):
                continue
            if isinstance(v, property):
                doc = v.fget.__doc__
            elif callable(v) or isinstance(v, (staticmethod, classmethod)):
                doc = getattr(v, "__doc__", None) or getattr(getattr(v, "__func__", None), "__doc__", None)
            else:
                continue
            if not doc:
                missing.append(f"{cls.__name__}.{k}")
    assert not missing, f"no docstring: {sorted(missing)}"


def test_help_on_a_stage_shows_its_properties():
    text = pydoc.render_doc(dt.Stage, renderer=pydoc.plaintext)
    for member in ("op", "name", "is_compute", "split", "bind"):
        assert f"\n |  {member}" in text, member
    op_doc = dt.Stage.op.__doc__.strip().splitlines()[0]
    assert op_doc in text
