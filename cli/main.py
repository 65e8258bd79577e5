"""The `zipvlm` command line: parsing, logging, and the one place user errors become one line.

Each command group registers its subcommands from its own module. User errors
(`ZipvlmError`) are caught here, once, and printed as one line with exit code 2.
Commands that need PyTorch (export, demo) import it lazily, so the runtime
commands start without it.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import sys
from collections.abc import Callable, Sequence

from zipvlm.bundle.errors import ZipvlmError
from zipvlm.cli import answer, calib, demo, engine, export, serve, stream

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
COMMAND_GROUPS = (export, answer, stream, serve, engine, calib, demo)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the command and pointing at --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(
            EXIT_USER_ERROR, f"{self.prog}: error: {message}{_suggestion(message)} (see {self.prog} --help)\n"
        )


def _suggestion(message: str) -> str:
    """'; did you mean 'export'?' for an invalid choice close to a valid one."""
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not found:
        return ""
    choices = re.findall(r"'([^']*)'", found.group(2))
    close = difflib.get_close_matches(found.group(1), choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="zipvlm",
        description="Edge runtime for vision-language models with VisionZip token compression.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (capture threads outlive redirections)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _configure_logging(verbose: bool) -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("zipvlm")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ZipvlmError as exc:
        print(f"zipvlm {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"zipvlm {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
