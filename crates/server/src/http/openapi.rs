//! The OpenAPI document of `/v1` (served at `/openapi.json`), with bearer authentication.

use super::*;

/// The OpenAPI document of `/v1`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Stargrid", description = "Stargrid control-plane API"),
    paths(
        submit_job,
        list_jobs,
        get_job,
        cancel_job,
        why_job,
        job_logs,
        create_service,
        list_services,
        get_service,
        scale_service,
        delete_service,
        submit_sandboxes,
        list_batches,
        get_batch,
        cancel_batch,
        list_nodes,
        drain_node,
        resume_node,
        list_tenants,
        cost,
        compact_journal,
        list_history,
        heartbeat,
        wait_for_changes,
        issue_token,
        list_tokens,
        revoke_token
    ),
    components(schemas(
        SubmitJob,
        Submitted,
        JobView,
        JobList,
        NodeView,
        TenantView,
        ApiError,
        FieldProblem,
        Heartbeat,
        crate::api::TaskReport,
        HeartbeatReply,
        crate::api::Assignment,
        crate::api::SandboxAssignment,
        crate::api::WaitForChanges,
        crate::api::LogView,
        crate::api::TokenView,
        crate::api::LogChunk,
        crate::api::LogWanted,
        crate::api::Inventory,
        crate::api::Changes,
        SubmitService,
        crate::api::SpreadSpec,
        ScaleService,
        ServiceView,
        SubmitSandboxes,
        BatchView,
        BatchList,
        crate::api::ServiceList,
        IssueToken,
        Token,
        crate::api::Compacted,
        crate::api::WorkloadSummary,
        crate::api::HistoryList
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Declares the bearer-token scheme in the OpenAPI document.
pub(super) struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

pub(super) async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
