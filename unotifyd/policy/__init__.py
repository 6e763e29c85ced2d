"""The policy layer: rules, path matching, policy files and decisions.

Pure Python with no I/O (except :func:`load_policy`, which reads the policy
file, and :func:`read_content_file`, which reads the files content rules
name) and no trio: everything here is a function of its arguments, so it is
tested in milliseconds without a kernel. The kernel layer decodes a trapped
system call into a request, asks a ``decide_*`` function, and applies the
returned :data:`Decision`.
"""

from __future__ import annotations

from .config import (
    FORMAT_VERSION,
    MAX_CONTENT_SIZE,
    PolicyError,
    combine,
    load_policy,
    parse_content,
    parse_exec,
    parse_policy,
    parse_private,
    read_content_file,
    rules_from_options,
)
from .decision import (
    Continue,
    Decision,
    EmulateOpen,
    Fail,
    Found,
    OpenRequest,
    RefuseWrite,
    Return,
    decide_open,
    refuse_write_errno,
)
from .paths import (
    MapPath,
    PathDecision,
    PathRequest,
    RefuseChange,
    Role,
    decide_path,
    refuse_change_errno,
)
from .rules import (
    MODES,
    OPEN_SYSCALLS,
    Content,
    Deny,
    DuplicateRuleError,
    Exec,
    Match,
    Pattern,
    Policy,
    Private,
    ReadOnly,
    Redirect,
    Rule,
    errno_name,
    normalize_path,
    parse_deny,
    parse_errno,
    parse_pattern,
    parse_readonly,
    parse_redirect,
    rule_pattern,
)
from .syscalls import needed_syscalls

__all__ = [
    "FORMAT_VERSION",
    "MAX_CONTENT_SIZE",
    "MODES",
    "OPEN_SYSCALLS",
    "Content",
    "Continue",
    "Decision",
    "Deny",
    "DuplicateRuleError",
    "EmulateOpen",
    "Exec",
    "Fail",
    "Found",
    "MapPath",
    "Match",
    "OpenRequest",
    "PathDecision",
    "PathRequest",
    "Pattern",
    "Policy",
    "PolicyError",
    "Private",
    "ReadOnly",
    "Redirect",
    "RefuseChange",
    "RefuseWrite",
    "Return",
    "Role",
    "Rule",
    "combine",
    "decide_open",
    "decide_path",
    "errno_name",
    "load_policy",
    "needed_syscalls",
    "normalize_path",
    "parse_content",
    "parse_deny",
    "parse_errno",
    "parse_exec",
    "parse_pattern",
    "parse_policy",
    "parse_private",
    "parse_readonly",
    "parse_redirect",
    "read_content_file",
    "refuse_change_errno",
    "refuse_write_errno",
    "rule_pattern",
    "rules_from_options",
]
