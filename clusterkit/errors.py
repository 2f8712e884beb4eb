"""Errors that the command line turns into one line on stderr and an exit code."""


class ClusterkitError(Exception):
    """A failure the user can act on; `exit_code` follows the CLI contract (2 = bad input)."""

    exit_code = 1


class InputError(ClusterkitError):
    """Bad usage or bad input: unknown method, missing folder, k out of range, bad checkpoint."""

    exit_code = 2


class TrainingDiverged(ClusterkitError):
    """The loss turned non-finite or exploded: the run stops before the damaged weights are saved,
    and the message names the step and the last good checkpoint."""
