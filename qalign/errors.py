"""The one exception type qalign raises for bad input: the CLI prints it without a traceback."""


class QalignError(Exception):
    """A user-facing error; the message names the file, the line and the fix."""
