//! Request decoding shared by handlers.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body that answers malformed input with 400 `invalid request body` (and oversized
/// input with 413) in our error shape, instead of axum's defaults.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The whole body as bytes, with [`JsonBody`]'s answers for a body that cannot be read (413
/// when oversized, else 400).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    "request body too large",
                )
            } else {
                ApiError::bad_request("invalid request body")
            }
        })?;
        Ok(RawBody(bytes))
    }
}

/// The body of [`EmptyOrJson`] and [`OptionalJson`]: `None` when it is empty or white space.
/// Any read failure (an oversized body too) is 400, as those extractors have always answered.
async fn unless_blank<S: Send + Sync>(req: Request, state: &S) -> Result<Option<Bytes>, ApiError> {
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(|_| ApiError::bad_request("invalid request body"))?;
    Ok((!bytes.iter().all(u8::is_ascii_whitespace)).then_some(bytes))
}

/// Like [`JsonBody`], but an empty body is `T::default()` (a bodiless `POST …/resume`);
/// anything else must be a valid JSON object, as for [`JsonBody`].
pub struct EmptyOrJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for EmptyOrJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match unless_blank(req, state).await? {
            Some(bytes) => parse_json(&bytes).map(EmptyOrJson),
            None => Ok(EmptyOrJson(T::default())),
        }
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every request body is an object; serde would otherwise accept `[]` for a struct.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "invalid request body: expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        // serde's message names the field and type, never server internals.
        ApiError::bad_request(format!("invalid request body: {e}"))
    })
}

/// Like [`JsonBody`] but an empty (or unparsable) body yields `T::default()`: the Python SDK's
/// `spawn_template` posts no body.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = unless_blank(req, state).await?;
        Ok(OptionalJson(
            bytes
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
        ))
    }
}

/// A boolean query parameter: `true`/`1` or `false`/`0`; absent or empty is `default`;
/// anything else is a 400 naming the parameter.
pub fn query_flag(
    q: &std::collections::HashMap<String, String>,
    key: &str,
    default: bool,
) -> Result<bool, ApiError> {
    match q.get(key).map(String::as_str) {
        None | Some("") => Ok(default),
        Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "{key} must be true or false, not {other:?}"
        ))),
    }
}
