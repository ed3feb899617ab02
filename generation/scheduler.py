"""The scheduler: the database is the queue of record; this releases each pool's jobs to its broker
queue a few at a time, in a fair order, and releases again what the broker lost.

Release rule: a pool's broker queue holds at most (1 + SCHEDULER_BUFFER_PER_WORKER) unstarted jobs
per online worker of the pool. With no worker online nothing is released (a job says why it waits).

Fair order among a pool's waiting jobs (generation.models.Job with released_at unset):
1. the tier (staff and priority users before standard ones). A user who has waited unserved for
   SCHEDULER_AGEING_SECONDS counts one tier higher for each such period, so no tier starves;
2. the user with the fewest jobs running or released in the pool;
3. the user served least recently (their latest release in the pool, over the last day);
4. the user's own oldest job (first in, first out within one user).

`release(queue)` runs after a submission commits, after a job ends or is cancelled, when a worker
comes online, and on beat's tick (generation.tasks.schedule), which first `recover_orphans(queue)` and
`recover_lost(queue)`: jobs running on a worker that vanished, and released jobs whose message the
broker no longer holds, wait again. Schedulers of one pool hold a
PostgreSQL advisory lock, so concurrent ones never release a job twice nor more than the rule allows.
Messages are sent after commit and numbered (Job.releases): a message of an earlier release that
turns up late starts nothing (generation.worker.runtime checks the number). Every time it writes or
compares is the database's (generation.clock), whichever host runs it.
"""

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.db.models.functions import Now

from ourvidz.celery import app as celery_app

from . import brokers, capabilities, clock, events, job_types, presence
from .models import Job, JobPhase, JobStatus, Tier, tier_of

log = logging.getLogger(__name__)

WAITING = Q(status=JobStatus.QUEUED, released_at__isnull=True)
RELEASED = Q(status=JobStatus.QUEUED, released_at__isnull=False)
SERVED_WINDOW = timedelta(days=1)  # "served least recently" looks this far back
# A running job's worker is gone once its heartbeat has been seen missing for this long (a few heartbeats).
MISSING_CONFIRM_SECONDS = 5
MISSING_PREFIX = "ourvidz:missing-worker:"


def task_id(job_id, release):
    """The Celery task id of a job's `release`-th message (readable in Flower and the logs)."""
    return f"{job_id}.{release}"


def pool_workers(queue, online):
    """The online workers consuming `queue`."""
    return [w for w in online if queue in w.get("queues", [])]


def release_limit(workers):
    """How many unstarted jobs a pool's broker queue may hold with `workers` workers online."""
    return workers * (1 + settings.SCHEDULER_BUFFER_PER_WORKER)


def servable(queue, online):
    """A filter for the pool's jobs its online workers can all run (a reference type every one of them
    has loaded, or no reference), as submission checks it."""
    allowed = Q(reference_type="")
    for jt in job_types.JOB_TYPES.values():
        if jt.queue == queue:
            for reference_type in capabilities.reference_types(jt, online):
                allowed |= Q(job_type=jt.name, reference_type=reference_type)
    return allowed


def kick(queue):
    """release(queue), for the moments something changed (a submission, a job's end, a worker coming
    online); returns the jobs released. A failure is logged, not raised: the job is safe in the database
    and beat's tick retries."""
    try:
        return release(queue)
    except Exception:
        log.warning("could not release jobs of %s now; the next tick will", queue, exc_info=True)
        return []


def release(queue):
    """Send `queue`'s next waiting jobs, in fair order, until its broker queue holds what the release
    rule allows; returns the jobs released (their messages go out once this commits)."""
    online = presence.online()
    workers = len(pool_workers(queue, online))
    limit = release_limit(workers)
    if not workers or Job.objects.filter(RELEASED, queue=queue).count() >= limit:
        return []  # the common case under load, answered without taking the lock
    with transaction.atomic(), connection.cursor() as cursor:
        # Held to the end of the transaction: one scheduler per pool at a time, whichever process.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"ourvidz.release.{queue}"])
        users, in_broker = shares(queue)
        if in_broker >= limit:
            return []
        picked = fair_order(queue, limit - in_broker, servable(queue, online), users)
        # Released at the database's time, a microsecond apart in the fair order: the order they are sent in
        # (and positions count in). Conditional: a job cancelled meanwhile stays cancelled.
        cursor.execute(f"""
            UPDATE {Job._meta.db_table} AS job
               SET released_at = STATEMENT_TIMESTAMP() + picked.n * INTERVAL '1 microsecond',
                   releases = job.releases + 1
              FROM unnest(%s::uuid[]) WITH ORDINALITY AS picked(id, n)
             WHERE job.id = picked.id AND job.status = %s AND job.released_at IS NULL
         RETURNING job.id, job.releases, job.released_at""", [[job.pk for job in picked], JobStatus.QUEUED])
        numbers = {pk: (number, at) for pk, number, at in cursor.fetchall()}
        released = [job for job in picked if job.pk in numbers]
        for job in released:
            job.releases, job.released_at = numbers[job.pk]
            events.publish_on_commit(job)  # its page shows its new place at once
        transaction.on_commit(lambda: send(released))
    return released


def send(jobs):
    """Send each released job's task by name to its pool's queue; a job whose message cannot be sent
    waits again (the web tier never imports the pools)."""
    for job in jobs:
        jt = job.type
        try:
            celery_app.send_task(jt.task, args=[str(job.pk)], kwargs={"release": job.releases},
                                 task_id=task_id(job.pk, job.releases), queue=job.queue,
                                 soft_time_limit=jt.time_limit(job.num_images),
                                 time_limit=jt.hard_time_limit(job.num_images))
        except Exception:
            log.warning("could not send job %s to %s; it waits for the next release", job.pk, job.queue,
                        exc_info=True)
            Job.objects.filter(RELEASED, pk=job.pk, releases=job.releases).update(released_at=None)


def recover_lost(queue):
    """Return to waiting the jobs released more than SCHEDULER_LOST_AFTER seconds ago whose message the
    broker holds no more (lost in a broker restart, say); the next release sends them again. Returns
    how many."""
    cutoff = clock.since(timedelta(seconds=settings.SCHEDULER_LOST_AFTER))  # the database's clock
    stale = Job.objects.filter(RELEASED, queue=queue, released_at__lt=cutoff).values_list("pk", "releases")
    stale = list(stale)
    if not stale:
        return 0
    tasks = {pool.task for pool in job_types.POOLS.values()}
    present = brokers.job_messages(queue, tasks)
    lost = [pk for pk, number in stale if (str(pk), number) not in present]
    if lost:
        log.warning("%d released jobs of %s are not in the broker; releasing them again", len(lost), queue)
    return Job.objects.filter(RELEASED, pk__in=lost, released_at__lt=cutoff).update(released_at=None)


def retier(user):
    """Give `user`'s waiting jobs the tier the user has now (generation.models.tier_of)."""
    return Job.objects.filter(WAITING, user=user).update(tier=tier_of(user))


def recover_orphans(queue):
    """Put back into the queue the jobs of `queue` running on a worker that vanished (its heartbeat expired
    WORKER_LOST_AFTER seconds ago: its main process died, or its machine): they wait again and are released
    with a new number, so the old message, if ever delivered again, starts nothing. Returns how many.

    A worker counts as vanished once this has seen its heartbeat missing for MISSING_CONFIRM_SECONDS: a
    heartbeat expires by the clock even while Redis is down, and must not look like every worker dying
    (their jobs would be taken from them mid-render) when Redis comes back."""
    running = Job.objects.filter(queue=queue, status=JobStatus.PROCESSING).exclude(worker="")
    workers = set(running.values_list("worker", flat=True))
    if not workers:
        return 0
    online = {presence.identity(w["name"], w.get("pid")) for w in presence.online()}
    server = brokers.client()
    # Redis's clock, not this host's: another host may have written the first sighting.
    seconds, microseconds = server.time()
    now = seconds + microseconds / 1e6
    if workers & online:
        server.delete(*(MISSING_PREFIX + worker for worker in workers & online))  # back, or never gone
    gone = []
    for worker in workers - online:
        key = MISSING_PREFIX + worker
        server.set(key, now, nx=True, ex=MISSING_CONFIRM_SECONDS * 10 + 60)
        if now - float(server.get(key) or now) >= MISSING_CONFIRM_SECONDS:
            gone.append(worker)
    if not gone:
        return 0
    orphans = Job.objects.filter(queue=queue, status=JobStatus.PROCESSING, worker__in=gone)
    moved = orphans.update(status=JobStatus.QUEUED, released_at=None, worker="", progress=0, current_step=0,
                           phase="")
    log.warning("%d jobs of %s ran on a worker that is gone (%s); they go back to the queue", moved, queue,
                ", ".join(sorted(gone)))
    return moved


# --- the fair order ---------------------------------------------------------------------------------

@dataclass
class Share:
    """One user's part of a pool: what the fair order compares."""

    user_id: int
    tier: int
    waiting: int
    in_flight: int
    oldest: object  # created_at of the oldest waiting job
    last_served: object = None  # latest release in the pool (within SERVED_WINDOW), or None
    waited: float = 0.0  # seconds, by the database's clock, since the later of those two
    picked: int = 0  # while ordering: the number of the latest pick of this user's (0: none yet)

    def served_key(self):
        """Least recently served first: never served, then by the time of the latest release, then the
        picks made while ordering, which come after every real release."""
        if self.picked:
            return (2, self.picked)
        return (0, 0.0) if self.last_served is None else (1, self.last_served.timestamp())

    def effective_tier(self):
        """The tier this user competes at: one higher for each SCHEDULER_AGEING_SECONDS they have waited
        unserved (since their oldest waiting job came, or since their latest release if later), up to
        the top tier. A user served all along never rises, so a flood does not overtake a newcomer of its
        own tier; one starved by higher tiers rises until served."""
        if self.picked:
            return self.tier  # served just now, while ordering
        waited = max(0.0, self.waited)  # a job's creation time may come from a host whose clock runs ahead
        return min(max(Tier.values), self.tier + int(waited // settings.SCHEDULER_AGEING_SECONDS))


def shares(queue):
    """({user id: Share} of the users with waiting jobs in `queue`, how many jobs of the queue are
    released and not started), in one statement: the scheduler's every decision starts here. Times are
    the database's."""
    with connection.cursor() as cursor:
        cursor.execute(f"""
            SELECT *, EXTRACT(EPOCH FROM STATEMENT_TIMESTAMP() - GREATEST(oldest, last_served)) AS waited FROM (
            SELECT user_id,
                   COUNT(*) FILTER (WHERE status = %(queued)s AND released_at IS NULL) AS waiting,
                   COUNT(*) FILTER (WHERE status = %(running)s OR released_at IS NOT NULL) AS in_flight,
                   COUNT(*) FILTER (WHERE status = %(queued)s AND released_at IS NOT NULL) AS released,
                   MIN(created_at) FILTER (WHERE status = %(queued)s AND released_at IS NULL) AS oldest,
                   MAX(tier) FILTER (WHERE status = %(queued)s AND released_at IS NULL) AS tier,
                   (SELECT MAX(served.released_at) FROM {Job._meta.db_table} AS served
                     WHERE served.queue = %(queue)s AND served.user_id = active.user_id
                       AND served.released_at >= STATEMENT_TIMESTAMP() - %(window)s) AS last_served
              FROM {Job._meta.db_table} AS active
             WHERE queue = %(queue)s AND status IN (%(queued)s, %(running)s)
             GROUP BY user_id) AS pool""",
                       {"queue": queue, "queued": JobStatus.QUEUED, "running": JobStatus.PROCESSING,
                        "window": SERVED_WINDOW})
        rows = cursor.fetchall()
    users = {user_id: Share(user_id, tier, waiting, in_flight, oldest, last_served, float(waited or 0))
             for user_id, waiting, in_flight, _, oldest, tier, last_served, waited in rows if waiting}
    return users, sum(row[3] for row in rows)


def fair_order(queue, limit, allowed=None, users=None):
    """The first `limit` waiting jobs of `queue` (among those matching the filter `allowed`) in fair order;
    `users`: shares(queue)[0] when the caller has read them (they are used up: ordering changes them)."""
    allowed = Q() if allowed is None else allowed
    users = shares(queue)[0] if users is None else users
    upcoming = {}  # user id -> their next waiting jobs, oldest first, fetched when first picked
    picks = 0
    order = []
    while len(order) < limit and users:
        share = min(users.values(), key=lambda s: (-s.effective_tier(), s.in_flight, s.served_key(), s.oldest))
        if share.user_id not in upcoming:
            upcoming[share.user_id] = list(Job.objects.filter(WAITING, allowed, queue=queue, user_id=share.user_id)
                                           .order_by("created_at", "pk")[:limit])
        jobs = upcoming[share.user_id]
        if not jobs:
            del users[share.user_id]
            continue
        order.append(jobs.pop(0))
        picks += 1
        share.in_flight += 1
        share.picked = picks
        share.oldest = jobs[0].created_at if jobs else share.oldest
    return order


# --- what a waiting job can expect ------------------------------------------------------------------

DURATIONS_TTL = 30  # seconds a process reuses the measured durations
DURATION_HISTORY = 20  # recent completed jobs per job type
_durations = {"expires": 0.0, "seconds": {}, "after_steps": {}}
# What a job's worker does after its last denoising step, as its timings (JobMetadata) name it.
AFTER_STEPS = ("decode", "encode", "store")


def unit_seconds():
    """Job type -> measured seconds per job (per image for SDXL): the mean of its last
    DURATION_HISTORY completed jobs of the past week on this installation. Cached DURATIONS_TTL seconds."""
    _measure()
    return _durations["seconds"]


def after_steps_seconds():
    """Job type -> measured seconds from a job's last step to its end (decoding, encoding, saving), per
    image for SDXL, over the same jobs as unit_seconds()."""
    _measure()
    return _durations["after_steps"]


def _measure():
    if time.monotonic() <= _durations["expires"]:
        return
    batched = [jt.name for jt in job_types.JOB_TYPES.values() if jt.batched]
    after_steps = " + ".join(f"COALESCE((metadata->'timings'->>'{phase}')::float, 0)" for phase in AFTER_STEPS)
    with connection.cursor() as cursor:
        cursor.execute(f"""
            SELECT job_type, AVG(seconds / per), AVG(after_steps / per) FROM (
                SELECT job_type,
                       EXTRACT(EPOCH FROM completed_at - started_at) AS seconds, {after_steps} AS after_steps,
                       CASE WHEN job_type = ANY(%s) THEN GREATEST(num_images, 1) ELSE 1 END AS per,
                       ROW_NUMBER() OVER (PARTITION BY job_type ORDER BY completed_at DESC) AS recent
                FROM {Job._meta.db_table}
                WHERE status = %s AND started_at IS NOT NULL AND completed_at >= STATEMENT_TIMESTAMP() - %s
            ) AS jobs WHERE recent <= %s GROUP BY job_type""",
                       [batched, JobStatus.COMPLETED, timedelta(days=7), DURATION_HISTORY])
        rows = cursor.fetchall()
    _durations["seconds"] = {job_type: float(seconds) for job_type, seconds, _ in rows}
    _durations["after_steps"] = {job_type: float(after) for job_type, _, after in rows}
    _durations["expires"] = time.monotonic() + DURATIONS_TTL


def expected_seconds(job_type, num_images, measured):
    """How long a job runs: measured on this installation (`measured`: unit_seconds()), else the table."""
    return job_types.get(job_type).expected_total(num_images, measured.get(job_type))


@dataclass
class Outlook:
    """A queued or running job's place and times, as the API shows them."""

    position: int | None = None  # 1: the next to start in its pool
    start_seconds: float | None = None  # from now, estimated
    finish_seconds: float | None = None
    waiting_reason: str | None = None  # why it cannot start now, in words


class PoolView:
    """One pool's queue as the scheduler would serve it now, for the outlook of its jobs. Build one per
    request and pool; it reads what a job's outlook needs when first needed (a running job: nothing but
    the measured durations; nothing more when no worker is online), then each job costs a query more.
    `online`: presence.online(), when the caller has read it."""

    def __init__(self, queue, online=None):
        self.queue = queue
        self.pool = next(p for p in job_types.POOLS.values() if p.queue == queue)
        if online is not None:
            self.online = online
        self.measured = unit_seconds()

    @cached_property
    def now(self):
        return clock.now()  # the clock the jobs' times come from

    @cached_property
    def online(self):
        try:
            return presence.online()
        except Exception:  # Redis is down: the database still knows the queue
            return None

    @cached_property
    def workers(self):
        return None if self.online is None else len(pool_workers(self.queue, self.online))

    @cached_property
    def users(self):
        return shares(self.queue)[0]

    @cached_property
    def load(self):
        """(jobs released, seconds left of the running ones, mean seconds of a queued one)."""
        queued = (Job.objects.filter(queue=self.queue, status=JobStatus.QUEUED)
                  .values("job_type", "num_images").annotate(jobs=Count("pk"), released=Count("pk", filter=RELEASED))
                  .order_by())
        released, queued_jobs, queued_seconds = 0, 0, 0.0
        for row in queued:
            released += row["released"]
            queued_jobs += row["jobs"]
            queued_seconds += row["jobs"] * expected_seconds(row["job_type"], row["num_images"], self.measured)
        running = Job.objects.filter(queue=self.queue, status=JobStatus.PROCESSING).annotate(
            running_for=Now() - F("started_at")).values_list("job_type", "num_images", "running_for")  # one per worker
        running_left = sum(self.left(*row) for row in running)
        return released, running_left, queued_seconds / queued_jobs if queued_jobs else 0.0

    def left(self, job_type, num_images, running_for):
        """Seconds a running job still needs, estimated; `running_for`: a timedelta since it started (None: not
        known)."""
        seconds = expected_seconds(job_type, num_images, self.measured)
        return max(0.0, seconds - running_for.total_seconds()) if running_for is not None else seconds

    def running_left(self, job):
        """Seconds a running job still needs: from its steps done (the worker's measured seconds per step,
        then the measured time after the last step) once it reports them; before (loading, enhancing)
        from its expected duration; None once that has passed (it takes longer than expected)."""
        per = job.num_images if job.type.batched else 1
        after = after_steps_seconds().get(job.job_type, 0.0) * per
        if job.phase == JobPhase.STEPS and job.step_seconds is not None and job.total_steps:
            return round((job.total_steps - job.current_step) * job.step_seconds + after, 1)
        if job.phase in (JobPhase.DECODING, JobPhase.ENCODING, JobPhase.SAVING):
            return None  # past the last step: what is left is short, and shown as the phase
        left = self.left(job.job_type, job.num_images, self.now - job.started_at if job.started_at else None)
        return round(left, 1) if left > 0 else None

    @property
    def released(self):
        return self.load[0]

    def outlook(self, job):
        """The Outlook of `job`, one of this pool's."""
        if job.status == JobStatus.PROCESSING:
            return Outlook(start_seconds=0.0, finish_seconds=self.running_left(job))
        reason = self.waiting_reason(job)
        if reason:
            return Outlook(waiting_reason=reason)
        position = self.position(job)
        if position is None:
            return Outlook()
        _, running_left, mean_queued = self.load
        start = (running_left + (position - 1) * mean_queued) / self.workers
        duration = expected_seconds(job.job_type, job.num_images, self.measured)
        return Outlook(position, round(start, 1), round(start + duration, 1))

    def waiting_reason(self, job):
        name = self.pool.name.upper()
        if self.online is None:
            return "The job queue cannot be reached right now; the job is kept and starts once it is back."
        if not self.workers:
            return f"No {name} worker is online; the job starts when one is."
        if job.reference_type and job.reference_type not in capabilities.reference_types(job.type, self.online):
            return (f"No online {name} worker can use a '{job.reference_type}' reference now; the job starts when "
                    "one can.")
        return None

    def position(self, job):
        """1 + the jobs that start before `job`: those released already, then the waiting ones the fair
        order puts first if nothing else changes."""
        if job.released_at is not None:
            return Job.objects.filter(RELEASED, queue=self.queue).filter(
                Q(released_at__lt=job.released_at) | Q(released_at=job.released_at, pk__lt=job.pk)).count() + 1
        mine = self.users.get(job.user_id)
        if mine is None:  # it left the queue meanwhile
            return None
        rank = Job.objects.filter(WAITING, queue=self.queue, user_id=job.user_id).filter(
            Q(created_at__lt=job.created_at) | Q(created_at=job.created_at, pk__lt=job.pk)).count()
        # The order picks users round by round: a user's (rank+1)-th job is picked at the round in which
        # its jobs in flight reach `level`. Users with fewer in flight go first; within a round, users
        # who joined it later (more in flight to begin with) go first, then by the tie-breaks.
        level = mine.in_flight + rank
        tier = mine.effective_tier()
        ahead = self.released + rank
        for other in self.users.values():
            if other.user_id == job.user_id or other.effective_tier() < tier:
                continue
            if other.effective_tier() > tier:
                ahead += other.waiting
                continue
            ahead += min(max(level - other.in_flight, 0), other.waiting)
            in_round = other.in_flight <= level < other.in_flight + other.waiting
            if in_round and _before(other, mine):
                ahead += 1
        return ahead + 1


def _before(other, mine):
    """Whether `other` is picked before `mine` within a round they are both in."""
    if other.in_flight != mine.in_flight:
        return other.in_flight > mine.in_flight
    return (other.served_key(), other.oldest) < (mine.served_key(), mine.oldest)


def outlooks(jobs, cache=None):
    """Job -> Outlook for queued and running `jobs`; `cache` keeps one PoolView per pool across calls
    (a serializer's context)."""
    cache = {} if cache is None else cache
    result = {}
    for job in jobs:
        if job.status not in (JobStatus.QUEUED, JobStatus.PROCESSING):
            continue
        if job.queue not in cache:
            cache[job.queue] = PoolView(job.queue)
        result[job.pk] = cache[job.queue].outlook(job)
    return result

