//! `GET /openapi.json`: `openapi/openapi.yaml`, embedded in the binary and converted to
//! JSON once, on first use.

use crate::error::ApiError;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::sync::LazyLock;

/// The OpenAPI document, as written.
pub const SPEC_YAML: &str = include_str!("../../openapi/openapi.yaml");

/// The OpenAPI document as a JSON value.
pub fn spec() -> Result<serde_json::Value, String> {
    serde_yaml::from_str(SPEC_YAML).map_err(|e| format!("openapi/openapi.yaml: {e}"))
}

static SPEC_JSON: LazyLock<Result<Bytes, String>> = LazyLock::new(|| {
    let value = spec()?;
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| format!("openapi/openapi.yaml as JSON: {e}"))
});

/// `GET /openapi.json`.
pub async fn openapi_json() -> Response {
    match &*SPEC_JSON {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response(),
        // The unit tests parse the same document, so this is a build that skipped them.
        Err(err) => ApiError::internal(err).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{HEAD_ROUTES, ROUTES};
    use serde_json::Value;
    use std::collections::BTreeSet;

    const METHODS: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn operations(spec: &Value) -> Vec<(String, String, &Value)> {
        let paths = spec["paths"].as_object().expect("the spec has paths");
        let mut ops = Vec::new();
        for (path, item) in paths {
            let item = item.as_object().expect("a path item is an object");
            for (key, op) in item {
                if METHODS.contains(&key.as_str()) {
                    ops.push((key.to_uppercase(), path.clone(), op));
                }
            }
        }
        ops
    }

    /// Follows a local `$ref` (`#/components/...`).
    fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let pointer = reference
                    .strip_prefix('#')
                    .unwrap_or_else(|| panic!("non-local $ref {reference}"));
                let target = spec
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {reference}"));
                resolve(spec, target)
            }
            None => value,
        }
    }

    #[test]
    fn the_spec_parses_and_is_openapi_3_1() {
        let spec = spec().unwrap();
        assert_eq!(spec["openapi"], "3.1.0");
        let servers: Vec<&str> = spec["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["url"].as_str().unwrap())
            .collect();
        assert_eq!(servers, ["/", "/api"], "the two mounts of the API");
        assert!(SPEC_JSON.is_ok());
    }

    #[test]
    fn the_spec_and_the_router_have_the_same_routes() {
        let spec = spec().unwrap();
        let documented: BTreeSet<(String, String)> = operations(&spec)
            .into_iter()
            .map(|(method, path, _)| (method, path))
            .collect();
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|&(method, path)| (method.to_string(), path.to_string()))
            .chain(
                HEAD_ROUTES
                    .iter()
                    .map(|path| ("HEAD".to_string(), path.to_string())),
            )
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "routes in api::ROUTES (or HEAD_ROUTES) but not in openapi/openapi.yaml: \
             {undocumented:?}\nroutes in openapi/openapi.yaml but not in api::ROUTES: {unserved:?}"
        );
    }

    #[test]
    fn every_operation_documents_its_responses_and_error_bodies() {
        let spec = spec().unwrap();
        let error_schema = serde_json::json!({ "$ref": "#/components/schemas/Error" });
        let health_schema = serde_json::json!({ "$ref": "#/components/schemas/Health" });
        for (method, path, op) in operations(&spec) {
            let what = format!("{method} {path}");
            assert!(op["operationId"].is_string(), "{what}: operationId missing");
            let responses = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{what}: no responses"));
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{what}: no success response"
            );
            let public = op["security"].as_array().is_some_and(Vec::is_empty);
            if !public {
                assert!(
                    responses.contains_key("401"),
                    "{what}: needs a token but documents no 401"
                );
            }
            if path.contains('{') {
                assert!(
                    responses.contains_key("400"),
                    "{what}: path parameters can be malformed, so 400 must be documented"
                );
            }
            for (status, response) in responses {
                let response = resolve(&spec, response);
                assert!(
                    response["description"].is_string(),
                    "{what} {status}: no description"
                );
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                let content = &response["content"];
                if method == "HEAD" {
                    // A HEAD answer never has a body.
                    assert!(
                        content.is_null(),
                        "{what} {status}: a HEAD error has no body"
                    );
                    continue;
                }
                let keys: Vec<&String> = content
                    .as_object()
                    .unwrap_or_else(|| panic!("{what} {status}: an error without a body"))
                    .keys()
                    .collect();
                assert_eq!(keys, ["application/json"], "{what} {status}");
                let schema = &content["application/json"]["schema"];
                // The probes answer 503 with the same Health body as their 200.
                let probe_down = status == "503"
                    && ["/health", "/readyz"].contains(&path.as_str())
                    && *schema == health_schema;
                assert!(
                    *schema == error_schema || probe_down,
                    "{what} {status}: an error body is the Error schema, not {schema}"
                );
            }
        }
    }
}
