"""Where the time of one pass-through notification goes: ``python3 benchmarks/breakdown.py``.

Not a section of run.py: it drives unotifyd's own classes from a plain loop
(no trio, no trace), as root, from a checkout. ``openloop`` opens a path N
times under unotifyd's filter (SYNC_WAKE_UP on), and the loop answers each
notification doing a little more each time; the difference between two
variants is what the extra step costs per notification, the program's side
included (cache and TLB misses after each switch count too):

- ``recv+send``: RECV and CONTINUE, nothing else (what any supervisor pays);
- ``+read``: and the path read from the program (process_vm_readv);
- ``+root``: and the stat of /proc/TID/root (does it have a root of its own?), which
  ``full`` makes once per listener, as launch does (``Served.root_pinned``);
- ``+resolve``: and the path resolved as the program would (openat2, readlink);
- ``full``: ``Dispatcher.handle``: the same plus decoding, the policy, counters;
- ``lane``: the compiled pass-through lane (unotifyd/kernel/passthrough.c) answers what it
  may and forwards the rest to ``Dispatcher.handle``, as launch serves by default (not a
  step: the whole of another way; its row's step column compares it with ``full``).

The C reference (``ref_unotify -w``, ``ref_unotify.c`` here) runs in the same rounds. Each figure
is the median over rounds of openloop's own ns per open+close.
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import prepare  # noqa: E402
from harness import BenchError  # noqa: E402

from unotifyd.files import validated  # noqa: E402
from unotifyd.kernel.errors import ProgramGone  # noqa: E402
from unotifyd.kernel.listener import Listener, Notification  # noqa: E402
from unotifyd.launch import _spawn  # noqa: E402
from unotifyd.policy import combine, rules_from_options  # noqa: E402
from unotifyd.serve.dispatch import Dispatcher  # noqa: E402
from unotifyd.serve.drain import drain  # noqa: E402
from unotifyd.serve.served import Served  # noqa: E402

VARIANTS = ("recv+send", "+read", "+root", "+resolve", "full", "lane")
PATH = "/etc/hostname"
OPENAT = 257  # x86_64


def _serve_one(variant: str, openloop: str, n: int) -> float:
    """Run openloop under the filter, serve it with ``variant``; its ns per open."""
    policy = validated(
        combine(None, rules_from_options(["/etc/passwd=/etc/hostname"], [], [])), "breakdown"
    )
    r, w = os.pipe()
    os.set_inheritable(w, True)  # openloop's stdout, through sh
    pid, fd, _ = _spawn(policy, ["sh", "-c", f'exec "$0" "$@" >&{w}', openloop, PATH, str(n)],
                        set())
    os.close(w)
    dispatcher = Dispatcher()
    s = Served(Listener(fd), policy, root_pinned=True)  # as launch serves it
    listener = s.listener
    listener.set_sync_wakeup()

    def defer(*_: object) -> None:
        raise AssertionError("a pass-through never waits")

    mem, resolver = dispatcher.decider.mem, dispatcher.decider.resolver
    if variant == "lane":
        _serve_with_lane(dispatcher, s, defer)
        # Its row is the lane's: a run served mostly by Python (a lane that
        # started late, or ended early) would say nothing of it.
        if dispatcher.stats.passed_through < n * 0.99:
            raise BenchError(f"the lane answered {dispatcher.stats.passed_through} of {n} opens")
        listener.close()
        dispatcher.close()  # its kept pidfds: the next run's pipe must get a one-digit fd (sh)
        os.waitpid(pid, 0)
        out = os.read(r, 4096).decode()
        os.close(r)
        return float(out.split("ns_per_iter=")[1].split()[0])
    try:
        while True:
            events = listener.poll()
            if not events & select.POLLIN:
                if events & (select.POLLHUP | select.POLLERR):
                    break
                select.select([fd], [], [], 1)
                continue
            try:
                notif = listener.recv()
            except ProgramGone:
                continue
            try:
                if variant == "full":
                    dispatcher.handle(s, notif, defer)
                    continue
                if variant != "recv+send" and notif.nr == OPENAT:
                    # open(2) from libc is openat(AT_FDCWD, path, ...) here;
                    # the few other calls the filter traps (the loader's
                    # stats, say) are let through as they are.
                    path = mem.read_path(notif.pid, notif.args[1])
                if variant in ("+root", "+resolve") and notif.nr == OPENAT:
                    resolver.root_id(notif.pid)
                if variant == "+resolve" and notif.nr == OPENAT:
                    resolver.resolve(notif.pid, -100, path, follow=True, own_root=False)
                listener.send_continue(notif.id)
            except ProgramGone:
                pass
    finally:
        listener.close()
        dispatcher.close()
        os.waitpid(pid, 0)
    out = os.read(r, 4096).decode()
    os.close(r)
    return float(out.split("ns_per_iter=")[1].split()[0])


def _serve_with_lane(dispatcher: Dispatcher, s: Served, defer: Callable[..., None]) -> None:
    """Serve as launch does: Python first, the lane once it is due, until hang-up."""
    def serve(notif: Notification) -> None:
        dispatcher.handle(s, notif, defer)

    listener = s.listener
    while True:
        lane = dispatcher.pass_through(s)
        if lane is not None and lane.start():
            try:
                while (ended := lane.take(serve)) is None:
                    select.select([lane.fileno()], [], [], 1)
            finally:
                lane.finish(serve)
                dispatcher.lane_ended(s, lane)
            if ended == "hangup":
                return
            if ended != "idle":
                raise BenchError(f"the pass-through lane ended: {ended}")
            continue
        if lane is not None:
            lane.finish(serve)
            raise BenchError("the pass-through lane could not start")
        if s.lane_refused:
            raise BenchError("no pass-through lane: is it built (pip install -e .)?")
        select.select([listener.fileno()], [], [], 1)
        # Stopped once the lane is due, as launch's loops stop (bootstrap's
        # must_wait): a tight loop keeps the listener readable, and a drain
        # that went on would serve the whole run in Python.
        if drain(listener, serve, lambda: None, stop=lambda: dispatcher.lane_due(s)) == "hangup":
            return


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("-n", type=int, default=50_000, help="opens per run")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as build:
        try:
            prepare.build(Path(build), ("openloop", "ref_unotify"))
        except BenchError as e:
            print(f"breakdown: {e}", file=sys.stderr)
            return 1
        openloop, ref = f"{build}/openloop", f"{build}/ref_unotify"
        runs: dict[str, list[float]] = {v: [] for v in ("C ref -w", *VARIANTS)}
        for rnd in range(args.rounds):
            for variant in VARIANTS:
                try:
                    runs[variant].append(_serve_one(variant, openloop, args.n))
                except BenchError as e:
                    print(f"breakdown: {variant}: {e}", file=sys.stderr)
                    return 1
            out = subprocess.run([ref, "-w", "--", openloop, PATH, str(args.n * 2)],
                                 capture_output=True, text=True, check=True).stdout
            runs["C ref -w"].append(float(out.split("ns_per_iter=")[1].split()[0]))
            print(f"round {rnd + 1}/{args.rounds}", file=sys.stderr)
    print("| step | us per open | step costs |")
    print("|:--|--:|--:|")
    prev = None
    for name, values in runs.items():
        med = statistics.median(values) / 1000
        step = f"{med - prev:+.1f}" if prev is not None else "-"
        print(f"| {name} | {med:.1f} | {step} |")
        prev = med if name != "C ref -w" else None
    return 0


if __name__ == "__main__":
    sys.exit(main())
