"""Our own error types: the CLI turns them into one red line and an exit code.

Any other exception is a bug and keeps its traceback.
"""


class CxrError(Exception):
    """A problem the user can fix; the message says what is wrong and what is allowed."""

    exit_code = 1


class ConfigError(CxrError):
    """Bad configuration or command-line usage (exit code 2)."""

    exit_code = 2


class DataError(CxrError):
    """Bad, missing or unreadable data, or a download that failed (exit code 1)."""

    exit_code = 1


def shorten(text: str, limit: int = 300) -> str:
    """At most `limit` characters of `text` on one line: an error message never floods the
    terminal."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else f"{line[: limit - 30]} … ({len(line)} characters in all)"
