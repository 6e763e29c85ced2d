"""The trio supervisor that serves seccomp notifications."""
