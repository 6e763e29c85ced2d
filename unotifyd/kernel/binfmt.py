"""What else the kernel opens and runs when it executes a file: its interpreter.

An ``execve`` of a ``#!`` script runs the interpreter its first line names
(fs/binfmt_script.c), and one of a dynamic ELF binary maps the loader its
``PT_INTERP`` program header names (load_elf_binary() in fs/binfmt_elf.c).
The kernel opens either by that name itself, with no system call a filter
could trap, so whoever decides what a program may run must read the name
where the kernel reads it (binfmt_misc, whose interpreters are registered
in ``/proc/sys/fs/binfmt_misc``, is left to the README's limits).
"""

from __future__ import annotations

import os
import struct
from typing import Literal

from ..record import record

#: binfmt_script reads the first line from a buffer of this size (BINPRM_BUF_SIZE).
_SCRIPT_HEAD = 256
_PT_INTERP = 3
#: e_machine, at the same offset in both classes; the kernel reads the header
#: in its own byte order (little-endian here) whatever EI_DATA says.
_MACHINE = struct.Struct("<18xH")
_EM_386, _EM_486, _EM_X86_64 = 3, 6, 62
#: elf_read_phdrs() refuses a program header table larger than a page, and
#: load_elf_binary() a PT_INTERP longer than PATH_MAX.
_PHDRS_MAX = 4096
_PATH_MAX = 4096
_BLANKS = b" \t"
#: Offsets past this are no file's (loff_t is signed): os.pread would raise.
_OFF_MAX = (1 << 63) - 1

Kind = Literal["script", "loader"]


@record(frozen=True)
class _Layout:
    """Where an ELF class keeps what binfmt_elf reads (include/uapi/linux/elf.h)."""

    ehdr: struct.Struct  # e_phoff, e_phentsize, e_phnum
    phdr: struct.Struct  # p_type, p_offset, p_filesz
    phentsize: int


_ELF64 = _Layout(struct.Struct("<32xQ14xHH"), struct.Struct("<I4xQ16xQ"), 56)
_ELF32 = _Layout(struct.Struct("<28xI10xHH"), struct.Struct("<II8xI"), 32)


def interpreters(fd: int) -> list[tuple[Kind, bytes]]:
    """The interpreters the kernel could run for the file open at ``fd``, each
    with its kind; none for a file that names none (a static binary, or one
    the kernel refuses: ENOEXEC). Raises OSError.

    A script names one. An ELF file is read as every handler that may take
    it would read it: binfmt_elf checks the magic and ``e_machine``, not
    ``EI_CLASS`` or ``EI_DATA``, and the compat handler takes 32-bit
    binaries (``EM_386``, and x32's ``EM_X86_64``). A 32-bit loader runs
    before any system call, and may switch to 64-bit code and make calls
    the filter takes for x86_64 ones: it must be read too.
    """
    head = os.pread(fd, _SCRIPT_HEAD, 0)
    if head.startswith(b"#!"):
        script = _script_interpreter(head)
        return [("script", script)] if script is not None else []
    if not head.startswith(b"\x7fELF") or len(head) < 64:
        return []
    (machine,) = _MACHINE.unpack_from(head)
    layouts: tuple[_Layout, ...]
    if machine == _EM_X86_64:
        layouts = (_ELF64, _ELF32)
    elif machine in (_EM_386, _EM_486):
        layouts = (_ELF32,)
    else:
        return []
    found = (_loader(fd, head, layout) for layout in layouts)
    return [("loader", name) for name in dict.fromkeys(found) if name is not None]


def _loader(fd: int, head: bytes, layout: _Layout) -> bytes | None:
    """The first PT_INTERP name of the ELF file at ``fd`` read with ``layout``, as
    load_elf_binary() reads it; None where it names none or would fail (ENOEXEC)."""
    phoff, phentsize, phnum = layout.ehdr.unpack_from(head)
    size = phnum * phentsize
    if phentsize != layout.phentsize or not 0 < size <= _PHDRS_MAX or phoff > _OFF_MAX - size:
        return None
    table = os.pread(fd, size, phoff)
    for i in range(len(table) // phentsize):
        p_type, offset, length = layout.phdr.unpack_from(table, i * phentsize)
        if p_type != _PT_INTERP:
            continue
        if not 2 <= length <= _PATH_MAX or offset > _OFF_MAX - length:
            return None
        name = os.pread(fd, length, offset)
        if len(name) != length or name[-1] != 0:
            return None  # the name must end with its NUL
        return name[:-1].split(b"\0", 1)[0]
    return None


def _script_interpreter(head: bytes) -> bytes | None:
    """The interpreter a ``#!`` line names, split as load_script() splits it.

    Only spaces and tabs separate words there, and a NUL ends the name: a
    name is taken byte for byte, so that ``#!/x\r`` names ``/x\r`` (not
    ``/x``), as for the kernel. The kernel reads the line from a buffer of
    :data:`_SCRIPT_HEAD` zeroed bytes; a line that fills it without a
    newline must hold a whole name, followed by a blank or NUL.
    """
    line = head[2:].ljust(_SCRIPT_HEAD - 2, b"\0")
    newline = line.find(b"\n")
    whole = newline >= 0
    if whole:
        line = line[:newline]
    name = line.lstrip(_BLANKS)
    ends = [i for i in (name.find(b" "), name.find(b"\t"), name.find(b"\0")) if i >= 0]
    if not ends and not whole:
        return None  # ENOEXEC: the name may be cut short
    name = name[: min(ends)] if ends else name
    return name or None
