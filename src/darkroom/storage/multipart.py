"""Multipart uploads that a process killed mid-put left in an S3 bucket: unseen, yet stored
and billed until aborted. obstore lists none, so this goes through boto3, set up to reach
what obstore reaches: the same endpoint (`s3.endpoint`, else `AWS_ENDPOINT` or
`AWS_ENDPOINT_URL`), keys given or from the environment, never the profiles of `~/.aws`,
and plain HTTP only with `s3.allow_http`. Each request gets one try with short timeouts:
a bucket that does not answer fails this turn (the next tries again) and holds up no
shutdown for long.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime

from darkroom.config import S3
from darkroom.errors import StorageError

CONNECT_S, READ_S = 5, 10


def abort_stale(s3: S3, before: datetime, going_on: Callable[[], bool]) -> int:
    """Abort the uploads under `s3.prefix` begun before `before`, while `going_on()`; how
    many. One another process aborted or completed meanwhile is passed over. Raises
    StorageError."""
    try:
        client = _client(s3)
    except Exception as error:  # noqa: BLE001  (botocore's settings errors have no base)
        raise StorageError(f"cannot reach bucket {s3.bucket!r} for its multipart uploads: "
                           f"{error}") from error
    from botocore.exceptions import BotoCoreError, ClientError

    prefix, aborted = f"{s3.prefix.strip('/')}/" if s3.prefix.strip("/") else "", 0
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(
                Bucket=s3.bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                if not going_on():
                    return aborted
                if upload["Initiated"] >= before:
                    continue
                try:
                    client.abort_multipart_upload(Bucket=s3.bucket, Key=upload["Key"],
                                                  UploadId=upload["UploadId"])
                    aborted += 1
                except ClientError as error:
                    if error.response.get("Error", {}).get("Code") != "NoSuchUpload":
                        raise
    except (BotoCoreError, ClientError) as error:
        raise StorageError(f"cannot abort stale multipart uploads in {s3.bucket!r}: "
                           f"{str(error).splitlines()[0]}") from error
    finally:
        client.close()
    return aborted


def _client(s3: S3):
    import botocore.session
    from botocore.config import Config

    endpoint = (s3.endpoint or os.environ.get("AWS_ENDPOINT")
                or os.environ.get("AWS_ENDPOINT_URL") or None)
    if endpoint and endpoint.lower().startswith("http://") and not s3.allow_http:
        raise ValueError(f"endpoint {endpoint!r} is plain HTTP: set s3.allow_http")
    session = botocore.session.Session()
    for name in ("config_file", "credentials_file"):  # as obstore: no ~/.aws files
        session.set_config_variable(name, os.devnull)
    session.set_config_variable("profile", None)
    secret = s3.secret_access_key.get_secret_value() if s3.secret_access_key else None
    return session.create_client(
        "s3", region_name=s3.region, endpoint_url=endpoint,
        aws_access_key_id=s3.access_key_id or None, aws_secret_access_key=secret,
        config=Config(connect_timeout=CONNECT_S, read_timeout=READ_S,
                      retries={"max_attempts": 1}))
