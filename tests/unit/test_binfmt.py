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

from unotifyd.kernel.binfmt import interpreters


def _elf(
    phoff: int, phnum: int, interp_at: int, interp_size: int, tail: bytes = b"", *,
    ident: bytes = b"\x7fELF\x02\x01", machine: int = 62,
) -> bytes:
    """A 64-bit ELF header (as binfmt_elf reads it) with ``phnum`` PT_INTERP headers."""
    head = bytearray(64)
    head[: len(ident)] = ident
    struct.pack_into("<H", head, 18, machine)
    struct.pack_into("<Q", head, 32, phoff)
    struct.pack_into("<HH", head, 54, 56, phnum)
    phdr = struct.pack("<IIQQQQQQ", 3, 0, interp_at, 0, 0, interp_size, 0, 0)
    return bytes(head) + phdr + tail


def _elf32(interp: bytes, machine: int = 3) -> bytes:
    """A 32-bit ELF header with one PT_INTERP header naming ``interp``."""
    head = bytearray(52)
    head[:6] = b"\x7fELF\x01\x01"
    struct.pack_into("<H", head, 18, machine)
    struct.pack_into("<I", head, 28, 52)
    struct.pack_into("<HH", head, 42, 32, 1)
    phdr = struct.pack("<IIIIIIII", 3, 84, 0, 0, len(interp) + 1, 0, 0, 0)
    return bytes(head) + phdr + interp + b"\0"


@pytest.mark.parametrize(
    ("data", "want"),
    [
        (b"#!/bin/sh\necho\n", [("script", b"/bin/sh")]),
        (b"#! \t/usr/bin/env python3 -u\n", [("script", b"/usr/bin/env")]),
        (b"#!/x\r\n", [("script", b"/x\r")]),  # only blanks end the name
        (b"#!/x\ty", [("script", b"/x")]),
        (b"#!/bin/sh", [("script", b"/bin/sh")]),  # the rest of the buffer is zeros
        (b"#!\n", []),  # no name: ENOEXEC
        (b"#!" + b"a" * 300, []),  # a name cut short by the buffer: ENOEXEC
        (b"#!" + b"a" * 100 + b" " + b"b" * 300, [("script", b"a" * 100)]),
        (_elf(64, 1, 120, 6, b"/x/y\0\0"), [("loader", b"/x/y")]),
        (_elf(64, 1, 120, 5, b"/x/yz"), []),  # not NUL-terminated
        (_elf(64, 1, 120, 1, b"\0"), []),  # shorter than 2
        (_elf(64, 200, 0, 0), []),  # a header table larger than a page
        (_elf(2**64 - 1, 1, 0, 0), []),  # offsets past any file
        (_elf(64, 1, 2**63 - 1, 10), []),
        # binfmt_elf reads e_machine, not EI_CLASS or EI_DATA (an audit ran such copies)
        (_elf(64, 1, 120, 6, b"/x/y\0\0", ident=b"\x7fELF\x01\x02"), [("loader", b"/x/y")]),
        (_elf(64, 1, 120, 6, b"/x/y\0\0", machine=40), []),  # ARM: no handler here
        # 32-bit: its loader runs before any call, and can switch to 64-bit code
        (_elf32(b"/lib/ld-linux.so.2"), [("loader", b"/lib/ld-linux.so.2")]),
        (_elf32(b"/x", machine=6), [("loader", b"/x")]),
        (b"plain text\n", []),
    ],
)
def test_the_name_the_kernel_reads(tmp_path: Path, data: bytes, want: object) -> None:
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert interpreters(fd) == want
    finally:
        os.close(fd)


def test_real_binaries() -> None:
    fd = os.open("/usr/bin/true", os.O_RDONLY)
    try:
        found = interpreters(fd)
    finally:
        os.close(fd)
    assert len(found) == 1 and found[0][0] == "loader" and b"ld-linux" in found[0][1]
