"""Errors a user can act on. The CLIs print them as one line and exit non-zero."""


class TrainerError(Exception):
    """Bad data, a missing or corrupt model, too few posts to train on."""

    exit_code = 1
