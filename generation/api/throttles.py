"""Submissions per minute per user (QUOTA_SUBMISSIONS_PER_MINUTE, by tier): DRF's throttling, counted in
Redis (the `throttles` cache) so that every web process shares the count."""

import logging

from django.core.cache import caches
from rest_framework.throttling import UserRateThrottle

from .. import quotas

log = logging.getLogger(__name__)


class SubmissionThrottle(UserRateThrottle):
    """A 429 with Retry-After past the user's tier's rate. With Redis unreachable nothing is throttled:
    submissions are kept in the database, and refusing them all would be worse."""

    scope = "submissions"
    cache = caches["throttles"]

    def get_rate(self):
        return "1/min"  # replaced per user in allow_request

    def allow_request(self, request, view):
        if request.method != "POST":
            return True
        self.num_requests = quotas.limit("submissions_per_minute", request.user)
        if not self.num_requests:
            return True  # 0: no limit
        self.duration = 60
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # the cache (Redis) is down
            log.warning("submissions are not throttled: %s", exc)
            return True
