"""The Workspace's live job updates: server-sent events, relayed from generation.events."""

import json
import threading

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from .. import brokers, events
from ..api.serializers import JobSerializer
from ..models import Job, JobStatus

# An open page holds one server thread; streams end after this long and the browser reconnects.
EVENT_STREAM_SECONDS = 25
STREAMS_KEY = "ourvidz:streams:"  # + user id: that user's open streams, over every web process

# Streams this process serves at once: the rest of its threads stay free for the API and the pages.
_process_slots = threading.BoundedSemaphore(settings.EVENT_STREAMS_PER_PROCESS)


class NoSlot(Exception):
    """No stream can be opened now; the page polls instead and tries again later."""


class StreamSlot:
    """One of this process's stream slots and one of the user's (EVENT_STREAMS_PER_USER, counted in Redis,
    expiring with the stream should a process die holding it)."""

    def __init__(self, user_id):
        self.key = STREAMS_KEY + str(user_id)
        self.held = self.counted = False

    def acquire(self):
        """Take the slot, or raise NoSlot when this process or the user has none left."""
        if not _process_slots.acquire(blocking=False):
            raise NoSlot("This server has no room for another live stream right now; the page polls instead.")
        self.held = True
        try:
            with brokers.client().pipeline() as pipe:
                open_streams, _ = pipe.incr(self.key).expire(self.key, EVENT_STREAM_SECONDS * 2).execute()
            self.counted = True
        except Exception:  # Redis is down: only the process's own limit applies
            open_streams = 0
        if open_streams > settings.EVENT_STREAMS_PER_USER:
            self.release()
            raise NoSlot(f"You have {settings.EVENT_STREAMS_PER_USER} live streams open already (other tabs or "
                         "windows); this page polls instead.")

    def release(self):
        """Give the slot back (once, however often called)."""
        if not self.held:
            return
        self.held = False
        _process_slots.release()
        if self.counted:
            self.counted = False
            try:
                brokers.client().decr(self.key)
            except Exception:
                pass


@login_required
@require_GET
def job_events(request):
    """Server-sent events: the requesting user's jobs as they change (`event: job`, the API's JSON) and
    pictures of them while they render (`event: preview`: id, step, total_steps, image as a data URL). A user
    may hold EVENT_STREAMS_PER_USER streams at once and a process EVENT_STREAMS_PER_PROCESS: past that, 429
    (the page polls instead), so that streams never hold every thread the API needs."""
    user = request.user
    slot = StreamSlot(user.pk)
    try:
        slot.acquire()
    except NoSlot as exc:
        return JsonResponse({"detail": str(exc), "code": "streams"}, status=429, headers={"Retry-After": "30"})

    def job_data(job_id):
        job = Job.objects.filter(pk=job_id, user=user).select_related("video").first()
        return json.dumps(JobSerializer(job, context={"request": request}).data, default=str) if job else None

    def stream():
        yield "retry: 1000\n\n"
        changes = events.changed_jobs(user.pk, EVENT_STREAM_SECONDS)  # subscribed before the first read
        active = Job.objects.filter(user=user, status__in=[JobStatus.QUEUED, JobStatus.PROCESSING])
        for job_id in list(active.values_list("pk", flat=True)):
            yield f"event: job\ndata: {job_data(job_id)}\n\n"
        for message in changes:
            if message and events.is_preview(message):  # on this user's own channel: theirs
                yield f"event: preview\ndata: {message}\n\n"
                continue
            data = job_data(message) if message else None
            yield f"event: job\ndata: {data}\n\n" if data else ": still here\n\n"

    response = StreamingHttpResponse(stream(), content_type="text/event-stream")
    # The server closes the response when the stream ends or the browser goes away (WSGI), read or not.
    response._resource_closers.append(slot.release)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # let nginx pass events through as they come
    return response
