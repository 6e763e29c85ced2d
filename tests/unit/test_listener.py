"""A Listener may be polled from two threads at once: the daemon's stop looks
at every listener from trio's thread while serving threads drain them."""

from __future__ import annotations

import os
import threading

from unotifyd.kernel.listener import Listener


def test_two_threads_poll_one_listener() -> None:
    # Any pollable fd serves: poll() only asks for the fd's events. A pipe
    # with a byte in it is readable, so every poll reports POLLIN.
    r, w = os.pipe()
    os.write(w, b"x")
    listener = Listener(r)
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(20_000):
                listener.poll()
        except BaseException as e:  # the RuntimeError this test is about
            errors.append(e)

    try:
        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        listener.close()
        os.close(w)
    assert errors == []
