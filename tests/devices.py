"""Where the tests marked ``gpu`` run: a CUDA device, or, without one and with
``DITRON_EMULATE=1``, the emulated GPU (ditron/build/emulate.py), whose modules take CPU
tensors (tests/conftest.py decides which tests run)."""
import os

import torch

EMULATED = not torch.cuda.is_available() and os.environ.get("DITRON_EMULATE", "") not in ("", "0")
DEVICE = "cpu" if EMULATED else "cuda"


def synchronize():
    """Wait for the device (nothing to wait for on the emulated GPU: calls return when done)."""
    if not EMULATED:
        torch.cuda.synchronize()


def is_hopper():
    """Whether wgmma kernels run here: an sm_90 device, or the emulated GPU."""
    return EMULATED or (torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0))
