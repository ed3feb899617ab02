"""Generated secrets: the admin's and Flower's passwords, the embedded Redis's, the secret key.

Each is made once and kept in a file that only its owner may read (mode 0600), so that other users of the
machine can neither log in with it nor sign with it.
"""

import os
import secrets
from pathlib import Path


def new_password():
    """A random password, as `manage.py setup` gives the admin."""
    return secrets.token_urlsafe(12)


def keep_secret(path, make):
    """The secret kept in the file `path`, written there with `make()` when the file is missing.

    The file is created with mode 0600, never readable by others in between; one found looser is tightened.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"{path.name}.{os.getpid()}")
        draft.unlink(missing_ok=True)
        with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(make())
        try:
            # A link never replaces: when processes race, the first one's secret is the one all of them read.
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path.read_text().strip()
