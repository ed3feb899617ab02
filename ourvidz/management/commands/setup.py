"""Prepare a machine to run the stack: migrate, build the development models, create an admin and Flower's login."""

import os
import socket
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from ourvidz import flower
from ourvidz.credentials import new_password


class Command(BaseCommand):
    help = ("Migrate, build the tiny development models where no real model paths are set, create an admin and "
            "Flower's login.")

    def handle(self, *args, **options):
        call_command("migrate", interactive=False, verbosity=0)
        self.record_installation()
        self.build_dev_models()
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

    def build_dev_models(self):
        # Imported here: only this command and the workers need torch, never the web process.
        from sdxl_tasks import devmodel
        from wan_tasks import devmodels

        builders = [
            ("SDXL_MODEL_PATH", settings.SDXL_MODEL_PATH, devmodel.build),
            ("SDXL_IP_ADAPTER_PATH", settings.SDXL_IP_ADAPTER_PATH,
             lambda path: devmodel.build_ip_adapter(settings.SDXL_MODEL_PATH, path)),
            ("WAN_MODEL_PATH", settings.WAN_MODEL_PATH, devmodels.build_wan),
            ("WAN_I2V_MODEL_PATH", settings.WAN_I2V_MODEL_PATH,
             lambda path: devmodels.build_wan_i2v(settings.WAN_MODEL_PATH, path)),
            ("ENHANCER_MODEL_PATH", settings.ENHANCER_MODEL_PATH, devmodels.build_enhancer),
        ]
        for name, path, build in builders:
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
            f"Created the admin user. Log in at http://127.0.0.1:8000/admin/ as {username} / {password}\n"
            f"(change it with `make manage ARGS='changepassword {username}'`)."
        ))
