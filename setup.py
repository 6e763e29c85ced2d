"""Builds the compiled parts of unotifyd with the package, and its commands.

- The pass-through lane (unotifyd/kernel/passthrough.c): a plain C library
  loaded through ctypes, not a Python extension.
- The daemon's client in C (unotifyd/daemon/launch.c), the program
  ``unotifyd-launch`` next to it: ``python3 -m unotifyd launch --daemon``
  execs it, and a launch through the daemon then costs no Python imports.
- The ``unotifyd`` command: the same source built as a front
  (``-DUNOTIFYD_FRONT``), which makes a plain ``launch --daemon`` itself and
  starts no Python for it, and runs ``unotifyd-python`` (the console script
  of pyproject.toml, installed beside it) for every other command.

All three need a C compiler and the kernel headers (gcc and linux-libc-dev
on Debian), not Python's. Without them the build says so and goes on:
unotifyd then serves every call in Python (kernel/passthrough.py finds no
library), ``launch --daemon`` runs the Python client
(unotifyd/daemon/client.py), and ``unotifyd`` is a shell script that runs
``unotifyd-python`` (unotifyd/daemon/unotifyd).
"""

import os
import shutil

from setuptools import Distribution, Extension, setup
from setuptools.command.build_ext import build_ext

# setuptools has no module of its own for build_scripts (it is distutils'
# class, which Python 3.12 no longer ships and setuptools carries): this is
# the class a build would use.
build_scripts = Distribution().get_command_class("build_scripts")

CLIENT_SOURCE = "unotifyd/daemon/launch.c"
CLIENT_PACKAGE = "unotifyd.daemon"
CLIENT_NAME = "unotifyd-launch"
COMMAND = "unotifyd"
FORWARDER = "unotifyd/daemon/unotifyd"
CFLAGS = ["-O2", "-Wall", "-Wextra", "-pthread"]


class BuildExt(build_ext):
    """build_ext, and the client and front programs with the same compiler."""

    #: The front, built in build_temp, for BuildScripts; None if it was not.
    front: str | None = None

    def run(self) -> None:
        super().run()
        built = os.path.join(self.build_lib, *CLIENT_PACKAGE.split("."))
        front_objects = os.path.join(self.build_temp, "front")
        front_dir = os.path.join(self.build_temp, "command")
        try:
            objects = self.compiler.compile(
                [CLIENT_SOURCE], output_dir=self.build_temp, extra_postargs=CFLAGS
            )
            self.compiler.link_executable(
                objects, CLIENT_NAME, output_dir=built, extra_postargs=["-pthread"]
            )
            # A second object of the same source: compile() names it by the
            # source, so it goes in a directory of its own.
            objects = self.compiler.compile(
                [CLIENT_SOURCE],
                output_dir=front_objects,
                macros=[("UNOTIFYD_FRONT", None)],
                extra_postargs=CFLAGS,
            )
            self.compiler.link_executable(
                objects, COMMAND, output_dir=front_dir, extra_postargs=["-pthread"]
            )
        except Exception as e:  # CompileError, LinkError: optional, as the lane is
            self.warn(
                f"building {CLIENT_NAME} and {COMMAND} from {CLIENT_SOURCE} failed ({e}): "
                f"launch --daemon runs in Python, and {COMMAND} is {FORWARDER}"
            )
            return
        self.front = os.path.join(front_dir, COMMAND)
        if self.inplace:
            package_dir = self.get_finalized_command("build_py").get_package_dir(CLIENT_PACKAGE)
            self.copy_file(os.path.join(built, CLIENT_NAME), os.path.join(package_dir, CLIENT_NAME))


class BuildScripts(build_scripts):
    """build_scripts, with the front BuildExt built as ``unotifyd``.

    The script of that name runs ``unotifyd-python`` beside it: what
    ``unotifyd`` is where the front was not built. build runs build_ext
    before build_scripts; install_scripts installs every file of build_dir.
    """

    def run(self) -> None:
        super().run()
        front = self.get_finalized_command("build_ext").front
        if front:
            # Not copy_file, which skips a target newer than its source.
            command = os.path.join(self.build_dir, COMMAND)
            shutil.copyfile(front, command)
            os.chmod(command, 0o755)


setup(
    cmdclass={"build_ext": BuildExt, "build_scripts": BuildScripts},
    scripts=[FORWARDER],
    ext_modules=[
        Extension(
            "unotifyd.kernel._passthrough",
            ["unotifyd/kernel/passthrough.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        )
    ],
)
