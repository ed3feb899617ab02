"""WSGI entry point for gunicorn."""

import os
import socket

from django.core.wsgi import get_wsgi_application

from ourvidz import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ourvidz.settings")
tracing.setup("ourvidz-web")  # before the application loads its middleware: the instrumentation adds one
application = get_wsgi_application()


def _record_installation():
    """The web tier's settings are the installation's: workers compare theirs with this record at start."""
    from django.db import connections

    from generation import installation

    installation.record_quietly(f"web@{socket.gethostname()}")
    connections.close_all()  # this thread serves no request


_record_installation()
