"""OpenTelemetry tracing, off unless OTEL_ENABLED: a request, the Celery task it sends, the task's run on a worker
and the run's phases (load, enhance, denoise, decode, encode, store) in one trace.

The web process starts it in ourvidz.wsgi, each worker's pool process when it starts (ourvidz.celery). The official
Django and Celery instrumentations make the request's and the tasks' spans and carry the trace in the task's
message; generation.worker.runtime adds the phases with `span` and `record`. Spans go over OTLP/HTTP to the
standard OTEL_EXPORTER_OTLP_ENDPOINT (and the other OTEL_* variables). The packages come with the `tracing` extra:
with tracing off nothing of OpenTelemetry is imported, and `span` and `record` do nothing.
"""

import os
from contextlib import nullcontext

from django.conf import settings

_tracing = {"provider": None, "tracer": None}


def setup(service, exporter=None):
    """Trace this process as `service` (unless OTEL_SERVICE_NAME names it) when OTEL_ENABLED; spans go to
    `exporter`, by default OTLP over HTTP in batches. Returns whether this process traces."""
    if _tracing["provider"] is not None:
        return True
    if not settings.OTEL_ENABLED:
        return False
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Each process has its own provider, passed to the instrumentations, rather than OpenTelemetry's global one,
    # which can be set only once per process.
    DjangoInstrumentor().instrument(tracer_provider=provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)
    _tracing.update(provider=provider, tracer=provider.get_tracer("ourvidz"))
    return True


def stop():
    """Send the spans not yet exported and stop tracing this process (a pool process ends with os._exit, which
    runs no exit handler: ourvidz.celery calls this when it shuts down)."""
    provider = _tracing["provider"]
    if provider is None:
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    DjangoInstrumentor().uninstrument()
    CeleryInstrumentor().uninstrument()
    provider.shutdown()
    _tracing.update(provider=None, tracer=None)


def span(name):
    """A context manager: a span `name` around the block, child of the current one; nothing when not tracing."""
    tracer = _tracing["tracer"]
    return nullcontext() if tracer is None else tracer.start_as_current_span(name)


def record(name, start_ns, end_ns):
    """A span `name` that ran from `start_ns` to `end_ns` (time.time_ns()), child of the current one: for a phase
    known only once it is over. Nothing when not tracing."""
    tracer = _tracing["tracer"]
    if tracer is not None:
        tracer.start_span(name, start_time=start_ns).end(end_time=end_ns)


def annotate(attributes):
    """Set `attributes` on the current span (the task's run, in a worker); nothing when not tracing."""
    if _tracing["tracer"] is not None:
        from opentelemetry import trace

        trace.get_current_span().set_attributes(attributes)
