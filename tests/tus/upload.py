#!/usr/bin/env python3
"""Uploads a file to Depot's tus endpoint with the real tus client (tuspy from PyPI).

Driven by the Rust tests (tests/resumable.rs and friends) with the venv python that
scripts/tus-venv.sh makes. Creates an upload (POST /uploads) or resumes one (--url: the
client asks the server's offset with HEAD first), then PATCHes the file in chunks of
--chunk-size bytes, up to --stop-at bytes or the whole file.

Prints one JSON object on stdout:
  {"ok": true, "url": ..., "start_offset": N, "offset": N, "patches": N}
  {"ok": false, "stage": "create"|"resume"|"patch", "status": HTTP status or null,
   "body": response body (text), "url": ..., "offset": N, "patches": N, "error": text}
Exit status 0 when the upload went as far as asked, 2 when the server refused
(the JSON says how), 1 on anything else (a traceback on stderr).
"""

import argparse
import base64
import hashlib
import json
import sys

from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed
from tusclient.uploader import Uploader


def wrong_sha256(data=b""):
    """A SHA-256 of other bytes than the chunk's: the server must refuse the chunk."""
    return hashlib.sha256(b"not the chunk" + bytes(data))


CHECKSUMS = {
    "sha1": ("sha1", hashlib.sha1),
    "sha256": ("sha256", hashlib.sha256),
    "sha256-wrong": ("sha256", wrong_sha256),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True, help="http://host:port/uploads")
    parser.add_argument("--token", required=True)
    parser.add_argument(
        "--auth", choices=["x-api-token", "bearer"], default="x-api-token"
    )
    parser.add_argument("--file", required=True)
    parser.add_argument("--chunk-size", type=int, required=True)
    parser.add_argument(
        "--meta", action="append", default=[], help="key=value, repeatable"
    )
    parser.add_argument("--url", help="resume this upload (absolute URL)")
    parser.add_argument("--stop-at", type=int, help="stop once this offset is reached")
    parser.add_argument("--checksum", choices=sorted(CHECKSUMS), help="Upload-Checksum")
    args = parser.parse_args()

    if args.auth == "bearer":
        headers = {"Authorization": "Bearer " + args.token}
    else:
        headers = {"X-Api-Token": args.token}
    metadata = {}
    for item in args.meta:
        key, _, value = item.partition("=")
        metadata[key] = value

    cls = Uploader
    if args.checksum:
        pair = CHECKSUMS[args.checksum]

        class ChecksumUploader(Uploader):
            CHECKSUM_ALGORITHM_PAIR = pair

        cls = ChecksumUploader

    client = tus_client.TusClient(args.endpoint, headers=headers)
    state = {"stage": "resume" if args.url else "create", "patches": 0}
    uploader = None
    try:
        uploader = cls(
            file_path=args.file,
            url=args.url,
            client=client,
            chunk_size=args.chunk_size,
            metadata=metadata,
            upload_checksum=bool(args.checksum),
        )
        start_offset = uploader.offset
        if not uploader.url:
            uploader.set_url(uploader.create_url())
            uploader.offset = 0
        state["stage"] = "patch"
        stop_at = args.stop_at if args.stop_at is not None else uploader.get_file_size()
        uploader.stop_at = stop_at
        while uploader.offset < stop_at:
            uploader.upload_chunk()
            state["patches"] += 1
        result = {
            "ok": True,
            "url": uploader.url,
            "start_offset": start_offset,
            "offset": uploader.offset,
            "patches": state["patches"],
        }
        print(json.dumps(result))
        return 0
    except (TusCommunicationError, TusUploadFailed) as error:
        body = error.response_content
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        result = {
            "ok": False,
            "stage": state["stage"],
            "status": error.status_code,
            "body": body,
            "url": uploader.url if uploader else None,
            "offset": uploader.offset if uploader else None,
            "patches": state["patches"],
            "error": str(error),
        }
        print(json.dumps(result))
        return 2


if __name__ == "__main__":
    sys.exit(main())
