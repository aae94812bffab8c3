"""One ComponentResource per file; shared builders in common.py."""
