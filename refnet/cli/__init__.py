"""The ``refnet`` command line: argument parsing and the subcommand handlers.

One module per subcommand family, each with its ``add_parser(sub)`` and handler (the library
functions they call live below, in refnet/): :mod:`~refnet.cli.compare`, :mod:`~refnet.cli.run`,
:mod:`~refnet.cli.info`, :mod:`~refnet.cli.bench`, :mod:`~refnet.cli.generate`,
:mod:`~refnet.cli.models`, :mod:`~refnet.cli.demo`, :mod:`~refnet.cli.selfcheck`,
:mod:`~refnet.cli.convert`, :mod:`~refnet.cli.gradients` (stylize, transfer, explain);
:mod:`~refnet.cli.common` holds the arguments several share, :mod:`~refnet.cli.toplevel` the exit
statuses, one-line errors and output checks. Models come from the one resolver,
:func:`refnet.resolver.resolve_model`. Nothing in refnet/ outside this package imports it
(tests/test_layering.py).

Errors a user can fix (missing files, malformed models, bad arguments, budgets) print one
line and exit with status 2, internal errors status 3 (refnet.cli.toplevel); ``--debug``,
anywhere on the command line, shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``refnet`` parser with every subcommand (in the order ``refnet --help`` lists them)."""
    from refnet.cli import bench, compare, convert, demo, generate, gradients, info, models, run, selfcheck

    p = argparse.ArgumentParser(prog="refnet", description="Reference DNN inference, checked against cv2.dnn.")
    p.add_argument("--debug", action="store_true", help="show tracebacks (accepted anywhere on the line)")
    sub = p.add_subparsers(dest="cmd", required=True)
    for family in (selfcheck, demo, info, compare, models, run, generate, bench):
        family.add_parser(sub)
    gradients.add_parsers(sub)  # stylize --optimize, transfer, explain
    convert.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (refnet.cli.toplevel: 0/1/2/3, 130)."""
    from refnet.cli import toplevel

    argv, debug = toplevel.split_debug(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    parser.add_argument("--version", action="version", version=toplevel.version_text())
    args = parser.parse_args(argv)
    args.command_line = ["refnet", *(sys.argv[1:] if argv is None else argv)]  # recorded by `compare --json`
    args.debug = debug
    try:
        toplevel.check_outputs(args)
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `refnet info ... | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BaseException as e:  # every exception ends in one line and an exit status
        if debug or isinstance(e, SystemExit):
            raise
        code, msg = toplevel.classify(e)
        print(f"refnet: {msg}" if code == toplevel.EXIT_INTERRUPTED else f"refnet: error: {msg}", file=sys.stderr)
        return code
