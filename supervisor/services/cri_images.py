"""runtime.v1.ImageService (Kubernetes CRI): proto ⇄ supervisor.cri.images.

The CRI carries no namespace: every call acts in the CRI namespace the daemon configured.
"""

from __future__ import annotations

import grpc

from dockyard_api.cri.runtime.v1 import api_pb2 as pb
from dockyard_api.cri.runtime.v1 import api_pb2_grpc as pb_grpc
from dockyard_common.errors import InvalidArgument
from supervisor.cri.images import CriImage, CriImages, FsUsage, PullAuth
from supervisor.services.cri_runtime import fill_unimplemented
from supervisor.services.status import rpc


def image_pb(image: CriImage) -> pb.Image:
    out = pb.Image(id=image.id, repo_tags=image.repo_tags, repo_digests=image.repo_digests, size=image.size,
                   spec=pb.ImageSpec(image=image.id))
    # The CRI's rule: a numeric user (before any ":group") is uid, anything else username.
    user = image.user.split(":", 1)[0]
    if user.isdigit():
        out.uid.value = int(user)
    elif user:
        out.username = user
    return out


def fs_usage_pb(usage: FsUsage) -> pb.FilesystemUsage:
    return pb.FilesystemUsage(timestamp=usage.timestamp_ns, fs_id=pb.FilesystemIdentifier(mountpoint=usage.mountpoint),
                              used_bytes=pb.UInt64Value(value=usage.used_bytes),
                              inodes_used=pb.UInt64Value(value=usage.inodes_used))


def _image_text(spec: pb.ImageSpec, call: str) -> str:
    if not spec.image:
        raise InvalidArgument(f"{call}: image must not be empty")
    return spec.image


class ImageService(pb_grpc.ImageServiceServicer):
    def __init__(self, images: CriImages) -> None:
        self.images = images

    @rpc
    async def ListImages(self, request: pb.ListImagesRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListImagesResponse:
        if request.HasField("filter") and request.filter.image.image:
            found = await self.images.find(request.filter.image.image)
            return pb.ListImagesResponse(images=[image_pb(found)] if found else [])
        return pb.ListImagesResponse(images=[image_pb(i) for i in await self.images.list()])

    @rpc
    async def ImageStatus(self, request: pb.ImageStatusRequest,
                          context: grpc.aio.ServicerContext) -> pb.ImageStatusResponse:
        # The CRI's contract: an image that is not there is an empty response, not an error.
        found = await self.images.find(_image_text(request.image, "image status"))
        if found is None:
            return pb.ImageStatusResponse()
        info = {"info": found.config_json.decode("utf-8", "replace")} if request.verbose else {}
        return pb.ImageStatusResponse(image=image_pb(found), info=info)

    @rpc
    async def PullImage(self, request: pb.PullImageRequest,
                        context: grpc.aio.ServicerContext) -> pb.PullImageResponse:
        a = request.auth
        auth = PullAuth(a.username, a.password, a.auth, a.identity_token, a.registry_token)
        image_id = await self.images.pull(_image_text(request.image, "pull image"), auth)
        return pb.PullImageResponse(image_ref=image_id)

    @rpc
    async def RemoveImage(self, request: pb.RemoveImageRequest,
                          context: grpc.aio.ServicerContext) -> pb.RemoveImageResponse:
        # Idempotent, as the CRI asks: removing an image that is gone succeeds.
        await self.images.remove(_image_text(request.image, "remove image"))
        return pb.RemoveImageResponse()

    @rpc
    async def ImageFsInfo(self, request: pb.ImageFsInfoRequest,
                          context: grpc.aio.ServicerContext) -> pb.ImageFsInfoResponse:
        return pb.ImageFsInfoResponse(image_filesystems=[fs_usage_pb(await self.images.fs_usage())])


fill_unimplemented(ImageService, "ImageService")
