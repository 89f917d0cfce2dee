"""AWS credentials through the standard chain, for every ``s3://`` access of the platform.

botocore resolves them as the AWS CLI does: environment variables, ``AWS_PROFILE`` in the shared
credentials/config files (``AWS_SHARED_CREDENTIALS_FILE``, ``AWS_CONFIG_FILE``), a profile's
``role_arn`` + ``source_profile`` (STS AssumeRole), SSO, web identity (``AWS_WEB_IDENTITY_TOKEN_FILE`` +
``AWS_ROLE_ARN``: IRSA on EKS), container and instance metadata (an EC2 instance profile). No static key
is required anywhere in the platform. ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_STS`` point the chain at
an S3-compatible server's STS (MinIO, Ceph, moto).

Temporary credentials refresh: each call returns the current ones (botocore renews them before they
expire), so a filesystem built from them is rebuilt when they rotate. Nothing here logs a secret; errors
name the profile and the variables to set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

CHAIN_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_EC2_METADATA_DISABLED",
)
"""What decides which credentials the chain finds (the cache is keyed by them, not by secrets)."""


class CredentialsError(RuntimeError):
    """No usable credentials; the message names where the chain looked and what to set."""


@dataclass(frozen=True)
class Credentials:
    """A snapshot of the current credentials (``token`` for temporary ones) and where they came from."""

    access_key: str
    secret_key: str
    token: str | None
    method: str
    """botocore's name of the provider: env, shared-credentials-file, assume-role, ..."""

    @property
    def temporary(self) -> bool:
        return self.token is not None

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(method={self.method!r}, temporary={self.temporary})"


def profile_name() -> str | None:
    return os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or None


def current_credentials() -> Credentials:
    """The chain's credentials now (refreshed by botocore when temporary ones near expiry)."""
    chain = _chain(tuple(os.environ.get(k) for k in CHAIN_VARIABLES))
    try:
        frozen = chain.get_frozen_credentials()
    except Exception as exc:  # noqa: BLE001 - refresh errors come as several botocore types
        raise CredentialsError(f"s3:// credentials ({chain.method}) could not be refreshed: {exc}") from None
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token, chain.method)


@lru_cache(maxsize=8)
def _chain(settings: tuple[str | None, ...]) -> Any:
    """One botocore credential object per chain setting: an assumed role is assumed once, then renewed."""
    import botocore.exceptions
    import botocore.session

    profile = profile_name()
    try:
        session = botocore.session.Session(profile=profile)
        credentials = session.get_credentials()
    except botocore.exceptions.ProfileNotFound:
        raise CredentialsError(
            f"AWS profile {profile!r} (AWS_PROFILE) is not in the shared credentials or config files "
            f"({os.environ.get('AWS_SHARED_CREDENTIALS_FILE', '~/.aws/credentials')}, "
            f"{os.environ.get('AWS_CONFIG_FILE', '~/.aws/config')}); fix the name or the files"
        ) from None
    except Exception as exc:  # noqa: BLE001 - BotoCoreError, or an STS ClientError (AssumeRole denied, bad token)
        where = f"profile {profile!r}" if profile else "the default credential chain"
        raise CredentialsError(f"s3:// credentials from {where} failed: {exc}") from None
    if credentials is None:
        raise CredentialsError(
            "s3:// URIs need AWS credentials and none were found (environment, AWS_PROFILE and the shared "
            "credentials/config files, SSO, web identity, container or instance metadata): set AWS_PROFILE, or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for an S3-compatible server)"
        )
    return credentials
