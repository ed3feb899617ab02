"""The API's error answers: DRF's, plus error codes for clients that ask for them.

A client sending `X-Error-Codes: 1` gets each validation error as {"message", "code"} (DRF's own
`get_full_details()`) and other errors with a "code" beside their "detail" (`not_authenticated`,
`permission_denied` — a CSRF failure of a logged-in session — `throttled` ...), so it can word errors
itself without parsing English; everyone else gets DRF's usual answers.
"""

import logging

from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler

from ..credits import InsufficientCredits
from ..negative_prompts import TokenizerUnavailable
from ..quotas import QuotaExceeded
from ..submission import KeyReused

CODES_HEADER = "X-Error-Codes"
UNAVAILABLE_RETRY_AFTER = 30  # seconds: an operator's fix, or the load balancer taking this host out

log = logging.getLogger(__name__)


def handle(exc, context):
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]: DRF's, plus the domain's refusals (credits, quotas, a reused key) and
    a request this host cannot prepare (503)."""
    if isinstance(exc, InsufficientCredits):
        # The balance and the price beside the message: a client can say how many credits are missing.
        return Response({"detail": str(exc), "code": "insufficient_credits", "balance": exc.balance,
                         "price": exc.price}, status=status.HTTP_402_PAYMENT_REQUIRED)
    if isinstance(exc, QuotaExceeded):
        return Response({"detail": str(exc), "code": exc.code, "retry_after": exc.retry_after},
                        status=status.HTTP_429_TOO_MANY_REQUESTS, headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, KeyReused):
        return Response({"detail": str(exc), "code": "idempotency_key_reused"}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, TokenizerUnavailable):
        # This host is mis-set (its /healthz says so), not the request: another host, or later, can take it.
        log.error("an SDXL request could not be prepared: the SDXL tokenizer cannot be read (%s)", exc.cause)
        return Response({"detail": str(exc), "code": "sdxl_tokenizer_unavailable"},
                        status=status.HTTP_503_SERVICE_UNAVAILABLE,
                        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)})
    response = exception_handler(exc, context)
    request = context.get("request")
    if response is None or request is None or request.headers.get(CODES_HEADER) != "1":
        return response
    if isinstance(exc, ValidationError):
        response.data = exc.get_full_details()
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data["code"] = exc.get_codes()
    return response
