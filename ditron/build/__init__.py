"""Compiler drivers, the kernel cache, the loader and export."""
from .cache import cache_dir
from .compile import compile_library
from .module import Module
from .export import export
from . import toolchain
