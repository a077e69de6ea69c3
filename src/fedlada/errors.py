"""Errors a user can act on: each is one line that says what is wrong and what to change.

The command line prints a `FedladaError` as `error: <message>` without a traceback; everything else
is a bug and keeps its traceback. (`config.ConfigError` is the config's own one-line error and is
printed the same way.)
"""

from __future__ import annotations


class FedladaError(Exception):
    """A problem with the user's inputs, files or federation, phrased as one line."""


class DataError(FedladaError):
    """The data does not fit the config or the models (missing domains, sets too small, too long)."""


class ContextLengthError(DataError, ValueError):
    """A prompt plus its completion (or the tokens asked for) is longer than a model's position table."""


class CheckpointError(FedladaError):
    """A checkpoint or state directory that cannot be used: damaged, missing or from another run."""


class ClientFailure(FedladaError):
    """A client failed (its handler raised, or its reply did not come) and the run cannot go on."""


class PrivacyViolation(FedladaError):
    """A message about to be sent carries a client's private text (see federation/audit.py)."""


class TLSError(FedladaError):
    """TLS files that do not belong together."""
