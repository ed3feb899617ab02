"""The health check load balancers and operators poll."""

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from .. import brokers, job_types, negative_prompts, storage


@require_GET
def healthz(request):
    """200 when the database, the broker and storage all answer and this host can prepare every pool's jobs
    (SDXL's need its tokenizer here); 503 naming what does not."""
    checks = {}
    for name, probe in (("database", _check_database), ("broker", lambda: brokers.client().ping()),
                        ("storage", lambda: storage.get_storage().check()), ("tokenizer", _check_tokenizer)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {exc}"
    # Whether this host can prepare each pool's submissions: SDXL's negative prompts are cut to the text
    # encoder's window with the tokenizer; WAN needs nothing of its own here.
    pools = {name: "ok" for name in job_types.POOLS}
    if checks["tokenizer"] != "ok" and "sdxl" in pools:
        pools["sdxl"] = "error: SDXL submissions are refused (503) until the tokenizer can be read"
    healthy = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", **checks, "pools": pools},
                        status=200 if healthy else 503)


def _check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_tokenizer():
    try:
        negative_prompts.sdxl_tokenizer()
    except negative_prompts.TokenizerUnavailable as exc:
        raise RuntimeError(exc.cause) from exc
