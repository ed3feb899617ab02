"""The job-type table and the request rules read from it: pure, no database, no models, no workers."""

import pytest

from generation import job_types, negative_prompts, submission
from generation.api.serializers import JobRequestSerializer


def validate(**data):
    request = JobRequestSerializer(data=data, context={"user": None})
    request.is_valid()
    return request


def test_every_pool_renders_every_aspect_ratio_the_api_accepts():
    for pool in job_types.POOLS.values():
        assert tuple(pool.aspect_ratios) == job_types.ASPECT_RATIOS


def test_dev_profile_scales_the_tables_rows(settings):
    video = job_types.get("video_high")
    settings.OURVIDZ_PROFILE = "production"
    assert job_types.render_params(video, "16:9") == {"width": 832, "height": 480, "steps": 50, "guidance": 7.5,
                                                       "frames": 81}
    settings.OURVIDZ_PROFILE = "dev"
    assert job_types.render_params(video, "16:9") == {"width": 48, "height": 32, "steps": 10, "guidance": 7.5,
                                                       "frames": 9}
    assert job_types.render_params(job_types.get("image_fast"))["frames"] == 1  # a WAN image is one frame


def test_only_sdxl_batches_and_expected_time_follows():
    sdxl, wan = job_types.get("sdxl_image_high"), job_types.get("image7b_high_enhanced")
    assert sdxl.batched and not wan.batched
    assert sdxl.expected_total(6) == 6 * sdxl.expected_seconds and wan.expected_total(6) == wan.expected_seconds


def test_the_serializer_takes_its_limits_from_the_table():
    fields = JobRequestSerializer().fields
    assert fields["seed"].max_value == job_types.MAX_SEED == 2**32 - 1
    assert fields["prompt"].max_length == job_types.PROMPT_MAX_LENGTH
    assert fields["negative_prompt"].max_length == job_types.NEGATIVE_PROMPT_MAX_LENGTH
    assert fields["reference_strength"].default == job_types.REFERENCE_STRENGTH_DEFAULT
    assert list(fields["aspect_ratio"].choices) == list(job_types.ASPECT_RATIOS)
    assert job_types.limits()["max_seed"] == job_types.MAX_SEED


@pytest.mark.parametrize(("data", "field", "code"), [
    ({"job_type": "sdxl_image_fast", "prompt": "a cat", "num_images": 2}, "num_images", "invalid_choice"),
    ({"job_type": "video_fast", "prompt": "a cat", "num_images": 3}, "num_images", "single_output"),
    ({"job_type": "sdxl_image_fast", "prompt": "x" * (job_types.PROMPT_MAX_LENGTH + 1)}, "prompt", "max_length"),
    ({"job_type": "sdxl_image_fast", "prompt": "a cat", "seed": job_types.MAX_SEED + 1}, "seed", "max_value"),
    ({"job_type": "sdxl_image_fast", "prompt": "a cat", "reference_type": "style"}, "reference_image", "required"),
    ({"job_type": "sdxl_image_fast", "prompt": "a cat", "aspect_ratio": "4:3"}, "aspect_ratio", "invalid_choice"),
])
def test_request_rules_name_the_field_and_the_code(data, field, code):
    request = validate(**data)
    assert request.errors[field][0].code == code


def test_a_valid_request_gets_the_defaults():
    request = validate(job_type="sdxl_image_fast", prompt="  a cat  ")
    assert request.errors == {}
    assert request.validated_data == {
        "job_type": "sdxl_image_fast", "prompt": "a cat", "negative_prompt": "", "num_images": 1, "seed": None,
        "aspect_ratio": "", "reference_image": None, "reference_type": "",
        "reference_strength": job_types.REFERENCE_STRENGTH_DEFAULT, "webhook": "",
        "webhook_events_filter": ["completed"]}


def test_seeds_span_the_whole_range():
    seeds = [submission.new_seed() for _ in range(2000)]
    assert all(0 <= seed <= job_types.MAX_SEED for seed in seeds)
    assert max(seeds) > 2**31  # not cut to a signed 32-bit range


def test_wan_jobs_run_with_the_users_negative_prompt_only():
    negative = negative_prompts.for_job(job_types.get("video_fast"), "two women on a beach", "blurry")
    assert (negative.text, negative.multi_party, negative.dropped) == ("blurry", [], [])
