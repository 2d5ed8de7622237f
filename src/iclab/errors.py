"""The one exception type for mistakes a user can fix (bad config, unknown name, missing file).

The CLI prints these as a single line and exits with status 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem in the user's input, with a message that says what is wrong and how to fix it."""
