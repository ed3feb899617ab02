"""Credits: each user's balance (Account.credits) and its append-only ledger (CreditEntry).

A submission is charged its job's credits in the transaction that records the job (`charge`); a job that
fails for a reason not its user's, or is cancelled before it starts, is refunded once (`refund`). Admins
grant credits (`grant`: the admin's action and `manage.py grant_credits`); every new user starts with
OURVIDZ_SIGNUP_CREDITS. Staff and users marked unlimited are never charged, nor is anyone with
OURVIDZ_CREDITS off: their jobs are recorded in the ledger at no cost. The balance never goes negative: a
charge is a conditional UPDATE under the account's row lock, and a database constraint backs it.
"""

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Sum
from django.utils import timezone

from . import job_types, quotas
from .models import Account, CreditEntry, CreditKind, Job, Tier, tier_of


class InsufficientCredits(Exception):
    """The job costs more than the user has."""

    def __init__(self, balance, price):
        self.balance, self.price = balance, price
        super().__init__(f"This job costs {price} credit{'s' * (price != 1)} and you have {balance}.")


def exemption(user, account):
    """Why `user` (with `account`) is not charged, or "" when they are."""
    return _free(user) or ("unlimited" if account.unlimited else "")


def _free(user):
    """Why `user` is not charged whatever their account says, or ""."""
    if not settings.OURVIDZ_CREDITS:
        return "credits are off"
    return "staff" if user.is_staff else ""


def account(user):
    """`user`'s Account, created with the sign-up credits (and their ledger entry) if it is missing."""
    found = Account.objects.filter(user=user).first()
    if found is not None:
        return found
    with transaction.atomic():
        created, new = Account.objects.get_or_create(user=user)
        if new and settings.OURVIDZ_SIGNUP_CREDITS:
            _change(created, CreditKind.GRANT, settings.OURVIDZ_SIGNUP_CREDITS, "sign-up credits")
            created.refresh_from_db(fields=["credits"])
    return created


# One statement: the balance taken (only if it suffices, unless the user is not charged) and the ledger row
# written, so that the account's row is locked for this statement and the commit alone.
CHARGE_SQL = """
WITH charged AS (
    UPDATE generation_account
    SET credits = credits - CASE WHEN unlimited OR %(free)s THEN 0 ELSE %(price)s END
    WHERE user_id = %(user)s AND (unlimited OR %(free)s OR credits >= %(price)s)
    RETURNING credits, unlimited
)
INSERT INTO generation_creditentry (user_id, kind, amount, price, balance, reason, job_id, job_type, created_at)
SELECT %(user)s, 'charge', CASE WHEN unlimited OR %(free)s THEN 0 ELSE -%(price)s END, %(price)s, credits,
       CASE WHEN %(free)s THEN %(free_reason)s WHEN unlimited THEN 'not charged (unlimited)' ELSE %(reason)s END,
       %(job)s, %(job_type)s, %(now)s
FROM charged
RETURNING balance
"""


def charge(job):
    """Charge saved `job` to its user, inside the transaction that recorded it. Raises InsufficientCredits
    (the caller's transaction then rolls the job back). Returns the balance after it."""
    user = job.user
    free = _free(user)  # the account's `unlimited` is read by the statement itself
    params = {"user": user.pk, "price": job.credits, "free": bool(free), "free_reason": f"not charged ({free})",
              "reason": f"{job_types.label(job.job_type)} job", "job": job.pk, "job_type": job.job_type,
              "now": timezone.now()}
    with connection.cursor() as cursor:
        cursor.execute(CHARGE_SQL, params)
        row = cursor.fetchone()
        if row is None and not Account.objects.filter(user=user).exists():
            account(user)  # a user from before accounts existed: open one, then charge
            cursor.execute(CHARGE_SQL, params)
            row = cursor.fetchone()
    if row is None:
        raise InsufficientCredits(account(user).credits, job.credits)
    return row[0]


def refund(job, reason):
    """Give `job`'s charge back (once: a second refund of the same job changes nothing). True if refunded."""
    charged = CreditEntry.objects.filter(job=job, kind=CreditKind.CHARGE, amount__lt=0).first()
    if charged is None or CreditEntry.objects.filter(job=job, kind=CreditKind.REFUND).exists():
        return False
    locked = Account.objects.select_for_update().get(user_id=job.user_id)
    _change(locked, CreditKind.REFUND, -charged.amount, reason, job, charged.price)
    return True


def grant(user, amount, reason):
    """Add `amount` credits to `user` (negative: take them back, never below zero; ValueError then)."""
    with transaction.atomic():
        account(user)
        locked = Account.objects.select_for_update().get(user=user)
        if locked.credits + amount < 0:
            raise ValueError(f"{user} has {locked.credits} credits; {-amount} cannot be taken back.")
        return _change(locked, CreditKind.GRANT, amount, reason)


def summary(user):
    """What `user` sees of their account: balance, whether they are charged, tier, limits and usage."""
    found = account(user)
    tier = tier_of(user)
    return {"username": user.get_username(), "credits": found.credits, "charged": not exemption(user, found),
            "tier": Tier(tier).label, "limits": quotas.limits(user, tier), "usage": usage(user)}


def usage(user):
    """Per job type: jobs submitted, credits charged (net of refunds) and GPU seconds spent, for `user`."""
    jobs = (Job.objects.filter(user=user).values("job_type")
            .annotate(jobs=Count("id"), gpu_seconds=Sum("gpu_seconds")).order_by("job_type"))
    spent = dict(CreditEntry.objects.filter(user=user, kind__in=[CreditKind.CHARGE, CreditKind.REFUND])
                 .values_list("job_type").annotate(total=Sum("amount")).values_list("job_type", "total"))
    return [{"job_type": row["job_type"], "label": job_types.label(row["job_type"]), "jobs": row["jobs"],
             "credits": -(spent.get(row["job_type"]) or 0),
             "gpu_seconds": round(row["gpu_seconds"] or 0.0, 1)} for row in jobs]


def _change(locked, kind, amount, reason, job=None, price=0):
    """Apply `amount` to the `locked` account's balance and record it."""
    Account.objects.filter(pk=locked.pk).update(credits=F("credits") + amount)
    locked.credits += amount
    return CreditEntry.objects.create(
        user_id=locked.user_id, kind=kind, amount=amount, balance=locked.credits, reason=reason[:255], job=job,
        job_type=job.job_type if job else "", price=price)
