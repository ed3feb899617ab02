"""WSGI entry point for gunicorn."""

import os

from django.core.wsgi import get_wsgi_application

from ourvidz import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ourvidz.settings")
tracing.setup("ourvidz-web")  # before the application loads its middleware: the instrumentation adds one
application = get_wsgi_application()
