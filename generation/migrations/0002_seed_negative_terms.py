from django.db import migrations

ALWAYS = {
    "quality": ["bad anatomy", "extra limbs", "deformed", "missing limbs", "worst quality", "low quality",
                "normal quality", "lowres"],
    "anatomy": ["deformed hands", "extra fingers", "deformed face", "malformed", "bad hands", "bad fingers",
                "missing fingers", "distorted features"],
    "artifacts": ["text", "watermark", "logo", "signature"],
    "safety": ["child", "minor"],
}
MULTI_PARTY = ["wrong number of people", "merged bodies", "extra person", "fused bodies", "duplicate person"]


def seed(apps, schema_editor):
    NegativeTerm = apps.get_model("generation", "NegativeTerm")
    position = 0
    for category, terms in ALWAYS.items():
        for term in terms:
            position += 10
            NegativeTerm.objects.get_or_create(term=term, trigger="always",
                                               defaults={"category": category, "position": position})
    for term in MULTI_PARTY:
        position += 10
        NegativeTerm.objects.get_or_create(term=term, trigger="multi_party",
                                           defaults={"category": "group composition", "position": position})


def unseed(apps, schema_editor):
    apps.get_model("generation", "NegativeTerm").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("generation", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
