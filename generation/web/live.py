"""The Workspace's live job updates: server-sent events, relayed from generation.events."""

import json

from django.contrib.auth.decorators import login_required
from django.http import StreamingHttpResponse
from django.views.decorators.http import require_GET

from .. import events
from ..api.serializers import JobSerializer
from ..models import Job, JobStatus

# An open page holds one server thread; streams end after this long and the browser reconnects.
EVENT_STREAM_SECONDS = 25


@login_required
@require_GET
def job_events(request):
    """Server-sent events: the requesting user's jobs as they change (`event: job`, the API's JSON)."""
    user = request.user

    def job_data(job_id):
        job = Job.objects.filter(pk=job_id, user=user).select_related("video").first()
        return json.dumps(JobSerializer(job, context={"request": request}).data, default=str) if job else None

    def stream():
        yield "retry: 1000\n\n"
        changes = events.changed_jobs(user.pk, EVENT_STREAM_SECONDS)  # subscribed before the first read
        active = Job.objects.filter(user=user, status__in=[JobStatus.QUEUED, JobStatus.PROCESSING])
        for job_id in list(active.values_list("pk", flat=True)):
            yield f"event: job\ndata: {job_data(job_id)}\n\n"
        for job_id in changes:
            data = job_data(job_id) if job_id else None
            yield f"event: job\ndata: {data}\n\n" if data else ": still here\n\n"

    response = StreamingHttpResponse(stream(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # let nginx pass events through as they come
    return response
