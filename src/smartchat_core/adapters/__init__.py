"""Backends for the ports.  Each module imports its driver only when used."""
