"""The one exception type for errors a user can cause.

Its message is a single line naming the problem and the fix; the CLI prints it without a
traceback and exits with code 2.
"""


class NiahError(Exception):
    """A user-facing error with a one-line message (problem and fix)."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message.replace("\n", " "))
