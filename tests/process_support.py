"""A real ``layerprune`` process stopped inside one method, for tests that act while it works.

The child runs the CLI with ``module.cls.method`` patched to do its work, write ``REACHED`` to
a pipe of its own, then wait for a signal. The test blocks on that pipe (end of file means the
child died first), so nothing waits on time; the child's output goes to files, so a full pipe
cannot stall it. SIGINT gets Python's own handler even where the test runner inherited it
ignored (a background job).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
DRIVER = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
import {module} as target
original = target.{cls}.{method}
def stopped(self, *args, **kwargs):
    result = original(self, *args, **kwargs)
    os.write({fd}, b"REACHED")
    while True:
        signal.pause()
    return result
setattr(target.{cls}, "{method}", stopped)
from layerprune.cli import main
sys.exit(main(sys.argv[1:]))
"""
# Only a safety net for a child that hangs: no test sleeps or polls against a clock.
HANG_LIMIT_S = 600


@contextlib.contextmanager
def stopped_in(argv: list[str], patch: tuple[str, str, str]) -> Iterator[subprocess.Popen]:
    """Yield the CLI process once it is inside ``patch`` (module, class, method); kill it on exit if still alive.

    After the block, ``process.output`` is a :class:`subprocess.CompletedProcess` with its exit code and output.
    """
    module, cls, method = patch
    read_end, write_end = os.pipe()
    script = DRIVER.format(module=module, cls=cls, method=method, fd=write_end)
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, os.fdopen(read_end, "rb") as event:
        process = subprocess.Popen(
            [sys.executable, "-c", script, *argv], stdout=out, stderr=err, text=True, env=env, pass_fds=(write_end,)
        )
        os.close(write_end)  # the child holds the only write end: its exit is end of file here
        try:
            select.select([event], [], [], HANG_LIMIT_S)
            if event.read(len(b"REACHED")) != b"REACHED":
                process.wait(timeout=HANG_LIMIT_S)
                err.seek(0)
                raise AssertionError(f"the run never reached {method} (exit {process.returncode}): {err.read()}")
            yield process
            process.wait(timeout=HANG_LIMIT_S)
        finally:
            process.kill()
            process.wait()
            out.seek(0)
            err.seek(0)
            process.output = subprocess.CompletedProcess(argv, process.returncode, out.read(), err.read())


def interrupt(argv: list[str], patch: tuple[str, str, str], signum: int) -> subprocess.CompletedProcess:
    """Run the CLI in a child, block until it is inside ``patch``, send ``signum``; its exit code and output."""
    with stopped_in(argv, patch) as process:
        process.send_signal(signum)
    return process.output
