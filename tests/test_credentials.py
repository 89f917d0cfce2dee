"""s3:// through the standard AWS credential chain, against the moto server (S3 and STS on loopback):
credentials only in a profile file, a role assumed through STS, a wrong profile, no key in any pickle.
(Every other S3 test runs with profile-only credentials too: ingestion, pretraining and embedding on Ray,
see conftest's ``s3_endpoint``.)"""

from __future__ import annotations

import os
import pickle

import pyarrow.fs as pafs
import pytest

from brainjepa_platform.credentials import current_credentials
from brainjepa_platform.storage import StorageError, ensure_bucket, read_bytes, resolve, run_filesystem, write_bytes

PROFILE_KEY, PROFILE_SECRET = "AKIAPROFILEONLY00001", "profile-secret-never-logged"
KEY_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
)


@pytest.fixture
def profiles(s3_endpoint, tmp_path, monkeypatch) -> dict[str, str]:
    """Shared credentials/config files with a key profile and a role profile; no key variables at all."""
    credentials, config = tmp_path / "credentials", tmp_path / "config"
    credentials.write_text(f"[research]\naws_access_key_id = {PROFILE_KEY}\naws_secret_access_key = {PROFILE_SECRET}\n")
    config.write_text(
        "[profile research]\nregion = us-east-1\n\n"
        "[profile runs-role]\nrole_arn = arn:aws:iam::123456789012:role/brainjepa-runs\n"
        "source_profile = research\nregion = us-east-1\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(credentials), AWS_CONFIG_FILE=str(config), AWS_EC2_METADATA_DISABLED="true"
    )
    for key in KEY_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    for key in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_EC2_METADATA_DISABLED"):
        monkeypatch.setenv(key, env[key])
    return env


def test_credentials_only_in_a_profile_file(profiles, monkeypatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "research")
    creds = current_credentials()
    assert (creds.method, creds.access_key, creds.temporary) == ("shared-credentials-file", PROFILE_KEY, False)
    loc = resolve("s3://profile-bucket/a/b.bin")
    ensure_bucket(loc)
    write_bytes(loc, b"scan")
    assert read_bytes(loc) == b"scan"
    assert PROFILE_SECRET not in repr(creds)


def test_a_role_assumed_through_sts_and_a_run_filesystem_that_carries_no_secret(profiles, monkeypatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "runs-role")
    creds = current_credentials()
    assert creds.method == "assume-role" and creds.temporary and creds.access_key != PROFILE_KEY
    loc = resolve("s3://role-bucket/runs")
    ensure_bucket(loc)
    fs = run_filesystem(loc)  # temporary credentials: s3fs, which renews them itself
    assert isinstance(fs, pafs.PyFileSystem)
    with fs.open_output_stream("role-bucket/runs/checkpoint.bin") as out:
        out.write(b"weights")
    assert read_bytes(loc.child("checkpoint.bin")) == b"weights"  # pyarrow's own client sees it
    pickled = pickle.dumps(fs)  # what Ray sends to every training worker
    for secret in (PROFILE_SECRET, creds.secret_key, creds.token):
        assert secret.encode() not in pickled
    with pickle.loads(pickled).open_input_stream("role-bucket/runs/checkpoint.bin") as stream:
        assert stream.read() == b"weights"
    assert run_filesystem(resolve(profiles["AWS_CONFIG_FILE"])) is not None  # a local path: its own filesystem


def test_a_wrong_profile_fails_in_one_line_naming_it(profiles, monkeypatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(StorageError) as info:
        resolve("s3://bucket/x")
    message = str(info.value)
    assert "'no-such-profile'" in message and "\n" not in message and PROFILE_SECRET not in message
