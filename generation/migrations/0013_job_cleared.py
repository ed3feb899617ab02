from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('generation', '0012_job_phase'),
    ]

    operations = [
        migrations.AddField(
            model_name='job',
            name='cleared',
            field=models.BooleanField(default=False, help_text='Taken off the Workspace by its owner once finished; the Library and the API still list it.'),
        ),
    ]
