"""The AWS shared files as botocore reads them, and the endpoint they choose (pure)."""

from __future__ import annotations

import doctest

import pytest

from pyvo_dl import _awsconfig
from pyvo_dl._awsconfig import parse_config, profile_name
from pyvo_dl._s3url import choose_endpoint

CONFIG = """
[default]
region = eu-west-1

[profile ceph]
endpoint_url = http://127.0.0.1:9000
services = local

[profile plain]
endpoint_url = http://127.0.0.1:9100

[profile quiet]
endpoint_url = http://127.0.0.1:9200
ignore_configured_endpoint_urls = TRUE

[services local]
s3 =
  endpoint_url = http://127.0.0.1:9001
  addressing_style = path
sts =
  endpoint_url = http://127.0.0.1:9002

[sso-session corp]
sso_region = us-east-1

[preview]
cloudfront = true
"""

CREDENTIALS = """
[ceph]
aws_access_key_id = AKIA1
[only-here]
endpoint_url = http://127.0.0.1:9300
"""


def test_doctests() -> None:
    failed, attempted = doctest.testmod(_awsconfig)
    assert attempted
    assert failed == 0


def test_profiles_and_services_as_botocore_builds_them() -> None:
    config = parse_config(CONFIG, CREDENTIALS)
    assert sorted(config.profiles) == ["ceph", "default", "only-here", "plain", "quiet"]
    assert config.settings("ceph") == {
        "endpoint_url": "http://127.0.0.1:9000",
        "services": "local",
        "aws_access_key_id": "AKIA1",
    }
    assert config.s3_settings("ceph") == {
        "endpoint_url": "http://127.0.0.1:9001",
        "addressing_style": "path",
    }
    assert config.s3_settings("plain") == {}
    assert config.settings("nobody") == {}


def test_a_missing_services_section_is_refused() -> None:
    config = parse_config("[profile x]\nservices = gone\n")
    with pytest.raises(ValueError, match=r"'x'.*\[services gone\]"):
        config.s3_settings("x")


def test_a_broken_file_names_itself() -> None:
    with pytest.raises(ValueError, match="AWS config file"):
        parse_config("[default\nregion = x\n")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "default"),
        ({"AWS_PROFILE": "a"}, "a"),
        ({"AWS_DEFAULT_PROFILE": "b", "AWS_PROFILE": "a"}, "b"),
        ({"AWS_PROFILE": "  "}, "default"),
    ],
)
def test_profile_name(env: dict[str, str], expected: str) -> None:
    assert profile_name(env) == expected


E_ARG = "http://127.0.0.1:8000"
E_S3 = "http://127.0.0.1:8001"
E_ALL = "http://127.0.0.1:8002"


@pytest.mark.parametrize(
    ("endpoint_url", "env", "profile", "expected"),
    [
        # botocore 1.31+: argument, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL,
        # the services section's s3 block, the profile's endpoint_url.
        (E_ARG, {"AWS_ENDPOINT_URL_S3": E_S3}, "ceph", 8000),
        (None, {"AWS_ENDPOINT_URL_S3": E_S3, "AWS_ENDPOINT_URL": E_ALL}, "ceph", 8001),
        (None, {"AWS_ENDPOINT_URL": E_ALL}, "ceph", 8002),
        (None, {}, "ceph", 9001),
        (None, {}, "plain", 9100),
        (None, {}, "only-here", 9300),
        (None, {"AWS_PROFILE": "plain"}, None, 9100),
        # ignored: the variable when it is set (even to false), else the profile's
        (
            None,
            {"AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true", "AWS_ENDPOINT_URL": E_ALL},
            "ceph",
            None,
        ),
        (None, {"AWS_ENDPOINT_URL_S3": E_S3}, "quiet", None),
        (None, {}, "quiet", None),
        (None, {"AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "false"}, "quiet", 9200),
        (E_ARG, {"AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}, "quiet", 8000),
        (None, {}, "default", None),
    ],
)
def test_the_endpoint_a_profile_chooses(
    endpoint_url: str | None, env: dict[str, str], profile: str | None, expected: int | None
) -> None:
    config = parse_config(CONFIG, CREDENTIALS)
    endpoint = choose_endpoint(None, endpoint_url, env, config, profile)
    if expected is None:
        assert endpoint.host.endswith("amazonaws.com")
    else:
        assert (endpoint.host, endpoint.port, endpoint.path_style) == ("127.0.0.1", expected, True)


@pytest.mark.parametrize(
    ("region", "env", "expected"),
    [
        (None, {}, "eu-west-1"),
        (None, {"AWS_DEFAULT_REGION": "us-west-2"}, "us-west-2"),
        (None, {"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "us-west-2"}, "ap-south-1"),
        ("ca-central-1", {"AWS_REGION": "ap-south-1"}, "ca-central-1"),
    ],
)
def test_the_region_a_profile_gives(region: str | None, env: dict[str, str], expected: str) -> None:
    config = parse_config(CONFIG)
    assert choose_endpoint(region, None, env, config, "default").region == expected


def test_a_bad_configured_endpoint_names_its_profile() -> None:
    config = parse_config("[profile odd]\nendpoint_url = ftp://x\n")
    with pytest.raises(ValueError, match="AWS profile 'odd'"):
        choose_endpoint(None, None, {}, config, "odd")
