"""OpenTelemetry tracing (ourvidz.tracing): off, nothing of it is needed; on, a request, the task it sends, the task's
run on a real worker process and the run's phases are one trace."""

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import ROOT, Stack, sdxl_worker_command, worker_env
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from generation import job_types
from ourvidz import tracing


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP trace collector on loopback: the spans exporters send to /v1/traces, decoded."""

    def __init__(self):
        self.spans = []
        super().__init__(("127.0.0.1", 0), _Receive)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def named(self, name):
        return [span for span in self.spans if span.name == name]


class _Receive(BaseHTTPRequestHandler):
    def do_POST(self):
        request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.spans.extend(span for resource in request.resource_spans for scope in resource.scope_spans
                                 for span in scope.spans)
        body = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_with_tracing_off_nothing_of_opentelemetry_is_needed():
    # A process in which OpenTelemetry cannot be imported, as in a default install: the web application loads and
    # a worker's phases run.
    code = """
import sys
sys.modules["opentelemetry"] = None
import django
django.setup()
from ourvidz import tracing, wsgi
from generation.worker.runtime import JobRun
run = JobRun(None)
run.phase = "steps"  # as if its steps had begun: the phase is not written again, only the tracing wrappers run
with run.timed("generate"):
    pass
with run.timed_steps("denoise", "decode"):
    pass
assert not tracing.setup("ourvidz-test") and wsgi.application
print("ran without OpenTelemetry")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ran without OpenTelemetry" in done.stdout


def test_tracing_is_off_by_default(settings):
    assert settings.OTEL_ENABLED is False
    assert tracing.setup("ourvidz-test") is False


@pytest.fixture
def traced(settings):
    """This process traced into memory, as the web process would trace into OTLP; untraced again after."""
    settings.OTEL_ENABLED = True
    exporter = InMemorySpanExporter()
    assert tracing.setup("ourvidz-web", exporter=exporter)
    yield exporter
    tracing.stop()


def test_a_request_its_task_and_the_workers_phases_are_one_trace(alice_api, sandbox, traced, transactional_db,
                                                                 tiny_models, tmp_path):
    sandbox.private_queues()
    queue = job_types.POOLS["sdxl"].queue
    collector = Collector()
    env = worker_env(OTEL_ENABLED=1, OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint, OTEL_BSP_SCHEDULE_DELAY=100)
    worker = Stack([], env, tmp_path / "worker.log", command=sdxl_worker_command(queue, "traced"))
    try:
        sandbox.worker("sdxl")  # so that this process's scheduler releases the job to the worker's queue at once
        response = alice_api.post("/api/jobs/", {"job_type": "sdxl_image_fast", "prompt": "a fox"}, format="json")
        assert response.status_code == 201, response.content
        job_id = response.json()["id"]
        assert worker.wait_for_job(job_id, 180).status == "completed"
        worker.wait_for(lambda: collector.named("store"), 60, "the worker's spans")
    finally:
        worker.stop()
        collector.shutdown()

    local = traced.get_finished_spans()
    (request,) = [span for span in local if span.name.startswith("POST") and span.parent is None]
    (publish,) = [span for span in local if span.name == "apply_async/sdxl.generate"]
    assert publish.parent.span_id == request.context.span_id
    trace_id = request.context.trace_id.to_bytes(16, "big")
    (run,) = collector.named("run/sdxl.generate")
    assert run.trace_id == trace_id and run.parent_span_id == publish.context.span_id.to_bytes(8, "big")
    attributes = {a.key: a.value.string_value for a in run.attributes}
    assert attributes["ourvidz.job.id"] == job_id and attributes["ourvidz.job.type"] == "sdxl_image_fast"
    (generate,) = collector.named("generate")
    (store,) = collector.named("store")
    assert generate.parent_span_id == store.parent_span_id == run.span_id
    for phase in ("denoise", "decode", "encode"):
        (span,) = collector.named(phase)
        assert span.trace_id == trace_id and span.parent_span_id == generate.span_id, phase
        assert generate.start_time_unix_nano <= span.start_time_unix_nano <= span.end_time_unix_nano
        assert span.end_time_unix_nano <= generate.end_time_unix_nano
    (denoise,), (decode,) = collector.named("denoise"), collector.named("decode")
    assert denoise.end_time_unix_nano == decode.start_time_unix_nano  # split at the last step
