"""Builds the two compiled parts of unotifyd with the package.

- The pass-through lane (unotifyd/kernel/passthrough.c): a plain C library
  loaded through ctypes, not a Python extension.
- The daemon's client in C (unotifyd/daemon/launch.c), the program
  ``unotifyd-launch`` next to it: ``unotifyd launch --daemon`` execs it, and a
  launch through the daemon then costs no Python imports.

Both need a C compiler and the kernel headers (gcc and linux-libc-dev on
Debian), not Python's. Without them the build says so and goes on: unotifyd
then serves every call in Python (kernel/passthrough.py finds no library),
and ``launch --daemon`` runs the Python client (unotifyd/daemon/client.py).
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CLIENT_SOURCE = "unotifyd/daemon/launch.c"
CLIENT_PACKAGE = "unotifyd.daemon"
CLIENT_NAME = "unotifyd-launch"


class BuildExt(build_ext):
    """build_ext, and the client program with the same compiler."""

    def run(self) -> None:
        super().run()
        built = os.path.join(self.build_lib, *CLIENT_PACKAGE.split("."))
        try:
            objects = self.compiler.compile(
                [CLIENT_SOURCE], output_dir=self.build_temp,
                extra_postargs=["-O2", "-Wall", "-Wextra", "-pthread"],
            )
            self.compiler.link_executable(
                objects, CLIENT_NAME, output_dir=built, extra_postargs=["-pthread"]
            )
        except Exception as e:  # CompileError, LinkError: optional, as the lane is
            self.warn(f"building {CLIENT_NAME} failed ({e}): launch --daemon runs in Python")
            return
        if self.inplace:
            package_dir = self.get_finalized_command("build_py").get_package_dir(CLIENT_PACKAGE)
            self.copy_file(os.path.join(built, CLIENT_NAME), os.path.join(package_dir, CLIENT_NAME))


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=[
        Extension(
            "unotifyd.kernel._passthrough",
            ["unotifyd/kernel/passthrough.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        )
    ],
)
