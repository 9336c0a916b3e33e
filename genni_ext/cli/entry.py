"""``main``: parse the command line, run the command, turn its errors into exit statuses."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence

import torch

from genni_ext.cli.compute import search_command, sweep_command
from genni_ext.cli.demo import demo_command
from genni_ext.cli.output import log_to_stderr, spell_out_unencodable
from genni_ext.cli.parser import build_parser
from genni_ext.cli.results import analyse_command, check_command, ls_command, plot_command
from genni_ext.errors import GenniError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "search": search_command,
    "sweep": sweep_command,
    "ls": ls_command,
    "plot": plot_command,
    "analyse": analyse_command,
    "check": check_command,
    "demo": demo_command,
}


BROKEN_PIPE_STATUS = 128 + signal.SIGPIPE
"""The status of a command whose reader closed its output early, as the shell reports a
program that SIGPIPE ended."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``genni`` with ``argv`` (default: the command line); return the exit status:
    0 done, 1 an error (printed as one line), 2 bad usage, 130 interrupted, 141 the reader
    of the output closed it before the end (``genni ls | head -1``: nothing is printed, as
    for any program that SIGPIPE ends)."""
    spell_out_unencodable()
    try:
        args = build_parser().parse_args(argv)
    except BrokenPipeError:  # --help into a pipe closed early
        return _quiet_broken_pipe()
    log_to_stderr()
    # SIGTERM (a batch system's kill, `kill PID`) stops a command as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[args.command](args)
    except GenniError as error:
        print(f"genni {args.command}: error: {error}", file=sys.stderr, flush=True)
        return 1
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (MemoryError, RuntimeError) as error:
        if not out_of_memory(error):
            raise
        print(
            f"genni {args.command}: error: out of memory ({_first_line(error)}); use fewer "
            "probes (num_probes), starts or grid points, or smaller chunks (chunk_points)",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except OSError as error:  # e.g. an unwritable home: a file, a read-only mount, /proc
        where = f" ({error.filename})" if error.filename else ""
        print(
            f"genni {args.command}: error: {error.strerror or error}{where}; check that the "
            "path is a folder you can write to (the home is GENNI_HOME, --home, or "
            "genni_home: in ./genni.yml)",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except KeyboardInterrupt as interrupt:
        # search and sweep say what they left saved; elsewhere every write is whole or none.
        saved = f"; {interrupt}" if str(interrupt) else ""
        print(f"genni {args.command}: interrupted{saved}", file=sys.stderr, flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _quiet_broken_pipe() -> int:
    """Point stdout at /dev/null, so that Python's flush at exit does not fail again, and
    return BROKEN_PIPE_STATUS."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return BROKEN_PIPE_STATUS


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed (Python's, torch's CPU allocator's or
    CUDA's)."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
