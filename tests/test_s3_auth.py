"""Credentials and permissions by URL: an S3 server that checks them, on 127.0.0.1.

moto's server runs as a process the module starts and stops, with authentication on after
the set-up calls (``INITIAL_NO_AUTH_ACTION_COUNT``): a writer may do everything, a reader
only get and list. Wrong keys, a wrong secret and a denied write end in one line and exit 2
from the CLI, and in :class:`~crystalgrid.errors.RemoteStorageError` from ``open_dataset``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from crystalgrid import open_dataset
from crystalgrid.cli import main
from crystalgrid.errors import RemoteStorageError

boto3 = pytest.importorskip("boto3")
s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

BUCKET = "crystalgrid-auth"
SETUP_CALLS = 7  # the unauthenticated calls of the set-up below, in order
ALL = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}
READ = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}
    ],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """The endpoint URL and the writer's and reader's (key id, secret)."""
    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS)}
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("moto's server did not start")
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        kw = {"endpoint_url": url, "region_name": "us-east-1"}
        kw |= {"aws_access_key_id": "set-up", "aws_secret_access_key": "set-up"}
        iam, s3 = boto3.client("iam", **kw), boto3.client("s3", **kw)
        keys = {}
        for user, policy in (("writer", ALL), ("reader", READ)):
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        s3.create_bucket(Bucket=BUCKET)
        yield url, keys
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def as_user(server, monkeypatch, forget_s3_filesystems):
    """``as_user(key_id, secret)`` points the environment at the server with those keys."""
    url, _ = server

    def use(key_id: str, secret: str) -> None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "FSSPEC_S3_ENDPOINT_URL"):
            monkeypatch.delenv(name, raising=False)
        forget_s3_filesystems()

    yield use
    forget_s3_filesystems()


@pytest.fixture(scope="module")
def json_source_module(tmp_path_factory, demo_records):
    import gzip

    path = tmp_path_factory.mktemp("auth") / "structures.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump([{"material_id": m, "structure": s.as_dict()} for m, s in demo_records], fh)
    return path


def _one_line(result, expected: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.output


def test_unknown_keys_a_wrong_secret_and_a_denied_write_are_one_line(
    server, as_user, json_source_module
):
    _, keys = server
    runner = CliRunner()
    store = f"s3://{BUCKET}/stores/r.zarr"
    as_user("AKIAUNKNOWN000000000", "whatever")
    denied = "access denied (HTTP 403"  # a HEAD answer: no error code, only the status
    _one_line(runner.invoke(main, ["info", store]), denied)
    _one_line(runner.invoke(main, ["verify", store]), denied)
    with pytest.raises(RemoteStorageError, match=r"access denied \(HTTP 403"):
        open_dataset(store)
    build_args = ["build", "--source", str(json_source_module), "--samples", "1", "-q"]
    _one_line(runner.invoke(main, [*build_args, "--out", store]), denied)
    source = f"s3://{BUCKET}/sources/x.json"
    result = runner.invoke(main, ["build", "--source", source, "--out", "local.zarr"])
    _one_line(result, f"{source}: access denied")
    as_user(keys["writer"][0], "not-the-secret")
    _one_line(runner.invoke(main, ["info", store]), denied)
    # The reader may get and list, not put. (moto refuses some of s3fs's listing requests
    # with SignatureDoesNotMatch even for good keys: whichever refusal comes first is one line.)
    as_user(*keys["reader"])
    _one_line(runner.invoke(main, [*build_args, "--out", store]), f"{store}: ")
