"""Container images built on this machine: a Debian base from debootstrap, one image per service."""
