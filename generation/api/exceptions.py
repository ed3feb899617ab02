"""The API's error answers: DRF's, plus error codes for clients that ask for them.

A client sending `X-Error-Codes: 1` gets each validation error as {"message", "code"} (DRF's own
`get_full_details()`), so it can word errors itself without parsing English; everyone else gets
DRF's usual {"field": ["message", ...]}.
"""

from rest_framework.exceptions import ValidationError
from rest_framework.views import exception_handler

CODES_HEADER = "X-Error-Codes"


def handle(exc, context):
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]."""
    response = exception_handler(exc, context)
    request = context.get("request")
    if response is not None and isinstance(exc, ValidationError) and request is not None \
            and request.headers.get(CODES_HEADER) == "1":
        response.data = exc.get_full_details()
    return response
