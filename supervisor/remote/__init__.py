"""The daemon's registry client: the OCI distribution HTTP API over aiohttp.

    hosts.py        where a registry domain is reached (hosts.toml: mirrors, plain HTTP, TLS)
    credentials.py  Docker's credential file (~/.docker/config.json `auths`, DOCKER_CONFIG)
    auth.py         WWW-Authenticate challenges, Bearer tokens (cached per scope), Basic
    client.py       one registry session: requests with auth, redirects by hand, timeouts, errors
    resolver.py     tag -> descriptor; manifests and indexes fetched and verified
    fetcher.py      blobs streamed into the content store, verified, resumable with Range
    pusher.py       blobs (HEAD skip, cross-repo mount, monolithic or chunked), then manifests
    pull.py         the pull: resolve, fetch (bounded concurrency), label, unpack, name
    push.py         the push: walk the image, push leaves first, tag last
"""
