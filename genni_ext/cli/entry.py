"""``main``: parse the command line, run the command, turn its errors into exit statuses."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence

from ..errors import GenniError
from .compute import search_command, sweep_command
from .demo import demo_command
from .parser import build_parser
from .results import analyse_command, check_command, ls_command, plot_command

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "search": search_command,
    "sweep": sweep_command,
    "ls": ls_command,
    "plot": plot_command,
    "analyse": analyse_command,
    "check": check_command,
    "demo": demo_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``genni`` with ``argv`` (default: the command line); return the exit status:
    0 done, 1 an error (printed as one line), 2 bad usage, 130 interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="genni: %(message)s")
    # SIGTERM (a batch system's kill, `kill PID`) stops a command as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[args.command](args)
    except GenniError as error:
        print(f"genni {args.command}: error: {error}", file=sys.stderr, flush=True)
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
