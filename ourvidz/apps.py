from django.apps import AppConfig


class OurvidzConfig(AppConfig):
    name = "ourvidz"
    verbose_name = "OurVidz"
