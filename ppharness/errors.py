"""The exception types for bad input and for output that cannot be written.

Anything the user can get wrong (a run file, a `--set` override, a CLI argument, a results file)
raises `BenchError` with one line that names the bad value and, for closed choices, the valid
ones. The CLI prints it as `error: <message>` and exits with code 2, without a traceback.
`WriteError` (a full disk, a destination that became unwritable mid-run) is printed the same way
and exits with code 1: the input was fine, the run failed.
"""

from __future__ import annotations

import re

import yaml


class BenchError(ValueError):
    """Bad input: the message is one line naming what is wrong and what would be valid."""

    exit_code = 2

    def __init__(self, message: object = "") -> None:
        # One line, always: a key or value quoted from hostile input may itself hold line breaks.
        super().__init__(" ".join(str(message).splitlines()))


class WriteError(BenchError):
    """Output that could not be written completely (no space, I/O error): the run has failed."""

    exit_code = 1


# A YAML document is small; aliases can make it expand into a huge structure when it is copied,
# hashed or written into every record ("billion laughs"). Loaded documents are refused beyond
# this many values, counting every alias as the full copy it stands for.
MAX_YAML_VALUES = 100_000
MAX_YAML_BYTES = 4 * 2**20


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
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise error(f"{what} {path}: larger than {MAX_YAML_BYTES // 2**20} MiB; not a {what}")
        return safe_load(path.read_text(), loader, limit)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
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
