"""The daemon's registry client: the OCI distribution HTTP API over aiohttp.
(Docker's credentials file, which `dock login` writes too, is `dockyard_common.credentials`.)

    hosts.py        where a registry domain is reached (hosts.toml: mirrors, plain HTTP, TLS)
    tls.py          per-host TLS: CA files, skip_verify, client certificates; TLS errors in words
    retry.py        transient failures (429, 502-504, resets): bounded retries, backoff, jitter
    auth.py         WWW-Authenticate challenges, Bearer tokens (cached per scope), Basic
    client.py       one registry session: requests with auth, redirects by hand, timeouts, retries
    resolver.py     tag -> descriptor; manifests and indexes fetched and verified
    fetcher.py      blobs streamed into the content store, verified, resumable with Range
    pusher.py       blobs (HEAD skip, cross-repo mount, monolithic or chunked), then manifests
    pull.py         the pull: resolve, fetch (bounded concurrency), label, unpack, name
    push.py         the push: walk the image, push leaves first, tag last
"""
