"""Blobs and manifests to a registry repository (the OCI distribution push protocol).

    p = Pusher(endpoint, content, ns, on_progress, chunk_size=0)
    await p.blob(desc, mount_from=["team/base"])   # exists / mounted / done
    await p.manifest(desc, data, tag="1.0")        # PUT /v2/<repo>/manifests/<tag or digest>

A blob:
1. `HEAD /v2/<repo>/blobs/<digest>` -> 200: the registry has it; nothing is sent ("exists").
2. When the blob was pulled from (or pushed to) another repository of the same registry
   (its `containerd.io/distribution.source.<host>` label), a cross-repository mount
   `POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<other repo>`: 201 is done
   ("mounted"); 202 means the registry would not mount, and gave an upload to use instead.
3. `POST /v2/<repo>/blobs/uploads/` -> 202 + Location, then either one monolithic
   `PUT <location>&digest=<digest>` with the whole body streamed from the content store, or,
   when `chunk_size` is set and the blob is larger, `PATCH <location>` per chunk
   (`Content-Range: <start>-<end>`, each answer giving the next Location) and a final empty
   `PUT ...&digest=`. The registry verifies the digest; its `Docker-Content-Digest` must match.

A manifest or index is PUT with its media type as Content-Type, after everything it refers
to; the digest the registry answers with must be the one we sent.

An upload Location may name another origin (blob storage): the bytes go there without our
credentials, never from https down to plain http, and only to an absolute http(s) URL
(client.follow). A streamed body is made anew for each send, so an upload the registry
redirects (307/308) is sent whole again rather than as nothing under the old Content-Length.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from urllib.parse import quote

from dockyard_common.errors import FailedPrecondition, Unavailable
from dockyard_common.imagespec import Descriptor
from supervisor.metadata.content import NamespacedContentStore
from supervisor.remote.client import Endpoint, follow, status_error
from supervisor.remote.fetcher import PROGRESS_SECONDS, BlobProgress, ProgressFn, ref_key
from supervisor.remote.untrusted import shown

READ_CHUNK = 1 << 20


class Pusher:
    def __init__(self, ep: Endpoint, content: NamespacedContentStore, ns: str,
                 on_progress: ProgressFn = lambda p: None, chunk_size: int = 0) -> None:
        self.ep = ep
        self.content = content
        self.ns = ns
        self.on_progress = on_progress
        self.chunk_size = chunk_size

    def _report(self, desc: Descriptor, state: str, offset: int) -> None:
        self.on_progress(BlobProgress(ref_key(desc), desc, state, offset, desc.size))

    @property
    def _blobs(self) -> str:
        return f"/{self.ep.repository}/blobs"

    async def exists(self, desc: Descriptor) -> bool:
        what = f"check {desc.digest} on the registry"
        async with self.ep.session.request("HEAD", self.ep.host, f"{self._blobs}/{desc.digest}", what=what,
                                           scopes=self.ep.scopes) as resp:
            if resp.status == 200:
                return True
            if resp.status == 404:
                return False
            raise await status_error(resp, what, self.ep.host)

    async def blob(self, desc: Descriptor, mount_from: list[str] | None = None) -> str:
        """Make the registry have the blob; returns "exists", "mounted" or "done"."""
        if await self.exists(desc):
            self._report(desc, "exists", desc.size)
            return "exists"
        location = ""
        for source in mount_from or []:
            if source == self.ep.repository:
                continue
            mounted, location = await self._mount(desc, source)
            if mounted:
                self._report(desc, "mounted", desc.size)
                return "mounted"
            if location:
                break
        if not location:
            location = await self._start_upload(desc)
        if self.chunk_size and desc.size > self.chunk_size:
            await self._chunked(desc, location)
        else:
            await self._monolithic(desc, location)
        self._report(desc, "done", desc.size)
        return "done"

    async def _mount(self, desc: Descriptor, source: str) -> tuple[bool, str]:
        what = f"mount {desc.digest} from {source}"
        suffix = f"{self._blobs}/uploads/?mount={quote(desc.digest)}&from={quote(source, safe='/')}"
        async with self.ep.session.request("POST", self.ep.host, suffix, what=what,
                                           scopes=[*self.ep.scopes, f"repository:{source}:pull"],
                                           headers={"Content-Length": "0"}) as resp:
            if resp.status == 201:
                return True, ""
            if resp.status == 202:
                return False, self._location(resp.headers.get("Location", ""), what)
            if resp.status in (401, 403, 404):
                return False, ""  # not allowed to read the source: upload instead
            raise await status_error(resp, what, self.ep.host)

    def _location(self, value: str, what: str) -> str:
        if not value:
            raise Unavailable(f"{what}: registry {self.ep.host.host} gave no upload Location")
        return follow(self.ep.reached.url(f"{self._blobs}/uploads/"), value, what, self.ep.host.host)

    async def _start_upload(self, desc: Descriptor) -> str:
        what = f"start upload of {desc.digest}"
        async with self.ep.session.request("POST", self.ep.host, f"{self._blobs}/uploads/", what=what,
                                           scopes=self.ep.scopes, headers={"Content-Length": "0"}) as resp:
            if resp.status != 202:
                raise await status_error(resp, what, self.ep.host)
            return self._location(resp.headers.get("Location", ""), what)

    async def _chunks(self, desc: Descriptor, start: int, end: int) -> AsyncIterator[bytes]:
        """The blob's bytes [start, end) from the content store, reported as they go."""
        reader = await self.content.reader(self.ns, desc.digest)
        last = time.monotonic()
        async with reader:
            pos = start
            while pos < end:
                data = await reader.read_at(pos, min(READ_CHUNK, end - pos))
                if not data:
                    raise FailedPrecondition(f"content {desc.digest}: ended at {pos} of {desc.size} bytes")
                pos += len(data)
                self.ep.session.transferred.sent += len(data)
                yield data
                if time.monotonic() - last >= PROGRESS_SECONDS:
                    last = time.monotonic()
                    self._report(desc, "uploading", pos)

    def _check_digest(self, resp_digest: str, desc: Descriptor, what: str) -> None:
        if resp_digest and resp_digest != desc.digest:
            raise FailedPrecondition(f"{what}: the registry stored {shown(resp_digest, 140)}, not {desc.digest}")

    @staticmethod
    def _with_digest(location: str, digest: str) -> str:
        return location + ("&" if "?" in location else "?") + "digest=" + quote(digest)

    async def _monolithic(self, desc: Descriptor, location: str) -> None:
        what = f"upload {desc.digest}"
        self._report(desc, "uploading", 0)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)}
        async with self.ep.session.request("PUT", self.ep.host, "", url=self._with_digest(location, desc.digest),
                                           what=what, scopes=self.ep.scopes, headers=headers,
                                           data=lambda: self._chunks(desc, 0, desc.size)) as resp:
            if resp.status != 201:
                raise await status_error(resp, what, self.ep.host)
            self._check_digest(resp.headers.get("Docker-Content-Digest", ""), desc, what)

    async def _chunked(self, desc: Descriptor, location: str) -> None:
        what = f"upload {desc.digest} in chunks"
        self._report(desc, "uploading", 0)
        pos = 0
        while pos < desc.size:
            end = min(pos + self.chunk_size, desc.size)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(end - pos),
                       "Content-Range": f"{pos}-{end - 1}"}
            async with self.ep.session.request("PATCH", self.ep.host, "", url=location, what=what,
                                               scopes=self.ep.scopes, headers=headers,
                                               data=lambda p=pos, e=end: self._chunks(desc, p, e)) as resp:
                if resp.status != 202:
                    raise await status_error(resp, what, self.ep.host)
                location = self._location(resp.headers.get("Location", ""), what)
            pos = end
            self._report(desc, "uploading", pos)
        async with self.ep.session.request("PUT", self.ep.host, "", url=self._with_digest(location, desc.digest),
                                           what=what, scopes=self.ep.scopes,
                                           headers={"Content-Length": "0"}) as resp:
            if resp.status != 201:
                raise await status_error(resp, what, self.ep.host)
            self._check_digest(resp.headers.get("Docker-Content-Digest", ""), desc, what)

    async def manifest_exists(self, desc: Descriptor) -> bool:
        what = f"check manifest {desc.digest} on the registry"
        async with self.ep.session.request("HEAD", self.ep.host, f"/{self.ep.repository}/manifests/{desc.digest}",
                                           what=what, scopes=self.ep.scopes,
                                           headers={"Accept": desc.media_type}) as resp:
            return resp.status == 200

    async def manifest(self, desc: Descriptor, data: bytes, tag: str = "") -> None:
        """PUT a manifest or index under `tag` (or its digest)."""
        what = f"push {desc.media_type} {desc.digest}" + (f" as {tag}" if tag else "")
        self._report(desc, "uploading", 0)
        async with self.ep.session.request("PUT", self.ep.host, f"/{self.ep.repository}/manifests/{tag or desc.digest}",
                                           what=what, scopes=self.ep.scopes,
                                           headers={"Content-Type": desc.media_type}, data=data) as resp:
            if resp.status not in (200, 201):
                raise await status_error(resp, what, self.ep.host)
            self._check_digest(resp.headers.get("Docker-Content-Digest", ""), desc, what)
        self.ep.session.transferred.sent += len(data)
        self._report(desc, "done", desc.size)
