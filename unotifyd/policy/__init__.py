"""The policy layer: rules, path matching, policy files and decisions.

Pure Python with no I/O (except :func:`load_policy`, which reads the policy
file) and no trio: everything here is a function of its arguments, so it is
tested in milliseconds without a kernel. The kernel layer decodes a trapped
system call into a request, asks a ``decide_*`` function, and applies the
returned :data:`Decision`.
"""

from __future__ import annotations

from .config import (
    FORMAT_VERSION,
    PolicyError,
    combine,
    load_policy,
    parse_policy,
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
from .rules import (
    MODES,
    OPEN_SYSCALLS,
    Deny,
    DuplicateRuleError,
    Match,
    Pattern,
    Policy,
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

__all__ = [
    "FORMAT_VERSION",
    "MODES",
    "OPEN_SYSCALLS",
    "Continue",
    "Decision",
    "Deny",
    "DuplicateRuleError",
    "EmulateOpen",
    "Fail",
    "Found",
    "Match",
    "OpenRequest",
    "Pattern",
    "Policy",
    "PolicyError",
    "ReadOnly",
    "Redirect",
    "RefuseWrite",
    "Return",
    "Rule",
    "combine",
    "decide_open",
    "errno_name",
    "load_policy",
    "normalize_path",
    "parse_deny",
    "parse_errno",
    "parse_pattern",
    "parse_policy",
    "parse_readonly",
    "parse_redirect",
    "refuse_write_errno",
    "rule_pattern",
    "rules_from_options",
]
