"""The interpreter names the kernel reads from a file it executes (kernel/binfmt.py).

Each case states what load_script() (fs/binfmt_script.c) or
load_elf_binary() (fs/binfmt_elf.c) would open; the real binaries of the
machine are read too.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from unotifyd.kernel.binfmt import interpreter


def _elf(phoff: int, phnum: int, interp_at: int, interp_size: int, tail: bytes = b"") -> bytes:
    """A 64-bit little-endian ELF header with ``phnum`` PT_INTERP headers at ``phoff``."""
    head = bytearray(64)
    head[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", head, 32, phoff)
    struct.pack_into("<HH", head, 54, 56, phnum)
    phdr = struct.pack("<IIQQQQQQ", 3, 0, interp_at, 0, 0, interp_size, 0, 0)
    return bytes(head) + phdr + tail


@pytest.mark.parametrize(
    ("data", "want"),
    [
        (b"#!/bin/sh\necho\n", ("script", b"/bin/sh")),
        (b"#! \t/usr/bin/env python3 -u\n", ("script", b"/usr/bin/env")),
        (b"#!/x\r\n", ("script", b"/x\r")),  # only blanks end the name
        (b"#!/x\ty", ("script", b"/x")),
        (b"#!/bin/sh", ("script", b"/bin/sh")),  # the rest of the buffer is zeros
        (b"#!\n", None),  # no name: ENOEXEC
        (b"#!" + b"a" * 300, None),  # a name cut short by the buffer: ENOEXEC
        (b"#!" + b"a" * 100 + b" " + b"b" * 300, ("script", b"a" * 100)),
        (_elf(64, 1, 120, 6, b"/x/y\0\0"), ("loader", b"/x/y")),
        (_elf(64, 1, 120, 5, b"/x/yz"), None),  # not NUL-terminated
        (_elf(64, 1, 120, 1, b"\0"), None),  # shorter than 2
        (_elf(64, 200, 0, 0), None),  # a header table larger than a page
        (_elf(2**64 - 1, 1, 0, 0), None),  # offsets past any file
        (_elf(64, 1, 2**63 - 1, 10), None),
        (b"\x7fELF\x01\x01" + bytes(58), None),  # 32-bit: killed at its first call
        (b"plain text\n", None),
    ],
)
def test_the_name_the_kernel_reads(tmp_path: Path, data: bytes, want: object) -> None:
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert interpreter(fd) == want
    finally:
        os.close(fd)


def test_real_binaries() -> None:
    fd = os.open("/usr/bin/true", os.O_RDONLY)
    try:
        found = interpreter(fd)
    finally:
        os.close(fd)
    assert found is not None and found[0] == "loader" and b"ld-linux" in found[1]
