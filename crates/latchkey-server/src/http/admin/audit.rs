//! `/admin/v1/audit`: the audit trail, a page at a time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;

use super::wire::{AuditEvent, AuditPage};
use super::{Admin, ApiError, id_param, json_response, limit_param, number_param, query_params};
use crate::http::AppState;
use crate::service::admin;
use crate::service::admin_auth::Access;
use crate::store::AuditQuery;

/// `GET /audit` parameters.
#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only events at or after this time (Unix seconds).
    #[param(minimum = 0)]
    since: Option<i64>,
    /// Only events about this client (or key id).
    client: Option<String>,
    /// The `next` of the previous page.
    #[param(minimum = 0)]
    after: Option<i64>,
    /// At most this many events (1 to 1,000; default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The query of `GET /audit`.
fn audit_params(query: Option<&str>) -> Result<AuditParams, ApiError> {
    let mut params = query_params(query, &["since", "client", "after", "limit"])?;
    let since = number_param(&mut params, "since", 0, i64::MAX)?;
    let after = number_param(&mut params, "after", 0, i64::MAX)?;
    let limit = limit_param(&mut params)?;
    Ok(AuditParams {
        since,
        client: id_param(&mut params, "client")?,
        after,
        limit,
    })
}

/// Audit events, oldest first.
#[utoipa::path(get, path = "/admin/v1/audit", tag = "audit", params(AuditParams),
    responses(
        (status = 200, description = "A page of events", body = AuditPage),
        super::wire::Refusals,
        super::wire::BadInput,
    ),
    security(("admin_token" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let raw_query = request.uri().query().map(str::to_owned);
    Admin::authorize(&state, request, Access::Read).await?;
    let params = audit_params(raw_query.as_deref())?;
    let query = AuditQuery {
        since: params.since.unwrap_or(0),
        after_seq: params.after.unwrap_or(0),
        limit: params.limit.unwrap_or(100),
        target: params.client,
    };
    let events = admin::audit_events(state.services.store.as_ref(), &query).await?;
    let next = (events.len() == query.limit as usize)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    let page = AuditPage {
        items: events.iter().map(AuditEvent::from).collect(),
        next,
    };
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&page).unwrap_or_default(),
        None,
    ))
}
