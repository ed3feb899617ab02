"""Signals a worker sends when a job ends; receivers in generation.receivers record the outcome.

job_completed(sender=pool name, job, outputs, metadata, fields)
    outputs: list of StoredOutput; metadata: merged into Job.metadata; fields: other Job columns.
job_failed(sender=pool name, job, error, metadata, fields)
    error: the message shown to the user.
"""

from django.dispatch import Signal

job_completed = Signal()
job_failed = Signal()
