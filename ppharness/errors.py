"""The exception types for bad input and for output that cannot be written.

Anything the user can get wrong (a run file, a `--set` override, a CLI argument, a results file)
raises `BenchError` with one line that names the bad value and, for closed choices, the valid
ones. The CLI prints it as `error: <message>` and exits with code 2, without a traceback.
`WriteError` (a full disk, a destination that became unwritable mid-run) is printed the same way
and exits with code 1: the input was fine, the run failed.
"""

from __future__ import annotations

import re
from enum import IntEnum

import yaml


class Exit(IntEnum):
    """`ppbench`'s exit statuses, for a CI job or a fleet script that reads no table. A run
    (`run`, `kernels`) says with them whether it produced valid measurements."""

    OK = 0  # every measured case valid (or none left to measure: --resume found them all)
    FAILED = 1  # the command itself failed: a record could not be written, a rank crashed
    BAD_INPUT = 2  # bad input (a run file, an argument, a results file), or a plan that cannot fit
    SOME_INVALID = 3  # some cases valid, some INVALID or failed (oom, compile_error, error)
    NONE_VALID = 4  # cases were measured, none valid: every one INVALID or failed
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); finished cases are kept


class BenchError(ValueError):
    """Bad input: the message is one line naming what is wrong and what would be valid."""

    exit_code = Exit.BAD_INPUT

    def __init__(self, message: object = "") -> None:
        # One line, always: a key or value quoted from hostile input may itself hold line breaks.
        super().__init__(" ".join(str(message).splitlines()))


class WriteError(BenchError):
    """Output that could not be written completely (no space, I/O error): the run has failed."""

    exit_code = Exit.FAILED


# A YAML document is small; aliases can make it expand into a huge structure when it is copied,
# hashed or written into every record ("billion laughs"). Loaded documents are refused beyond
# this many values, counting every alias as the full copy it stands for.
MAX_YAML_VALUES = 100_000

# Every file ppbench reads is read with a bound, and refused beyond it with one line (exit 2),
# never read whole into memory first: a wrong path (a disk image, a log) or a hostile file must
# not end in a MemoryError. Ours are far smaller: a run file or the claims a few KiB, a ceilings
# cache a few KiB, a record ~20 KiB (its raw samples), 5,000 records ~100 MiB.
MAX_YAML_BYTES = 4 * 2**20  # one YAML file: a run file, the claims, the evidence, the catalog, a plan, a state
MAX_JSON_BYTES = 64 * 2**20  # one JSON document: a pytest-benchmark file, a cache, a load generator's result
MAX_RECORD_BYTES = 64 * 2**20  # one line of a results file (one record)
# All the results files one command reads together: loaded, a record takes ~6x its bytes in memory
# (measured on results/: 28 MB of JSONL grew the process by 162 MB), so 512 MiB needs about 3 GiB.
MAX_RESULTS_BYTES = 512 * 2**20


def size_words(n: int) -> str:
    """`512 MiB`, `4.2 GiB`: a byte count for a message."""
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n} bytes"


def read_bounded(path, what: str, limit: int, error: type[BenchError] = BenchError) -> str:
    """The text of the file `path`, read with a bound: more than `limit` bytes is refused with one
    `error` line naming `what`, before more than limit + 1 bytes are read (a device or a FIFO whose
    size stat cannot tell included); unreadable or non-UTF-8 text is one line too."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{what} {path} is larger than {size_words(limit)}, the most ppbench reads from one; not a {what}")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise error(f"cannot read {what} {path}: not UTF-8 text (byte {exc.start})") from None


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float syntax: `1e-3` is a float, not the string
    '1e-3' (YAML 1.1, which PyYAML follows, requires a dot in the mantissa)."""


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class TooLarge(ValueError):
    """A YAML document beyond the size bounds."""


def expanded_size(obj: object, limit: int = MAX_YAML_VALUES) -> int:
    """How many values `obj` holds once every shared (aliased) part counts each time it is
    referenced; stops counting, and raises TooLarge, past `limit` (a cycle never ends)."""
    count, stack = 0, [obj]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            raise TooLarge(f"more than {limit:,} values once YAML aliases are expanded")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return count


def safe_load(text: str, loader: type = Loader, limit: int = MAX_YAML_VALUES):
    """yaml.load with `loader`, refusing a document that expands beyond `limit` values."""
    data = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    expanded_size(data, limit)
    return data


def read_yaml(
    path, what: str, error: type[BenchError] = BenchError, loader: type = yaml.SafeLoader, limit: int = MAX_YAML_VALUES
):
    """Parse a YAML file the user supplied; any failure is one `error` line naming `what`. A file
    over MAX_YAML_BYTES, or one that expands beyond `limit` values, is refused before it is used."""
    text = read_bounded(path, what, MAX_YAML_BYTES, error)
    try:
        return safe_load(text, loader, limit)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise error(f"{what} {path}{where}: malformed YAML ({problem})") from None
    except BenchError:
        raise
    except TooLarge as exc:
        raise error(f"{what} {path}: too large, {exc}") from None
    except (ValueError, RecursionError) as exc:  # PyYAML: a timestamp like 2001-13-45; nesting too deep
        raise error(f"{what} {path}: malformed YAML ({type(exc).__name__}: {exc})") from None
