"""Mistakes a user can fix, and the exit statuses every command shares.

Each error's message is one sentence that names the fix; ``cli.guarded`` prints it as
``error: <message>`` and exits with ``USER_ERROR``, never with a traceback.
"""

from __future__ import annotations

USER_ERROR = 2  # a mistake in the command, config or data: the message says what to change
NON_FINITE = 3  # training met a NaN/Inf loss or gradient; the last good state is saved
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


class UserError(ValueError):
    """A problem the user can fix; the message is one sentence naming the fix."""


class ConfigError(UserError):
    """A config value or command-line argument that cannot work."""


class DataError(UserError):
    """A problem with the input data (files, fields, labels, tokenizer, checkpoint folders)."""
