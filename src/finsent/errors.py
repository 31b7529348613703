"""User-facing errors: one line that says what was wrong and what to do."""

ERROR_FILE_ENV = "FINSENT_ERROR_FILE"  # set by the flow: a stage subprocess writes its one-line error there


class FinsentError(Exception):
    """An expected failure (bad input, bad config, failed gate).

    The CLI prints it as one line without a traceback and exits with ``exit_code``.
    """

    exit_code = 2


class GateFailed(FinsentError):
    """The candidate did not pass the promotion gates; it was not made champion."""

    exit_code = 1


class VerificationFailed(FinsentError):
    """A stored artifact does not hash to what lineage recorded, or a reproduction did not match."""

    exit_code = 1
