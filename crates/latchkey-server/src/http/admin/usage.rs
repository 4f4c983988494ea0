//! `/admin/v1/usage`: what each client did, counted per minute by every server, and
//! `/admin/v1/usage/not-caching`: the clients that get far more tokens than they need.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;

use super::wire::{NotCachingRow, UsageRow};
use super::{Admin, ApiError, id_param, json_response, number_param, query_params};
use crate::http::AppState;
use crate::service::admin::{self, MAX_USAGE_ROWS};
use crate::service::admin_auth::Access;
use crate::store::UsageQuery;

/// `GET /usage` parameters.
#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// One client's counts, minute by minute (default: every client's totals, the most
    /// active first).
    client: Option<String>,
    /// Counts from this time on (Unix seconds; default: a day ago).
    #[param(minimum = 0)]
    since: Option<i64>,
    /// At most this many clients, or with `client` the latest minutes (1 to 10,000; default
    /// 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
    /// With `client`: one row per this many seconds instead of per minute (a multiple of
    /// 60, up to 31 days; periods start at multiples of it since the Unix epoch, in UTC).
    #[param(minimum = 60, maximum = 2678400, multiple_of = 60)]
    step: Option<i64>,
}

/// `GET /usage/not-caching` parameters, for the OpenAPI document (`usage_params` reads them).
#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct NotCachingParams {
    /// One client's rows only.
    client: Option<String>,
    /// Hours that started at or after the hour of this time (Unix seconds; default: a day
    /// ago).
    #[param(minimum = 0)]
    since: Option<i64>,
    /// At most this many rows (1 to 10,000; default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

/// The longest `step`: 31 days.
const MAX_STEP: i64 = 31 * 24 * 3600;

/// The query of `GET /usage` (`series`: it takes `step`, with `client`) or of
/// `GET /usage/not-caching`.
fn usage_params(query: Option<&str>, series: bool) -> Result<UsageParams, ApiError> {
    let allowed: &[&str] = if series {
        &["client", "since", "limit", "step"]
    } else {
        &["client", "since", "limit"]
    };
    let mut params = query_params(query, allowed)?;
    let since = number_param(&mut params, "since", 0, i64::MAX)?;
    let limit = number_param(&mut params, "limit", 1, i64::from(MAX_USAGE_ROWS))?;
    let step = number_param(&mut params, "step", 60, MAX_STEP)?;
    if step.is_some_and(|step| step % 60 != 0) {
        return Err(ApiError::field(
            "step",
            "step must be a multiple of 60 seconds",
        ));
    }
    let client = id_param(&mut params, "client")?;
    if step.is_some() && client.is_none() {
        return Err(ApiError::field(
            "step",
            "step is for one client's counts: give client too",
        ));
    }
    Ok(UsageParams {
        client,
        since,
        limit: limit.and_then(|l| u32::try_from(l).ok()),
        step,
    })
}

/// The query of a `GET /usage` request (`series`) or a `GET /usage/not-caching` one, with
/// their defaults: a day back, 100 rows, minutes.
fn usage_query(
    state: &AppState,
    query: Option<&str>,
    series: bool,
) -> Result<UsageQuery, ApiError> {
    let params = usage_params(query, series)?;
    Ok(UsageQuery {
        since: params.since.unwrap_or_else(|| {
            state
                .services
                .clock
                .unix_seconds()
                .saturating_sub(24 * 3600)
        }),
        client: params.client,
        limit: params.limit.unwrap_or(100),
        step: params.step.unwrap_or(60),
    })
}

/// Usage: every client's totals since a time, or one client's minutes.
#[utoipa::path(get, path = "/admin/v1/usage", tag = "usage", params(UsageParams),
    responses(
        (status = 200, description = "The counts", body = Vec<UsageRow>),
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
    let services = &state.services;
    let query = usage_query(&state, raw_query.as_deref(), true)?;
    let totals = query.client.is_none();
    let counts = admin::usage(services.store.as_ref(), &query).await?;
    let rows = UsageRow::from_counts(&counts, totals);
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&rows).unwrap_or_default(),
        None,
    ))
}

/// The clients not caching their tokens: per client, source address and hour, the hours that
/// started at or after `since` (newest first, the most tokens first).
#[utoipa::path(get, path = "/admin/v1/usage/not-caching", tag = "usage", params(NotCachingParams),
    responses(
        (status = 200, description = "The flagged clients", body = Vec<NotCachingRow>),
        super::wire::Refusals,
        super::wire::BadInput,
    ),
    security(("admin_token" = [])))]
pub async fn not_caching(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let raw_query = request.uri().query().map(str::to_owned);
    Admin::authorize(&state, request, Access::Read).await?;
    let query = usage_query(&state, raw_query.as_deref(), false)?;
    let found = admin::not_caching(state.services.store.as_ref(), &query).await?;
    let rows: Vec<NotCachingRow> = found.iter().map(NotCachingRow::from).collect();
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&rows).unwrap_or_default(),
        None,
    ))
}
