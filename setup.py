"""Builds the compiled pass-through lane (unotifyd/kernel/passthrough.c) with the package.

A plain C library loaded through ctypes, not a Python extension: it needs a
C compiler and the kernel headers (gcc and linux-libc-dev on Debian), not
Python's. Without them the build says so and goes on: unotifyd then serves
every call in Python (kernel/passthrough.py finds no library).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "unotifyd.kernel._passthrough",
            ["unotifyd/kernel/passthrough.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
