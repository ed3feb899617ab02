"""Wrong passwords slow logins down, then lock them for a while (django-axes), for the pages, the admin and the
API's token endpoint alike: the handler that adds the slow-down (settings.AXES_HANDLER) and the answer to a
refused login (settings.AXES_LOCKOUT_CALLABLE)."""

import math
from datetime import timedelta

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_failure_limit
from django.conf import settings
from django.db.models import Max, Sum
from django.http import JsonResponse
from django.shortcuts import render
from django.utils import timezone


class SlowingHandler(AxesDatabaseHandler):
    """Axes's database handler, slowing an account or address down before it locks it out: after its k-th
    failure in a row, its next try is refused unchecked for LOGIN_SLOWDOWN_SECONDS × 2^(k−1)."""

    def is_locked(self, request, credentials=None):
        return super().is_locked(request, credentials) or slowed_for(self, request, credentials) > 0


def slowed_for(handler, request, credentials):
    """Seconds until the slow-down after the last failure of this account or address lets a try through."""
    if not settings.LOGIN_SLOWDOWN_SECONDS:
        return 0
    waits = [0.0]
    for attempts in handler.get_user_attempts(request, credentials):
        seen = attempts.aggregate(failures=Sum("failures_since_start"), last=Max("attempt_time"))
        if seen["failures"]:
            until = seen["last"] + timedelta(seconds=settings.LOGIN_SLOWDOWN_SECONDS * 2 ** (seen["failures"] - 1))
            waits.append((until - timezone.now()).total_seconds())
    return max(waits)


def locked_out(request, original_response=None, credentials=None):
    """What a login refused by django-axes answers: 429 with Retry-After, as JSON for the API's token endpoint
    and as a page for people; a lockout names its minutes, a slow-down its seconds."""
    handler = SlowingHandler()
    credentials = credentials or getattr(request, "axes_credentials", None)
    if handler.get_failures(request, credentials) >= get_failure_limit(request, credentials):
        wait = settings.AXES_COOLOFF_TIME.total_seconds()
        heading = "Logins locked for a while"
        message = (f"Too many failed logins for this account or from this address; try again in {int(wait // 60)} "
                   "minutes, or ask an administrator to unlock it.")
    else:
        heading = "Not so fast"
        wait = max(1, math.ceil(slowed_for(handler, request, credentials)))
        message = f"Wrong password just now for this account or from this address; try again in {wait} s."
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": message, "code": "locked_out"}, status=429)
    else:
        response = render(request, "registration/locked_out.html", {"heading": heading, "message": message}, status=429)
    response["Retry-After"] = str(int(wait))
    return response
