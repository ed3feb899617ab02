"""The webhooks worker's task (the Procfile's `webhooks`): one attempt at one delivery, whose body is the job as
GET /api/jobs/{id}/ shows it. Everything else is generation.webhooks'."""

from urllib.parse import urljoin

from celery import shared_task
from django.conf import settings
from rest_framework.renderers import JSONRenderer

from .. import webhooks
from .serializers import JobSerializer


class PublicSite:
    """What the serializers ask of a request, for a body sent outside one: absolute URLs on the public site."""

    def build_absolute_uri(self, location):
        return urljoin(settings.OURVIDZ_PUBLIC_URL, location)


def job_body(job):
    """`job` as the API shows it, as JSON text."""
    return JSONRenderer().render(JobSerializer(job, context={"request": PublicSite()}).data).decode()


# An attempt takes at most the connect and read timeouts, unless a receiver drips its answer: the soft limit
# ends that as a timeout (retried); both stay under generation.webhooks.ATTEMPT_LEASE.
@shared_task(name=webhooks.TASK, soft_time_limit=60, time_limit=90)
def deliver(delivery_id):
    """Attempt delivery `delivery_id` if it is due; a message for one that is not does nothing."""
    attempt = webhooks.deliver(delivery_id, job_body)
    return attempt and (attempt.status_code or attempt.error)
