//! `GET /v1/models`, `GET /v1/models/{id}`: the registered models, as OpenAI lists models.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::{call, error::ApiError, unexpected, Shared};
use crate::protocol::{Request, Response};
use crate::registry::RegisteredModel;

fn model_json(m: &RegisteredModel) -> Value {
    json!({
        "id": m.name,
        "object": "model",
        "created": m.added / 1000,
        "owned_by": "qwen3q",
    })
}

pub async fn list(State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
    match call(&state, Request::ModelList).await? {
        Response::Models(ms) => Ok(Json(json!({
            "object": "list",
            "data": ms.iter().map(model_json).collect::<Vec<_>>(),
        }))),
        other => Err(unexpected(other)),
    }
}

pub async fn one(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match call(&state, Request::ModelGet(id.clone())).await? {
        Response::Model(Some(m)) => Ok(Json(model_json(&m))),
        Response::Model(None) => Err(ApiError {
            code: Some("model_not_found"),
            ..ApiError::not_found(format!(
                "The model `{id}` does not exist (qwen3q models list)"
            ))
        }),
        other => Err(unexpected(other)),
    }
}
