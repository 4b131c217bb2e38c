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
        service_endpoints,
        super::gateway::routes,
        super::rollouts::start_rollout,
        super::rollouts::rollout_status,
        super::rollouts::undo_rollout,
        super::rollouts::promote_rollout,
        super::gateway::report_load,
        scale_service,
        delete_service,
        submit_sandboxes,
        list_batches,
        get_batch,
        cancel_batch,
        sandbox_logs,
        exec,
        write_file,
        read_file,
        list_nodes,
        fleet_overview,
        cell_summary,
        fleet_domain,
        drain_node,
        resume_node,
        fleet_change::apply_fleet,
        fleet_change::fleet_file,
        fleet_change::registrations,
        fleet_change::set_registration_rule,
        fleet_change::approve_registrations,
        fleet_change::reject_registrations,
        fleet_change::register_node,
        list_tenants,
        cost,
        compact_journal,
        list_history,
        usage,
        stream_events,
        heartbeat,
        heartbeats,
        wait_for_changes,
        exec_output,
        issue_token,
        list_tokens,
        revoke_token,
        metrics::metrics
    ),
    components(schemas(
        crate::api::StreamEvent,
        crate::api::CellSummary,
        crate::api::ServiceEndpoint,
        crate::api::GatewayRoutes,
        crate::api::ServiceRoute,
        crate::api::ServiceLoadView,
        crate::api::StartRollout,
        crate::api::RolloutView,
        crate::api::UndoRollout,
        crate::api::GatewayLoad,
        crate::api::ServiceLoad,
        crate::api::AutoscaleSpec,
        crate::api::TaskEndpoint,
        crate::api::ApplyFleet,
        crate::api::FleetChange,
        crate::api::NodeSet,
        crate::api::RegistrationRuleSpec,
        crate::api::SetRegistrationRule,
        crate::api::RegisterNode,
        crate::api::Registered,
        crate::api::WaitingNode,
        crate::api::RegistrationsView,
        crate::api::ApproveNodes,
        crate::api::CapacitySummary,
        crate::api::Change,
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
        crate::api::Heartbeats,
        crate::api::HeartbeatsReply,
        crate::api::NodeAnswer,
        crate::api::NodeWork,
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
        crate::api::ServiceRole,
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
        crate::api::HistoryList,
        crate::api::UsageReport,
        crate::api::UsageLine,
        crate::api::FleetOverview,
        crate::api::DomainGroup,
        crate::api::DomainCell,
        crate::api::CpuZone,
        crate::api::FleetTotals,
        crate::api::DomainDetail,
        crate::api::TrayView,
        crate::api::ExecRequest,
        crate::api::ExecEvent,
        crate::api::ExecOrder,
        crate::api::ExecOutput,
        crate::api::ExecChunk,
        crate::api::ExecEnd,
        crate::api::ExecAck,
        crate::api::FileWritten
    )),
    modifiers(&BearerAuth, &Refusals),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Documents the refusals every operation can give, each with the API's error body: 401 (no
/// or a bad token) and 403 (a token whose role may not) everywhere; 400 where the request has
/// parameters or a body; 404 where the path names something; 413 where there is a body.
pub(super) struct Refusals;

impl utoipa::Modify for Refusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::Operation;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let refusal = |why: &str| {
            ResponseBuilder::new()
                .description(why)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ApiError")))
                        .build(),
                )
                .build()
        };
        let add = |op: &mut Operation, path: &str| {
            let mut wanted = vec![
                (
                    "401",
                    "no token, or one that is unknown, revoked or expired",
                ),
                ("403", "the token's role may not do this"),
            ];
            let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            if op.request_body.is_some() || has_params {
                wanted.push(("400", "a field is malformed or out of range"));
            }
            if path.contains('{') {
                wanted.push(("404", "no such thing"));
            }
            if op.request_body.is_some() {
                wanted.push(("413", "the body is over the size limit"));
            }
            for (status, why) in wanted {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| refusal(why).into());
            }
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add(op, path);
            }
        }
    }
}

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
