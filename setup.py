"""Packaging: the ditron package, its templates and helper headers, and the ditron._C loader."""
import os
import re
import shutil

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup, find_packages
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "ditron", "version.py")) as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


class BuildPyWithHeaders(build_py):
    """Ship csrc/ditron/*.h inside the package (ditron/_csrc) for non-editable installs."""

    def run(self):
        super().run()
        dst = os.path.join(self.build_lib, "ditron", "_csrc", "ditron")
        shutil.copytree(os.path.join(HERE, "csrc", "ditron"), dst, dirs_exist_ok=True)


setup(
    name="ditron",
    version=VERSION,
    description="A compiler for single- and multi-GPU tensor programs",
    packages=find_packages(include=["ditron", "ditron.*"]),
    package_data={"ditron": ["templates/*/*", "templates/*/*/*"]},
    include_package_data=True,
    ext_modules=[Pybind11Extension("ditron._C", ["csrc/ditron_C.cpp"], cxx_std=17,
                                   extra_link_args=["-ldl"])],
    cmdclass={"build_ext": build_ext, "build_py": BuildPyWithHeaders},
    python_requires=">=3.9",
    install_requires=["jinja2>=3", "numpy", "torch>=2.4"],
    # The test extra brings what pip can install of what the tests use: NVSHMEM (headers and
    # device library, for the CUDA communication compile checks) and NVRTC (the CUDA target's
    # NVRTC build path), and pytest-xdist (the suite runs on every core: most of its time is
    # compilers). Compilers (g++, nvcc, hipcc) and cmake come from the system.
    extras_require={"test": ["pytest", "pytest-xdist", "hypothesis", "pybind11>=2.10",
                             "nvidia-nvshmem-cu13; sys_platform == 'linux'",
                             "nvidia-cuda-nvrtc; sys_platform == 'linux'"]},
    entry_points={"console_scripts": ["ditron = ditron.cli:main"]},
)
