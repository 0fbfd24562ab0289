"""Errors a user can cause. The CLI turns each into one line and exit code 2."""


class BatchlabError(Exception):
    """Base class: the message is written for the user, not for a developer."""


class ConfigError(BatchlabError):
    """The experiment file or an override is not valid."""


class DataError(BatchlabError):
    """A data set is missing, corrupt or cannot be fetched."""


class RecordsError(BatchlabError):
    """The records on disk cannot be used as asked (locked, changed config, damaged)."""
