"""S3 backups against a real S3-compatible server (moto): a multipart upload with small parts, restored back,
deleted; a backup to a missing bucket fails and leaves no upload behind."""

from __future__ import annotations

import hashlib
import os

import pytest

from lightd.app import create_app
from tests.backups.helpers import backup, read_tree, restore, server_with_files, write_tree
from tests.conftest import Api

pytestmark = pytest.mark.docker


@pytest.fixture
async def s3api(s3_bucket, make_config, container_prefix, aiohttp_client, auth_headers, no_blocking_calls):
    section, client = s3_bucket
    config = make_config(docker={"container_prefix": container_prefix}, backups={"s3": section})
    return Api(await aiohttp_client(create_app(config)), auth_headers), section, client, config


async def test_s3_round_trip_multipart(s3api):
    api, section, client, config = s3api
    # incompressible: the archive is ~12 MiB, so three 5 MiB parts
    files = {"world/a.bin": os.urandom(7 * 1024 * 1024), "world/b.bin": os.urandom(5 * 1024 * 1024), "cfg.txt": "x=1"}
    root = await server_with_files(api, "bk-s3", files)
    view = await backup(api, "bk-s3", adapter="s3", ignore=["*.tmp"])
    assert view["adapter"] == "s3" and view["size"] > 12 * 1024 * 1024
    key = f"{section['prefix']}bk-s3/{view['backup_id']}.tar.zst"
    head = await client.head_object(Bucket=section["bucket"], Key=key)
    assert head["ContentLength"] == view["size"]
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # a multipart object of three parts
    body = await (await client.get_object(Bucket=section["bucket"], Key=key))["Body"].read()
    assert hashlib.sha256(body).hexdigest() == view["sha256"]
    assert not (config.backups_dir / "bk-s3").exists()  # never written to local disk

    write_tree(root, {"cfg.txt": "x=2", "extra.txt": "new"})
    await restore(api, "bk-s3", view["backup_id"], truncate=True)
    assert read_tree(root) == {k: (v.encode() if isinstance(v, str) else v) for k, v in files.items()}

    code, _ = await api.delete(f"/containers/bk-s3/backups/{view['backup_id']}")
    assert code == 200
    listed = await client.list_objects_v2(Bucket=section["bucket"])
    assert listed.get("KeyCount", 0) == 0


async def test_s3_failure_leaves_no_upload(s3api):
    api, section, client, _config = s3api
    await server_with_files(api, "bk-s3f", {"a.bin": os.urandom(1024)})
    await client.delete_bucket(Bucket=section["bucket"])
    failed = await backup(api, "bk-s3f", status="failed", adapter="s3")
    assert "NoSuchBucket" in failed["error"], failed
    await client.create_bucket(Bucket=section["bucket"])
    uploads = await client.list_multipart_uploads(Bucket=section["bucket"])
    assert not uploads.get("Uploads")
