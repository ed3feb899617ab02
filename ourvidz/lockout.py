"""What a login refused by django-axes's lockout answers (settings.AXES_LOCKOUT_CALLABLE), for the pages, the
admin and the API's token endpoint alike."""

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render


def locked_out(request, original_response=None, credentials=None):
    """What a login refused by django-axes's lockout answers (settings.AXES_LOCKOUT_CALLABLE): 429 with
    Retry-After, as JSON for the API's token endpoint and as a page for people."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    message = (f"Too many failed logins for this account or from this address; try again in {minutes} minutes, "
               "or ask an administrator to unlock it.")
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": message, "code": "locked_out"}, status=429)
    else:
        response = render(request, "registration/locked_out.html", {"message": message}, status=429)
    response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    return response
