"""S3 backups through aiobotocore: the one module that talks to the remote store. An archive goes up as a
multipart upload fed part by part while it is written (never whole in memory, never on local disk); a
restore or a download streams the object back. Errors become BackupStorageError."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp

from lightd.backups.archive import EXTENSIONS
from lightd.config_features import S3BackupConfig
from lightd.errors import BackupStorageError, ValidationFailed

READ_CHUNK = 1024 * 1024


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError  # loaded with the client (see `_s3`)

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise BackupStorageError(f"S3 {what}: {error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")) from None
    except (BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise BackupStorageError(f"S3 {what}: {type(exc).__name__}: {exc}") from None


class S3Backups:
    """The bucket of `backups.s3`; its client is made on first use and closed with the service."""

    def __init__(self, config: S3BackupConfig) -> None:
        self.config = config
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._opening = asyncio.Lock()

    def check_configured(self) -> None:
        if not self.config.bucket:
            raise ValidationFailed("adapter: S3 backups are not configured (backups.s3.bucket)", details={"field": "adapter"})

    def key(self, server: str, backup_id: str, compression: str) -> str:
        return f"{self.config.prefix}{server}/{backup_id}.{EXTENSIONS[compression]}"

    @property
    def part_size(self) -> int:
        return self.config.part_size_mib * 1024 * 1024

    async def _s3(self) -> Any:
        async with self._opening:
            if self._client is None:
                # Imported on first use: botocore costs ~15 MB of memory a node without S3 need not pay.
                from aiobotocore.config import AioConfig
                from aiobotocore.session import get_session

                config = self.config
                self._client = await self._stack.enter_async_context(get_session().create_client(
                    "s3", region_name=config.region, endpoint_url=config.endpoint or None,
                    aws_access_key_id=config.access_key or None, aws_secret_access_key=config.secret_key or None,
                    # Checksums only where S3 requires them: botocore computes them on the event loop, and a
                    # part's sha256 (signing) and the archive's sha256 (recorded) already cover the bytes.
                    config=AioConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                                     connect_timeout=10, read_timeout=60,
                                     request_checksum_calculation="when_required",
                                     response_checksum_validation="when_required")))
            return self._client

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    async def upload(self, key: str, parts: AsyncIterator[bytes], started: Callable[[str], Awaitable[None]]) -> None:
        """A multipart upload of every part to `key`; `started(upload_id)` is awaited before the first
        part (recorded, so a daemon that dies mid-upload can abort it at its next start)."""
        s3 = await self._s3()
        bucket = self.config.bucket
        with _translated("create upload"):
            upload_id = (await s3.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]
        try:
            await started(upload_id)
            done: list[dict[str, Any]] = []
            async for part in parts:
                number = len(done) + 1
                with _translated(f"upload part {number}"):
                    answer = await s3.upload_part(Bucket=bucket, Key=key, PartNumber=number, UploadId=upload_id, Body=part)
                done.append({"ETag": answer["ETag"], "PartNumber": number})
            with _translated("complete upload"):
                await s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                                   MultipartUpload={"Parts": done})
        except BaseException:
            await asyncio.shield(self.abort(key, upload_id))
            raise

    async def abort(self, key: str, upload_id: str) -> None:
        """Drop an unfinished upload's parts (best effort)."""
        try:
            with _translated("abort upload"):
                await (await self._s3()).abort_multipart_upload(Bucket=self.config.bucket, Key=key, UploadId=upload_id)
        except BackupStorageError:
            pass

    async def download(self, key: str) -> tuple[AsyncIterator[bytes], int]:
        """The object's bytes as they arrive, and its size."""
        with _translated("get object"):
            answer = await (await self._s3()).get_object(Bucket=self.config.bucket, Key=key)
        body = answer["Body"]

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    with _translated("read object"):
                        chunk = await body.read(READ_CHUNK)
                    if not chunk:
                        return
                    yield chunk
            finally:
                body.close()

        return chunks(), int(answer["ContentLength"])

    async def delete(self, key: str) -> None:
        with _translated("delete object"):
            await (await self._s3()).delete_object(Bucket=self.config.bucket, Key=key)
