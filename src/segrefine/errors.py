"""The one error type the CLI turns into a one-line message."""


class InputError(ValueError):
    """Bad user input: a file, an argument or a value that cannot be used.

    The message names the file or argument and the problem, in one line.
    """
