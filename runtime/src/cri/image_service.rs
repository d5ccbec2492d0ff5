//! Dispatch of `ImageService` to the per-RPC handlers. No logic lives here: an
//! RPC that is not implemented yet answers UNIMPLEMENTED naming itself. Each
//! method hands its handler to [`super::answer`], the one conversion to gRPC.

use berth_proto::cri::image_service_server::ImageService;
use berth_proto::cri::*;
use tonic::{Request, Response, Status};

use super::Cri;

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        super::answer(super::image_list::handle(self, req.into_inner())).await
    }

    async fn image_status(
        &self,
        req: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        super::answer(super::image_status::handle(self, req.into_inner())).await
    }

    async fn pull_image(
        &self,
        req: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        super::answer(super::image_pull::handle(self, req.into_inner())).await
    }

    async fn remove_image(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        super::answer(super::image_remove::handle(self, req.into_inner())).await
    }

    async fn image_fs_info(
        &self,
        req: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        super::answer(super::image_fs_info::handle(self, req.into_inner())).await
    }
}
