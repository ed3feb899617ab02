"""Signals a worker sends when a job ends; generation.receivers records the outcome
(generation.outcomes).

job_completed(sender=pool name, job, outputs, metadata, fields)
    outputs: list of StoredOutput; metadata: merged into Job.metadata (generation.metadata.JobMetadata);
    fields: other Job columns to save (e.g. enhanced_prompt).
job_failed(sender=pool name, job, error, metadata, fields, refund)
    error: the message shown to the user; refund: False when the failure was the user's (their credits
    are then kept).
"""

from dataclasses import dataclass

from django.dispatch import Signal

job_completed = Signal()
job_failed = Signal()


@dataclass
class StoredOutput:
    """One file a worker stored for a job, as job_completed reports it."""

    kind: str  # "image" or "video"
    index: int
    bucket: str
    path: str
    thumbnail_path: str
    width: int
    height: int
    size_bytes: int
    metadata: dict  # generation.metadata.AssetMetadata
