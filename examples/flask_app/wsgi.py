"""A module-level app for WSGI servers that want ``module:app``::

    gunicorn -w 1 --threads 32 examples.flask_app.wsgi:app

Importing this module starts the desk and its monitors (configured by the
environment, see :mod:`examples.flask_app.app`); they stop at exit.  Do not
import it before the server forks its workers (no ``--preload``): the desk's
event loop thread would not survive the fork.
"""

from __future__ import annotations

from .app import create_app

app = create_app()
