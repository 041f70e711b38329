"""Object stores (S3 and S3-compatible servers, GCS) as pyarrow.fs reaches them: a URI's own
file-system options, and one worded line for what the store answers when it refuses.

A URI may carry pyarrow's file-system options as its query, e.g. a MinIO or Ceph endpoint:

    s3://bucket/photos?endpoint_override=minio.local:9000&scheme=http

The query belongs to the store, not to the path: `split_query` keeps it apart so that a `?`
there is never read as a glob character, and `with_query` puts it back on every location
derived from the URI (each source's stored location), so later reads reach the same store.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl

CREDENTIALS_HINT = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (GCS: "
                    "GOOGLE_APPLICATION_CREDENTIALS); README, Object storage")
ENDPOINT_HINT = "the endpoint is AWS_ENDPOINT_URL or the URI's ?endpoint_override=HOST:PORT&scheme=http"
_DENIED = {"ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "MISSING_AUTHENTICATION_TOKEN",
           "INVALID_CLIENT_TOKEN_ID", "EXPIRED_TOKEN", "UNRECOGNIZED_CLIENT", "NO_SUCH_UPLOAD"}


def split_query(location: str) -> tuple[str, str]:
    """(location without its query, the query with its '?', or '') of a URI; local paths as they are."""
    location = str(location)
    if "://" in location and "?" in location:
        base, query = location.split("?", 1)
        return base, "?" + query
    return location, ""


def with_query(location: str, query: str) -> str:
    return location + query if query else location


def endpoints(location: str) -> set[str]:
    """The endpoints a URI's query names for its requests (`endpoint_override`, as `host:port`;
    none: the store's own): every one, where the key is given more than once (pyarrow takes the
    first, a dict of the query the last: a crafted location passed one and reached the other,
    until session 63's review)."""
    pairs = parse_qsl(split_query(location)[1][1:])
    scheme = next((value for key, value in pairs if key == "scheme"), "https")
    return {_host(value, scheme) for key, value in pairs if key == "endpoint_override"}


def _host(address: str, scheme: str = "https") -> str:
    """An endpoint as `host:port`, however written (`http://Host:9000/`; a port left out is the
    scheme's: `https://host` is `host:443`, as pyarrow's client reaches it)."""
    if "://" in address:
        scheme, address = address.split("://", 1)
    host = address.split("/", 1)[0].lower()
    if host.rpartition(":")[2].isdigit() and not host.endswith("]"):
        return host
    return f"{host}:{80 if scheme.lower() == 'http' else 443}"


def named_endpoints(*locations: str) -> frozenset[str]:
    """The endpoints a user named: those of `locations` (the archive's) and AWS_ENDPOINT_URL's.
    A source location recorded in an archive is followed to another only with --sources: an
    archive from elsewhere named any host, which `verify` and `report --html` sent signed
    requests to (a helper's round, session 63)."""
    named = set().union(*(endpoints(str(location)) for location in locations))
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        if value := os.environ.get(variable):
            named.add(_host(value))
    return frozenset(named)


def not_found(fs, path: str, what: str) -> FileNotFoundError:
    """The error for a location that is not there; on an object store, says when its bucket is
    what is missing (S3 answers both alike)."""
    bucket = path.split("/", 1)[0]
    if fs.type_name != "local" and bucket != path:
        try:
            gone = fs.get_file_info(bucket).type.name == "NotFound"
        except OSError:
            gone = False
        if gone:
            return FileNotFoundError(f"{what}: no bucket '{bucket}' at this endpoint ({ENDPOINT_HINT})")
    return FileNotFoundError(what)


def worded(error: Exception) -> str:
    """One line for an error of pyarrow's S3 client: what is wrong and what to set, without the
    request ids; a system error as `FILE: reason` (not Python's `[Errno 30] ...: 'FILE'`); other
    errors as they are."""
    text = str(error)
    code = re.search(r"AWS Error (\w+)", text)
    if not code:
        if isinstance(error, OSError) and error.strerror and error.filename is not None:
            return f"{error.filename}: {error.strerror}"
        return text
    bucket = re.search(r"in bucket '([^']*)'", text)
    where = f"bucket '{bucket.group(1)}'" if bucket else "the object store"
    code = code.group(1)
    if code == "NO_SUCH_BUCKET":
        return f"no {where} at this endpoint ({ENDPOINT_HINT})"
    if code in _DENIED or "HTTP status 403" in text:
        return f"access to {where} denied, the credentials missing or not allowed: {CREDENTIALS_HINT}"
    if code in ("NETWORK_CONNECTION", "REQUEST_TIMEOUT") or "curlCode" in text:
        detail = re.search(r"Details: ([^\n]*)", text)
        detail = (detail.group(1) if detail else code).strip()
        stalled = re.search(r"Operation too slow.* the last (\d+) seconds", detail)  # storage.STORE_STALL_SECONDS
        if stalled:
            detail = f"it stopped answering (not a byte for {stalled.group(1)} s, on every try)"
        return f"cannot reach {where}: {detail}; {ENDPOINT_HINT}"
    status = re.search(r"HTTP status (\d+)", text)
    answer = f"HTTP {status.group(1)}" if status else code
    return (f"the object store refused a request on {where} ({answer}): are the credentials set? {CREDENTIALS_HINT}; "
            f"{ENDPOINT_HINT}")


__all__ = ["not_found", "split_query", "with_query", "worded"]
