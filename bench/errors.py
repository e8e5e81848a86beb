"""The one exception type for bad input.

Anything the user can get wrong (a run file, a `--set` override, a CLI argument, a results file)
raises `BenchError` with one line that names the bad value and, for closed choices, the valid
ones. The CLI prints it as `error: <message>` and exits with code 2, without a traceback.
"""


class BenchError(ValueError):
    """Bad input: the message is one line naming what is wrong and what would be valid."""

    def __init__(self, message: object = "") -> None:
        # One line, always: a key or value quoted from hostile input may itself hold line breaks.
        super().__init__(" ".join(str(message).splitlines()))


def read_yaml(path, what: str, error: type[BenchError] = BenchError):
    """Parse a YAML file the user supplied; any failure is one `error` line naming `what`."""
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise error(f"{what} {path}{where}: malformed YAML ({problem})") from None
    except (ValueError, RecursionError) as exc:  # PyYAML: a timestamp like 2001-13-45; nesting too deep
        raise error(f"{what} {path}: malformed YAML ({type(exc).__name__}: {exc})") from None
