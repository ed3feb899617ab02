"""The OpenAPI schema's error answers: those DRF gives without a view saying so, documented by one rule each."""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse

from .serializers import ErrorSerializer

# {"field": ["message", ...]}, or with X-Error-Codes: 1 {"field": [{"message", "code"}, ...]}; a body that
# cannot be parsed at all gives {"detail": ...}.
VALIDATION_ERROR = OpenApiResponse(
    {"type": "object", "additionalProperties": {}},
    description="Bad input: each field (or header, or `non_field_errors`) with its messages; nothing was done.")
NOT_AUTHENTICATED = OpenApiResponse(
    ErrorSerializer, description="No valid session or token (or a session request without its CSRF token).")
NOT_FOUND = OpenApiResponse(
    ErrorSerializer, description="No such object of yours, or no such page of the list.")
UNSUPPORTED_MEDIA_TYPE = OpenApiResponse(ErrorSerializer, description="A body of a content type not listed here.")


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's, adding to each operation the errors DRF answers by itself: 400 where it takes a body
    or query parameters, 403 where it authenticates, 404 where it names an object or pages a list, 415 where
    it parses a body. A view's own @extend_schema responses come first."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        errors = {}
        takes_body = self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None
        if takes_body or self._get_filter_parameters() or self.get_override_parameters():
            errors["400"] = VALIDATION_ERROR
        if self.get_auth():
            errors["403"] = NOT_AUTHENTICATED  # also where a login is optional: a wrong token is refused
        if "{" in self.path or (self._is_list_view() and self._get_paginator()):
            errors["404"] = NOT_FOUND
        if takes_body:
            errors["415"] = UNSUPPORTED_MEDIA_TYPE
        for code, response in errors.items():
            if code not in responses:
                responses[code] = self._get_response_for_code(response, code, direction=direction)
        return responses
