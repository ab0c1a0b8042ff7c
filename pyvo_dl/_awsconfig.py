"""The AWS shared files' settings that reach an S3 request (SPEC §2.2).

``~/.aws/config`` (or ``$AWS_CONFIG_FILE``) and ``~/.aws/credentials``
(``$AWS_SHARED_CREDENTIALS_FILE``) name profiles; a profile may set the
``region``, an ``endpoint_url``, ``ignore_configured_endpoint_urls``, or a
``services`` section whose ``s3`` block sets an ``endpoint_url`` for S3
alone. Read as botocore 1.31+ reads them (``botocore.configloader``), so
that a profile means the same with or without botocore, anonymous reads
included: an INI file, ``[profile NAME]`` sections (``[default]`` without
the word), ``[services NAME]`` sections, indented ``key = value`` lines as
one level of nesting.

Pure: text in, values out. Reading the files is ``_s3``'s.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Mapping, Union

    Settings = Dict[str, Union[str, Dict[str, str]]]

#: botocore's ``profile`` setting: the first of these that is set, else ``default``.
PROFILE_VARIABLES = ("AWS_DEFAULT_PROFILE", "AWS_PROFILE")


class AwsConfig:
    """The profiles and services sections of the shared files.

    Parameters
    ----------
    profiles : dict
        Profile name to its settings (config file, then credentials file).
    services : dict
        ``[services NAME]`` section name to its settings.
    """

    def __init__(self, profiles: dict[str, Settings], services: dict[str, Settings]) -> None:
        self.profiles = profiles
        self.services = services

    def settings(self, profile: str) -> Settings:
        """A profile's settings (empty when it is not in the files)."""
        return self.profiles.get(profile, {})

    def s3_settings(self, profile: str) -> dict[str, str]:
        """The ``s3`` block of the services section the profile names, if any.

        Raises
        ------
        ValueError
            When the profile names a services section that is not there
            (botocore refuses that too).
        """
        name = self.settings(profile).get("services")
        if not isinstance(name, str):
            return {}
        section = self.services.get(name)
        if section is None:
            raise ValueError(
                f"AWS profile {profile!r} uses services = {name}, but the AWS config file "
                f"has no [services {name}] section"
            )
        block = section.get("s3")
        return dict(block) if isinstance(block, dict) else {}


def parse_config(config_text: str, credentials_text: str = "") -> AwsConfig:
    """Parse the config and credentials files' texts into an :class:`AwsConfig`.

    The credentials file's sections are profiles under their plain names;
    its values win over the config file's, as in botocore.

    Raises
    ------
    ValueError
        When a file is not valid INI (the message says which).

    Examples
    --------
    >>> config = parse_config('''
    ... [profile ceph]
    ... services = local
    ... [services local]
    ... s3 =
    ...   endpoint_url = http://127.0.0.1:9000
    ... ''')
    >>> config.s3_settings("ceph")
    {'endpoint_url': 'http://127.0.0.1:9000'}
    """
    profiles: dict[str, Settings] = {}
    services: dict[str, Settings] = {}
    for section, values in _sections(config_text, "the AWS config file").items():
        kind, _, name = section.partition(" ")
        name = name.strip()
        if section == "default":
            profiles["default"] = values
        elif kind == "profile" and name:
            profiles[name] = values
        elif kind == "services" and name:
            services[name] = values
    for name, values in _sections(credentials_text, "the AWS credentials file").items():
        profiles.setdefault(name, {}).update(values)
    return AwsConfig(profiles, services)


def _sections(text: str, what: str) -> dict[str, Settings]:
    if not text.strip():
        return {}
    import configparser  # noqa: PLC0415 - only when a file exists

    parser = configparser.RawConfigParser()
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise ValueError(f"cannot read {what}: {' '.join(str(exc).split())}") from None
    sections: dict[str, Settings] = {}
    for section in parser.sections():
        values: Settings = {}
        for option in parser.options(section):
            value = parser.get(section, option)
            values[option] = _nested(value) if value.startswith("\n") else value
        sections[section] = values
    return sections


def _nested(value: str) -> dict[str, str] | str:
    """An indented block of ``key = value`` lines as a mapping (botocore's one level)."""
    block: dict[str, str] = {}
    for raw in value.splitlines():
        line = raw.strip()
        if not line:
            continue
        key, equals, item = line.partition("=")
        if not equals:
            return value
        block[key.strip()] = item.strip()
    return block


def profile_name(env: Mapping[str, str]) -> str:
    """The profile in use when none is named: ``$AWS_DEFAULT_PROFILE``, ``$AWS_PROFILE``, ``default``.

    Examples
    --------
    >>> profile_name({"AWS_PROFILE": "team"})
    'team'
    >>> profile_name({})
    'default'
    """
    for name in PROFILE_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return value
    return "default"


def is_true(value: object) -> bool:
    """botocore's reading of a boolean setting: only ``true`` (any case) is true."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")
