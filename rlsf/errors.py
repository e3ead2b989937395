"""The one base class of every error rlsf reports to a user as a single line (no traceback)."""


class RlsfError(ValueError):
    """Bad input a user can fix: a setting, a data file, a model path. The message says which."""
