"""Retention: an image or video is deleted RETENTION_DAYS after it was made (a number per tier; 0 keeps it
forever), unless its owner keeps it (Asset.keep). The daily housekeeping task `generation.expire_outputs` deletes
what has expired: its rows, then its files through the storage layer (generation.receivers.delete_files), and
webhook deliveries (with their attempts) as old. The job stays, for the ledger and usage figures, with its
outputs gone."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .models import Image, Tier, Video, WebhookDelivery, tier_of

BATCH = 500  # rows deleted per transaction: a long backlog is not one long lock


def days(tier):
    """Days an output of a `tier` user is kept (0: forever)."""
    values = settings.RETENTION_DAYS
    return values[min(tier, len(values) - 1)]


def expires_at(asset, kept_for=None):
    """When `asset` will be deleted, its owner's outputs being kept `kept_for` days (default: by their tier), or
    None when it stays (kept by its owner, or 0 days: forever)."""
    kept_for = days(tier_of(asset.user)) if kept_for is None else kept_for
    if asset.keep or not kept_for:
        return None
    return asset.created_at + timedelta(days=kept_for)


def _tier_users(tier, user):
    """Owners at `tier`, as a filter along the path `user` (staff count as priority, as they do everywhere)."""
    priority = Q(**{f"{user}__is_staff": True}) | Q(**{f"{user}__account__tier": Tier.PRIORITY})
    return priority if tier == Tier.PRIORITY else ~priority


def _past(now, user="user"):
    """A filter: made (created_at) longer ago than its owner (at the path `user`) has things kept."""
    matches = Q(pk__in=[])
    for tier in Tier.values:
        if kept_for := days(tier):
            matches |= _tier_users(tier, user) & Q(created_at__lt=now - timedelta(days=kept_for))
    return matches


def expired(model, now=None):
    """`model`'s assets (Image or Video) whose time has passed and that their owners do not keep."""
    return model.objects.filter(_past(now or timezone.now()), keep=False)


def delete_expired(now=None):
    """Delete every expired image and video, a batch per transaction (their files go once each commits), and the
    webhook deliveries as old. Returns {"images": n, "videos": m, "webhook_deliveries": k}; running it again
    deletes nothing more."""
    now = now or timezone.now()
    deleted = {}
    for name, model in (("images", Image), ("videos", Video)):
        deleted[name] = 0
        while ids := list(expired(model, now).values_list("pk", flat=True)[:BATCH]):
            with transaction.atomic():
                deleted[name] += model.objects.filter(pk__in=ids, keep=False).delete()[1].get(model._meta.label, 0)
    old = WebhookDelivery.objects.filter(_past(now, user="job__user"))
    deleted["webhook_deliveries"] = 0
    while ids := list(old.values_list("pk", flat=True)[:BATCH]):
        deleted["webhook_deliveries"] += WebhookDelivery.objects.filter(pk__in=ids).delete()[1].get(
            WebhookDelivery._meta.label, 0)
    return deleted
