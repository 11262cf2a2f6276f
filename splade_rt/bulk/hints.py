"""How an error message names an option: the flag on the command line, the keyword argument from Python.

A hint such as "--on-error skip skips such rows" is wrong advice to someone who called
`encode_corpus(...)`: they need `on_error="skip"`. Messages are built deep in the readers and the
vetting pass, far from the entry point, so the entry point says which face is speaking through a
context variable (thread- and task-local) instead of every function passing it down:
`splade-encode-corpus` wraps its call in `command_line()`, and Python callers get keyword spelling.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_ON_COMMAND_LINE: ContextVar[bool] = ContextVar("splade_rt_bulk_command_line", default=False)
_FLAGS = {"output_dir": "-o", "input": "INPUT", "export_dir": "EXPORT_DIR"}  # where a flag is not --name-with-dashes
_UNSET: Any = object()


@contextmanager
def command_line() -> Iterator[None]:
    """Within this block, options are named as splade-encode-corpus's flags."""
    token = _ON_COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _ON_COMMAND_LINE.reset(token)


def on_command_line() -> bool:
    """Whether splade-encode-corpus is the caller (it prints the summary line itself)."""
    return _ON_COMMAND_LINE.get()


def option(name: str, value: Any = _UNSET) -> str:
    """The option `name` (a CorpusOptions field), with a value if given, as the caller spells it:
    `--on-error skip` / `--force` on the command line, `on_error="skip"` / `force=True` from Python."""
    if _ON_COMMAND_LINE.get():
        flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
        return flag if value is _UNSET or value is True else f"{flag} {value}"
    if value is _UNSET:
        return name
    return f'{name}="{value}"' if isinstance(value, str) else f"{name}={value!r}"
