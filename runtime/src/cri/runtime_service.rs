//! Dispatch of `RuntimeService` to the per-RPC handlers. No logic lives here: an
//! RPC that is not implemented yet answers UNIMPLEMENTED naming itself. Each
//! method hands its handler to [`super::answer`], the one conversion to gRPC.

use berth_proto::cri::runtime_service_server::RuntimeService;
use berth_proto::cri::*;
use tonic::{Request, Response, Status};

use super::Cri;

#[tonic::async_trait]
impl RuntimeService for Cri {
    type GetContainerEventsStream = super::container_events::EventStream;

    async fn get_container_events(
        &self,
        req: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        super::answer(super::container_events::handle(self, req.into_inner())).await
    }

    async fn version(&self, req: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        super::answer(super::version::handle(self, req.into_inner())).await
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        super::answer(super::sandbox_run::handle(self, req.into_inner())).await
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        super::answer(super::sandbox_stop::handle(self, req.into_inner())).await
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        super::answer(super::sandbox_remove::handle(self, req.into_inner())).await
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        super::answer(super::sandbox_status::handle(self, req.into_inner())).await
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        super::answer(super::sandbox_list::handle(self, req.into_inner())).await
    }

    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let arrived = super::log_layer::arrived(&req);
        super::answer(super::container_create::handle(self, req.into_inner(), arrived)).await
    }

    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        let arrived = super::log_layer::arrived(&req);
        super::answer(super::container_start::handle(self, req.into_inner(), arrived)).await
    }

    async fn stop_container(
        &self,
        req: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        super::answer(super::container_stop::handle(self, req.into_inner())).await
    }

    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        super::answer(super::container_remove::handle(self, req.into_inner())).await
    }

    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        super::answer(super::container_list::handle(self, req.into_inner())).await
    }

    async fn container_status(
        &self,
        req: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        super::answer(super::container_status::handle(self, req.into_inner())).await
    }

    async fn update_container_resources(
        &self,
        req: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        super::answer(super::container_update_resources::handle(self, req.into_inner())).await
    }

    async fn reopen_container_log(
        &self,
        req: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        super::answer(super::container_reopen_log::handle(self, req.into_inner())).await
    }

    async fn exec_sync(&self, req: Request<ExecSyncRequest>) -> Result<Response<ExecSyncResponse>, Status> {
        super::answer(super::container_exec_sync::handle(self, req.into_inner())).await
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        super::answer(super::container_exec::handle(self, req.into_inner())).await
    }

    async fn attach(&self, req: Request<AttachRequest>) -> Result<Response<AttachResponse>, Status> {
        super::answer(super::container_attach::handle(self, req.into_inner())).await
    }

    async fn port_forward(
        &self,
        req: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        super::answer(super::sandbox_port_forward::handle(self, req.into_inner())).await
    }

    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        super::answer(super::container_stats::handle(self, req.into_inner())).await
    }

    async fn list_container_stats(
        &self,
        req: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        super::answer(super::container_stats_list::handle(self, req.into_inner())).await
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        super::answer(super::sandbox_stats::handle(self, req.into_inner())).await
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        super::answer(super::sandbox_stats_list::handle(self, req.into_inner())).await
    }

    async fn update_runtime_config(
        &self,
        req: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        super::answer(super::runtime_config_update::handle(self, req.into_inner())).await
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        super::answer(super::status::handle(self, req.into_inner())).await
    }

    async fn checkpoint_container(
        &self,
        req: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        super::answer(super::container_checkpoint::handle(self, req.into_inner())).await
    }

    async fn list_metric_descriptors(
        &self,
        req: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        super::answer(super::metric_descriptors_list::handle(self, req.into_inner())).await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        req: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        super::answer(super::sandbox_metrics_list::handle(self, req.into_inner())).await
    }

    async fn runtime_config(
        &self,
        req: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        super::answer(super::runtime_config::handle(self, req.into_inner())).await
    }

    async fn update_pod_sandbox_resources(
        &self,
        req: Request<UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<UpdatePodSandboxResourcesResponse>, Status> {
        super::answer(super::sandbox_update_resources::handle(self, req.into_inner())).await
    }
}
