"""The system calls unotifyd traps: the registry, decoding, and the operations.

Between the policy (which decides) and the serving layer (which answers):
:mod:`.registry` lists every trapped call, :mod:`.decode` reads a call's
arguments from the program, :mod:`.ops` performs a path call on the places a
decision chose.
"""
