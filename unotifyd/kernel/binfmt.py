"""What else the kernel opens and runs when it executes a file: its interpreter.

An ``execve`` of a ``#!`` script runs the interpreter its first line names
(fs/binfmt_script.c), and one of a dynamic ELF binary maps the loader its
``PT_INTERP`` program header names (load_elf_binary() in fs/binfmt_elf.c).
The kernel opens either by that name itself, with no system call a filter
could trap, so whoever decides what a program may run must read the name
where the kernel reads it. Only the formats the filter lets run are read:
a 32-bit binary is killed at its first system call (``kernel/filter.py``),
before its loader could do anything.
"""

from __future__ import annotations

import os
import struct
from typing import Literal

#: binfmt_script reads the first line from a buffer of this size (BINPRM_BUF_SIZE).
_SCRIPT_HEAD = 256
# Elf64_Ehdr: e_phoff at 32, e_phentsize and e_phnum at 54 (include/uapi/linux/elf.h).
_EHDR = struct.Struct("<32xQ14xHH")
# Elf64_Phdr: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz.
_PHDR = struct.Struct("<IIQQQQ")
_PT_INTERP = 3
_ELF64_LE = b"\x7fELF\x02\x01"  # ELFMAG, ELFCLASS64, ELFDATA2LSB
_PHDR_SIZE = 64 - 8  # sizeof(Elf64_Phdr): the six fields above and p_memsz, p_align
#: elf_read_phdrs() refuses a program header table larger than a page, and
#: load_elf_binary() a PT_INTERP longer than PATH_MAX.
_PHDRS_MAX = 4096
_PATH_MAX = 4096
_BLANKS = b" \t"
#: Offsets past this are no file's (loff_t is signed): os.pread would raise.
_OFF_MAX = (1 << 63) - 1

Kind = Literal["script", "loader"]


def interpreter(fd: int) -> tuple[Kind, bytes] | None:
    """The interpreter the kernel would run for the file open at ``fd``, and
    which kind of one; None for a file that names none (a static binary,
    or one the kernel will refuse: ENOEXEC). Raises OSError."""
    head = os.pread(fd, _SCRIPT_HEAD, 0)
    if head.startswith(b"#!"):
        return _script_interpreter(head)
    if not head.startswith(_ELF64_LE) or len(head) < _EHDR.size:
        return None
    phoff, phentsize, phnum = _EHDR.unpack_from(head)
    if phentsize != _PHDR_SIZE or not 0 < phnum * phentsize <= _PHDRS_MAX:
        return None  # ENOEXEC (elf_read_phdrs())
    if phoff > _OFF_MAX - phnum * phentsize:
        return None  # no such offset: the kernel's read comes back short (ENOEXEC)
    table = os.pread(fd, phnum * phentsize, phoff)
    for i in range(len(table) // phentsize):
        p_type, _, offset, _, _, size = _PHDR.unpack_from(table, i * phentsize)
        if p_type != _PT_INTERP:
            continue
        if not 2 <= size <= _PATH_MAX or offset > _OFF_MAX - size:
            return None  # ENOEXEC
        name = os.pread(fd, size, offset)
        if len(name) != size or name[-1] != 0:
            return None  # ENOEXEC: the name must end with its NUL
        return ("loader", name[:-1].split(b"\0", 1)[0])
    return None


def _script_interpreter(head: bytes) -> tuple[Kind, bytes] | None:
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
    return ("script", name) if name else None
