"""The thin, synchronous Linux ABI layer: seccomp, /proc, fd passing."""
