"""Creates the buckets (one plain, one with Object Lock) and the container the archive tests use, on the moto and
Azurite servers that scripts/test.sh started on 127.0.0.1.

usage: test_servers.py s3 ENDPOINT BUCKET
       test_servers.py azure ENDPOINT ACCOUNT KEY CONTAINER
"""
import base64
import hashlib
import hmac
import sys
import urllib.request
from email.utils import formatdate


def s3(endpoint, bucket):
    import boto3

    c = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    c.create_bucket(Bucket=bucket)
    # A second bucket with Object Lock enabled (and no default rule): the
    # archive sets retention on each object it writes there.
    c.create_bucket(Bucket=f"{bucket}-lock", ObjectLockEnabledForBucket=True)


def azure(endpoint, account, key, container):
    # Shared Key authorization, path-style (emulator) resource.
    date = formatdate(usegmt=True)
    version = "2021-08-06"
    path = f"/{account}/{container}"
    string_to_sign = "\n".join(
        ["PUT"] + [""] * 11
        + [f"x-ms-date:{date}", f"x-ms-version:{version}", f"/{account}{path}\nrestype:container"]
    )
    sig = base64.b64encode(
        hmac.new(base64.b64decode(key), string_to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    req = urllib.request.Request(
        f"{endpoint}{path}?restype=container",
        method="PUT",
        headers={
            "x-ms-date": date,
            "x-ms-version": version,
            "Authorization": f"SharedKey {account}:{sig}",
            "Content-Length": "0",
        },
    )
    try:
        urllib.request.urlopen(req).read()
    except urllib.error.HTTPError as e:
        if e.code != 409:  # already exists
            raise SystemExit(f"azurite: create container: {e.code} {e.read()[:300]!r}")


if __name__ == "__main__":
    if sys.argv[1] == "s3":
        s3(*sys.argv[2:4])
    elif sys.argv[1] == "azure":
        azure(*sys.argv[2:6])
    else:
        raise SystemExit(__doc__)
