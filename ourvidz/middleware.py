"""Refusals every request may get before or beside its view: a body too large to read (413), and the database
out of reach (503, never a 500)."""

import logging

from csp.middleware import CSPMiddleware
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.template.response import TemplateResponse

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 10


def refusal(request, status, heading, message):
    """JSON `{"detail": message}` for the API (or a client asking for JSON), a small page for people."""
    if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"detail": message}, status=status)
    return TemplateResponse(request, "refused.html", {"heading": heading, "message": message}, status=status)


class RequestSizeLimitMiddleware:
    """A request announcing a body over REQUEST_MAX_BYTES is answered 413 before a byte of it is read (the
    largest a client needs to send is a reference image); gunicorn then closes the connection."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django reads such a body as empty
        if length > settings.REQUEST_MAX_BYTES:
            log.warning("refused %s %s: a body of %d bytes", request.method, request.path, length)
            return refusal(request, 413, "Too large",
                           f"The request is {length} bytes; the most accepted is {settings.REQUEST_MAX_BYTES}.")
        return self.get_response(request)


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware for what a browser renders as a page. A JSON answer loads nothing, so it gets a
    fixed policy that allows nothing at all: django-csp builds its header anew for every response, which cost
    nearly 1 ms of each API call's CPU."""

    JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"

    def process_response(self, request, response):
        if response.get("Content-Type", "").startswith("application/json"):
            response.setdefault("Content-Security-Policy", self.JSON_POLICY)
            return response
        return super().process_response(request, response)


class DatabaseUnavailableMiddleware:
    """A view that cannot reach the database answers 503 (JSON for the API, a page for people), with a
    Retry-After; the request is safe to repeat."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        log.warning("database unavailable for %s %s: %s", request.method, request.path, exception)
        message = "The database is unavailable; try again shortly."
        if not request.path.startswith("/api/"):
            message += " Your jobs are safe; this page can be reloaded."
        response = refusal(request, 503, "Back in a moment", message)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
