"""Prepare a machine to run the stack: migrate, build the development models, create an admin and Flower's login.

`setup --pool sdxl` prepares a worker host instead: only that pool's models, and no migrations (a worker host
shares the web tier's database, which the web host migrates).
"""

import os
import socket
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from ourvidz import flower
from ourvidz.credentials import new_password


def _sdxl(path):
    from sdxl_tasks import devmodel  # torch: only this command and the workers import it, never the web process

    devmodel.build(path)


def _ip_adapter(path):
    from sdxl_tasks import devmodel

    devmodel.build_ip_adapter(settings.SDXL_MODEL_PATH, path)


def _wan(path):
    from wan_tasks import devmodels

    devmodels.build_wan(path)


def _wan_i2v(path):
    from wan_tasks import devmodels

    devmodels.build_wan_i2v(settings.WAN_MODEL_PATH, path)


def _enhancer(path):
    from wan_tasks import devmodels

    devmodels.build_enhancer(path)


# Each pool's models: (setting, builder of the tiny development model), in the order they must be built.
POOL_MODELS = {
    "sdxl": [("SDXL_MODEL_PATH", _sdxl), ("SDXL_IP_ADAPTER_PATH", _ip_adapter)],
    "wan": [("WAN_MODEL_PATH", _wan), ("WAN_I2V_MODEL_PATH", _wan_i2v), ("ENHANCER_MODEL_PATH", _enhancer)],
}


def web_address():
    """Where the site answers: the first DJANGO_CSRF_TRUSTED_ORIGINS (the public address behind a proxy), else
    http:// and the Procfile's WEB_BIND (a wildcard address, or a unix socket, as this host's name)."""
    if settings.CSRF_TRUSTED_ORIGINS:
        return settings.CSRF_TRUSTED_ORIGINS[0].rstrip("/")
    bind = os.environ.get("WEB_BIND") or "127.0.0.1:8000"
    if bind.startswith("unix:"):  # a proxy in front has the address
        return f"http://{socket.getfqdn()}"
    host, _, port = bind.rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        host = socket.getfqdn()
    return f"http://{host}:{port}"


class Command(BaseCommand):
    help = ("Migrate, build the tiny development models where no real model paths are set, create an admin and "
            "Flower's login; with --pool, only check or build that pool's models (a worker host: no migrations).")

    def add_arguments(self, parser):
        parser.add_argument("--pool", action="append", choices=sorted(POOL_MODELS),
                            help="prepare a worker host for this pool only (repeat for several); never migrates")

    def handle(self, *args, pool=None, **options):
        if pool:
            self.check_migrated()
            self.build_dev_models(pool)
            return
        call_command("migrate", interactive=False, verbosity=0)
        self.record_installation()
        self.build_dev_models(sorted(POOL_MODELS))
        self.ensure_admin()
        flower.credentials(self.stdout)  # printed once, when made

    def record_installation(self):
        """This (web) host's settings become the installation's, which every worker compares its own with."""
        from generation import installation

        try:
            installation.record(f"setup@{socket.gethostname()}")
        except Exception as exc:
            raise CommandError(f"Could not record this installation's settings ({installation.where()}): "
                               f"{exc}") from exc

    def check_migrated(self):
        """A worker host refuses a database its web host has not migrated to this code's migrations."""
        executor = MigrationExecutor(connection)
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            raise CommandError("The database has unapplied migrations: run `manage.py setup` on the web host first "
                               "(a worker host never migrates the shared database), and run the same version of "
                               "the code on every host.")

    def build_dev_models(self, pools):
        for pool in pools:
            for name, build in POOL_MODELS[pool]:
                path = getattr(settings, name)
                if not path:
                    continue  # an optional model that is not configured
                path = Path(path)
                if path.exists():
                    continue
                if os.environ.get(name):
                    raise CommandError(f"{name} is set to {path}, which does not exist.")
                self.stdout.write(f"Building the tiny development model for {name} in {path} ...")
                build(path)

    def ensure_admin(self):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        username = os.environ.get("OURVIDZ_ADMIN_USER", "admin")
        password = os.environ.get("OURVIDZ_ADMIN_PASSWORD") or new_password()
        User.objects.create_superuser(username, email="", password=password)
        self.stdout.write(self.style.SUCCESS(
            f"Created the admin user. Log in at {web_address()}/admin/ as {username} / {password}\n"
            f"(change it with `make manage ARGS='changepassword {username}'`)."
        ))
