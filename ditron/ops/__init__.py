"""Ready kernels written in ditron itself, callable like torch functions."""
from .collectives import all_gather, all_reduce, reduce_scatter, all_to_all  # noqa: F401
from .gemm import ag_gemm, gemm_rs, gemm_ar  # noqa: F401
