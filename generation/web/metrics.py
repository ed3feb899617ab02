"""/metrics: the Prometheus figures of generation.metrics, for a scraper holding METRICS_TOKEN (a bearer token)
or a logged-in staff member. A plain Django view outside /api/: no part of the JSON API or its schema."""

import hmac

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .. import metrics

registry = CollectorRegistry()
registry.register(metrics.Collector())


def refusal(request):
    """The response refusing `request` the figures, or None when it may read them: a bearer token equal to
    METRICS_TOKEN, else a staff session. No credentials or a wrong token: 401; a user who is not staff: 403."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        expected = settings.METRICS_TOKEN
        if expected and hmac.compare_digest(token.strip().encode(), expected.encode()):
            return None
        return _unauthorized('Bearer realm="metrics", error="invalid_token"')
    if not request.user.is_authenticated:
        return _unauthorized('Bearer realm="metrics"')
    if not request.user.is_staff:
        return HttpResponse("Staff only.\n", status=403, content_type="text/plain")
    return None


def _unauthorized(challenge):
    response = HttpResponse("A bearer token (METRICS_TOKEN) or a staff login is needed.\n", status=401,
                            content_type="text/plain")
    response["WWW-Authenticate"] = challenge
    return response


@require_safe
def metrics_view(request):
    refused = refusal(request)
    if refused is not None:
        return refused
    # prometheus_client picks the format the scraper asks for (Prometheus text, or OpenMetrics).
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encode(registry), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
