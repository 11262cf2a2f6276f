"""What every splade-rt command shares: one error convention, quiet broken pipes, logging, help texts.

Each command's main() is `return run(parser, command, argv)`, so that every command behaves alike:

- a mistake the user can fix (SpladeError, ValueError, a missing optional package, a file that can't
  be read or written) is one line, `PROG: error: ...`, on stderr and exit code 2, the code argparse
  gives a bad argument; anything else (a bug) is one line naming the exception and exit code 1.
  --verbose prints the traceback before that line (and the runtime's INFO log lines), same exit code;
- `PROG ... | head` ends quietly when the reader closes the pipe: stdout is pointed at /dev/null
  (so the interpreter's final flush can't raise again) and the exit code is 141, what a shell
  reports for a command that SIGPIPE ended. Restoring SIGPIPE's default action would do the same
  for stdout, but it would also kill a run on any closed socket (Qdrant, Ray);
- Ctrl-C is one line and exit code 130;
- the "splade_rt" logger's lines go to stderr prefixed with the command's name.

Standard library and errors only at import; the provider and variant tables are read when a parser
asks for their help texts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import SpladeError

USER_ERROR = 2  # argparse's code for a bad argument: every mistake a user can make exits with it
BUG = 1
INTERRUPTED = 130  # 128 + SIGINT
BROKEN_PIPE = 141  # 128 + SIGPIPE: what `cmd | head` reports for a command that SIGPIPE ended

# the optional package a missing module comes with: the extra to install (pyproject.toml)
EXTRAS = {
    "torch": "export", "transformers": "export", "onnx": "export", "safetensors": "export",
    "huggingface_hub": "export", "sympy": "export", "scipy": "eval", "sentence_transformers": "bench",
    "matplotlib": "bench", "ray": "distributed", "pyarrow": "distributed", "qdrant_client": "qdrant",
    "uvicorn": "serve", "starlette": "serve", "prometheus_client": "serve", "orjson": "serve",
}

Command = Callable[[argparse.Namespace], "int | None"]


def add_verbose(parser: argparse.ArgumentParser) -> None:
    """The --verbose flag every command has (run() reads it)."""
    parser.add_argument("--verbose", action="store_true",
                        help="show tracebacks, and the runtime's INFO lines (which graph runs where, and why)")


def device_help(default: str = "auto") -> str:
    """--device's help, from the provider table (runtime.providers), with this command's default."""
    from .runtime.providers import device_help as table_help

    return table_help(default)


def device_arg(text: str) -> str:
    """argparse `type=` for --device: checked against the provider table when the command line is read."""
    from .runtime.providers import parse_device

    try:
        parse_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; " + str(e).removeprefix(f"device {text!r}: ")) \
            from None
    return text


def variant_help() -> str:
    """--variant's help, from the variant table: the names, and that the device's choice is the default."""
    from .variants import VARIANTS

    return f"graph to run: {' | '.join(VARIANTS)} (default: the device's choice; lossy ones only when named)"


def variant_choices() -> tuple[str, ...]:
    from .variants import VARIANTS

    return tuple(VARIANTS)


def non_negative_float(text: str) -> float:
    """argparse `type=` for a number of seconds or a threshold: a one-line usage error otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text!r}")
    return value


def output_file(text: str) -> Path:
    """argparse `type=` for a report file (--json): checked before the work, so that a typo in its
    folder is a usage error now and not a lost result after minutes of encoding."""
    path = Path(text).expanduser()
    parent = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; name a file")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{parent}: no such directory (create it first)")
    if not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"{parent}: not writable")
    return path


def describe(error: BaseException) -> tuple[str, int]:
    """(the one line to print after "error: ", the exit code) for an exception a command let through."""
    if isinstance(error, ImportError):
        name = (error.name or "").split(".")[0]
        if name in EXTRAS:
            return f"{name} is not installed; pip install 'splade-rt[{EXTRAS[name]}]'", USER_ERROR
        return str(error) or f"{name} is not installed", USER_ERROR
    if isinstance(error, (SpladeError, ValueError)):
        return str(error) or type(error).__name__, USER_ERROR
    if isinstance(error, OSError):  # a path that can't be read or written: the user's to fix
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}", USER_ERROR
    return f"{type(error).__name__}: {error} (unexpected: re-run with --verbose for the traceback)", BUG


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (a test's capture, a redirected stream); through
    tqdm where a progress bar may be on screen, so that a line does not land in the middle of it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm = sys.modules.get("tqdm")
            if tqdm is not None and hasattr(tqdm, "tqdm"):
                tqdm.tqdm.write(self.format(record), file=sys.stderr)
                return
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging's own convention for a failing handler
            self.handleError(record)


class _Prefixed(logging.Formatter):
    """The runtime's "splade-rt: ..." lines as "PROG: ...", so each line says which command spoke."""

    def __init__(self, prog: str) -> None:
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().removeprefix("splade-rt: ").removeprefix(f"{self.prog}: ")
        return f"{self.prog}: {message}"


class _CliLogging:
    """The "splade_rt" logger's lines on stderr while a command runs (INFO with --verbose, else
    WARNING), undone afterwards: main() may run many times in one process (the tests)."""

    def __init__(self, prog: str, verbose: bool) -> None:
        self.logger = logging.getLogger("splade_rt")
        self.handler = _StderrHandler()
        self.handler.setFormatter(_Prefixed(prog))
        self.level = logging.INFO if verbose else logging.WARNING

    def __enter__(self) -> None:
        self.saved = self.logger.level
        self.logger.addHandler(self.handler)
        if self.logger.level == logging.NOTSET or self.logger.level > self.level:
            self.logger.setLevel(self.level)

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.saved)


def _stdout_to_devnull() -> None:
    """After a broken pipe: the interpreter flushes stdout once more at exit, which would raise (and
    print "Exception ignored ...") unless stdout points somewhere that takes the bytes."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a test's capture)
        pass


def run(parser: argparse.ArgumentParser, command: Command, argv: Sequence[str] | None = None, *,
        intermixed: bool = False, interrupted: str = "") -> int:
    """Parse argv with parser and run command(args) under the convention above; the exit code.
    interrupted: what the Ctrl-C line adds (e.g. "rerun the same command to resume")."""
    prog = parser.prog
    try:
        try:
            args = parser.parse_intermixed_args(argv) if intermixed else parser.parse_args(argv)
            return _guarded(prog, command, args, interrupted)
        finally:
            sys.stdout.flush()  # inside the guard: `--help | head` fails here, not at exit
    except BrokenPipeError:
        _stdout_to_devnull()
        return BROKEN_PIPE


def _guarded(prog: str, command: Command, args: argparse.Namespace, interrupted: str) -> int:
    verbose = bool(getattr(args, "verbose", False))
    with _CliLogging(prog, verbose):
        try:
            code = command(args)
        except BrokenPipeError:
            raise
        except KeyboardInterrupt:
            print(f"{prog}: interrupted" + (f"; {interrupted}" if interrupted else ""), file=sys.stderr)
            return INTERRUPTED
        except Exception as e:  # noqa: BLE001 - every error ends as one line; --verbose shows where
            if verbose:
                traceback.print_exc()
            line, code = describe(e)
            print(f"{prog}: error: {line}", file=sys.stderr)
            return code
    return 0 if code is None else int(code)


def error(prog: str, message: str) -> int:
    """A mistake found by the command itself (not raised): the same line and exit code as run() gives."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return USER_ERROR
