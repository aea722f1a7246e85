"""Find AWS credentials and the region the usual ways, without botocore.

Credentials, first found wins:
  1. ``AWS_ACCESS_KEY_ID`` + ``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``) in the environment;
  2. the shared credentials file (``AWS_SHARED_CREDENTIALS_FILE``, default ``~/.aws/credentials``),
     section ``AWS_PROFILE`` (default ``default``);
  3. the config file (``AWS_CONFIG_FILE``, default ``~/.aws/config``), section ``profile NAME``
     (``default`` for the default profile), which may also hold static keys.

Region, first found wins: the explicit argument (``--region``), ``AWS_REGION``, ``AWS_DEFAULT_REGION``,
the profile's ``region`` in the config file, then in the credentials file.
"""

from __future__ import annotations

import configparser
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from dockyard.client.sigv4 import Credentials


class NoCredentials(Exception):
    """No credentials were found in any of the usual places."""


def _read(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    with contextlib.suppress(configparser.Error):
        parser.read(path)
    return parser


def _files(env: Mapping[str, str]) -> tuple[Path, Path, str]:
    creds = Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials").expanduser()
    config = Path(env.get("AWS_CONFIG_FILE") or "~/.aws/config").expanduser()
    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    return creds, config, profile


def _config_section(profile: str) -> str:
    return profile if profile == "default" else f"profile {profile}"


def find_credentials(env: Mapping[str, str] | None = None) -> Credentials:
    env = os.environ if env is None else env
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, env.get("AWS_SESSION_TOKEN") or None)
    creds_path, config_path, profile = _files(env)
    for parser, section in (
        (_read(creds_path), profile),
        (_read(config_path), _config_section(profile)),
    ):
        if parser.has_section(section):
            s = parser[section]
            key, secret = s.get("aws_access_key_id"), s.get("aws_secret_access_key")
            if key and secret:
                return Credentials(
                    key.strip(), secret.strip(), (s.get("aws_session_token") or "").strip() or None
                )
    raise NoCredentials(
        "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
        f"or profile {profile!r} in {creds_path}"
    )


def find_region(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
    if explicit:
        return explicit
    env = os.environ if env is None else env
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if env.get(name):
            return env[name]
    creds_path, config_path, profile = _files(env)
    for parser, section in (
        (_read(config_path), _config_section(profile)),
        (_read(creds_path), profile),
    ):
        if parser.has_section(section) and parser[section].get("region"):
            return parser[section]["region"].strip()
    return None
