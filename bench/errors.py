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
