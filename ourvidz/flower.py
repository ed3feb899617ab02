"""Flower behind a login: what the Procfile's `flower` line runs.

    python -m ourvidz.flower [FLOWER OPTIONS]

runs `celery -A ourvidz flower` with basic auth: FLOWER_BASIC_AUTH (user:password, several separated by commas)
when set, else a login generated once and kept in OURVIDZ_DATA_DIR/flower_credentials (mode 0600). With a login
Flower also refuses cross-origin requests and sends no Access-Control-Allow-Origin header (it sends `*` only
when it runs without authentication and FLOWER_UNAUTHENTICATED_API is set).
"""

import os
import sys

from ourvidz.credentials import keep_secret, new_password
from ourvidz.services import data_dir

USER = "ops"


def credentials(out=sys.stderr):
    """FLOWER_BASIC_AUTH, else the generated `user:password`, made and written to `out` the first time."""
    if given := os.environ.get("FLOWER_BASIC_AUTH"):
        return given
    path = data_dir() / "flower_credentials"
    new = not path.exists()
    login = keep_secret(path, lambda: f"{USER}:{new_password()}")
    if new:
        user, password = login.split(":", 1)
        out.write(f"Created the Flower login: {user} / {password} (kept in {path}).\n")
    return login


def main(argv):
    # Through the environment, not the command line: any user of the machine can read a command line.
    env = dict(os.environ, FLOWER_BASIC_AUTH=credentials())
    os.execve(sys.executable, [sys.executable, "-m", "celery", "-A", "ourvidz", "flower", *argv], env)


if __name__ == "__main__":
    main(sys.argv[1:])
