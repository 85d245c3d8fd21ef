"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""


class BotError(Exception):
    """A problem the user can fix (bad input, bad settings, refused credentials...)."""

    exit_code = 1


class Stopping(BotError):
    """The bot is shutting down: the step in progress gives up."""
