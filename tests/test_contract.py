"""The OpenAPI contract, checked from outside: schemathesis runs every operation of /api/schema/ against a live
server with generated requests, valid and invalid, and every check it has (no server error, documented status
codes, content types and bodies, invalid input refused, valid input accepted, authentication enforced, ...)."""

import subprocess
import sys

import pytest
from rest_framework.authtoken.models import Token

# Per operation and phase: a couple of minutes at most.
EXAMPLES = 20
SEED = 1313  # the same requests on every run, so that a failure can be replayed; change it to explore

CONFIG = """
[auth.openapi.tokenAuth]
api_key = "Token {token}"

# A valid job may be refused for the credits it costs.
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "402", "403", "404", "409", "429"]

# What a schema cannot state, answered 400: which username and password exist; which bytes are a PNG, JPEG or
# WebP; which reference images are yours, and which reference types a job type takes now (rules across fields
# that the schema states in words).
[[operations]]
include-name = ["POST /api/auth/token/", "POST /api/references/", "POST /api/jobs/", "POST /api/jobs/quote/"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "402", "403", "409", "429"]
"""


@pytest.mark.django_db(transaction=True)
def test_the_api_keeps_its_openapi_contract(live_server, alice, settings, tmp_path):
    # No submission limits: the jobs' validation and representation get the examples, not 429s.
    settings.QUOTA_SUBMISSIONS_PER_MINUTE = settings.QUOTA_ACTIVE_JOBS = (0, 0)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(token=Token.objects.create(user=alice).key))
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
         f"{live_server.url}/api/schema/", "--checks", "all", "--max-examples", str(EXAMPLES), "--seed", str(SEED),
         "--workers", "1", "--generation-database", "none", "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-30000:] + run.stderr[-5000:]
