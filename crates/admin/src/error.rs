//! Admin API errors: JSON `{"error": ..., "field": ...}` with the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use holdfast_store::StoreError;

/// An error answered by the admin API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        field: Option<String>,
        message: String,
    },
    #[error("missing or unknown admin token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("store error: {0}")]
    Internal(String),
    /// The store cannot be reached right now (it is reconnecting): 503 + `Retry-After`.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn bad(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::NotFound(format!("not found: {m}")),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Invalid { field, message } => ApiError::BadRequest {
                message: format!("`{field}`: {message}"),
                field: Some(field),
            },
            e @ StoreError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut body = serde_json::json!({ "error": self.to_string() });
        if let ApiError::BadRequest { field: Some(f), .. } = &self {
            body["field"] = serde_json::Value::String(f.clone());
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("2"),
            );
        }
        resp
    }
}

/// Parse a JSON body strictly; errors name the field (`limits.rps`, `name`...).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let whole = |message: &str| ApiError::BadRequest {
        message: format!("the body {message}"),
        field: Some(".".to_string()),
    };
    // serde would take a JSON array for a struct (its fields in order): every body of this
    // API is an object.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => return Err(whole("must be a JSON object (`{...}`)")),
        None => return Err(whole("is empty; send a JSON object")),
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let inner = e.inner().to_string();
        let mut field = e.path().to_string();
        // serde may report a missing, unknown or duplicate field at its parent; name the field
        // itself.
        let named = ["unknown field `", "missing field `", "duplicate field `"]
            .iter()
            .find_map(|p| inner.strip_prefix(p))
            .and_then(|rest| rest.split('`').next());
        if let Some(name) = named {
            if field == "." {
                field = name.to_string();
            } else if !field.ends_with(name) {
                field = format!("{field}.{name}");
            }
        }
        ApiError::BadRequest {
            message: format!("`{field}`: {inner}"),
            field: Some(field),
        }
    })?;
    de.end()
        .map_err(|_| whole("has more after the JSON object; send exactly one object"))?;
    Ok(value)
}
