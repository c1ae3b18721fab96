"""The S3-compatible server of the backup tests (moto, started by scripts/setup-s3.sh) and a fresh bucket."""

from __future__ import annotations

import os
import secrets
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session

S3_PORT = int(os.environ.get("LIGHTD_TEST_S3_PORT", "5056"))
S3_ENDPOINT = f"http://127.0.0.1:{S3_PORT}"


def _s3_up() -> bool:
    try:
        with urllib.request.urlopen(S3_ENDPOINT + "/moto-api/", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    if not _s3_up():
        script = Path(__file__).resolve().parents[2] / "scripts" / "setup-s3.sh"
        result = subprocess.run(["bash", str(script)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"S3 server not available: {result.stderr[-2000:]}")
    return S3_ENDPOINT


@pytest.fixture
async def s3_bucket(s3_endpoint: str) -> Any:
    """A new bucket; its config section for `backups.s3`, and a client to look inside."""
    bucket = f"lightd-test-{secrets.token_hex(4)}"
    section = {"endpoint": s3_endpoint, "region": "us-east-1", "bucket": bucket, "access_key": "test",
               "secret_key": "test", "prefix": "node1/", "part_size_mib": 5}
    async with get_session().create_client("s3", region_name="us-east-1", endpoint_url=s3_endpoint,
                                           aws_access_key_id="test", aws_secret_access_key="test") as client:
        await client.create_bucket(Bucket=bucket)
        yield section, client
