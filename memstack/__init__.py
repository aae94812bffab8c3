"""memstack: the operator CLI and local stack of the memory kit."""

__version__ = "0.1.0"
