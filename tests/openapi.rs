//! `GET /openapi.json`: the spec, as JSON, without a token, at both mounts. (That the
//! spec lists exactly the router's routes is a unit test in `src/api/openapi.rs`.)

mod common;

use common::*;

#[tokio::test]
async fn openapi_json_serves_the_spec_without_a_token_at_both_mounts() {
    let app = TestApp::start().await;
    let expected: serde_json::Value =
        serde_yaml::from_str(include_str!("../openapi/openapi.yaml")).expect("the spec parses");
    for path in ["/openapi.json", "/api/openapi.json"] {
        let r = app.get(path, None).await;
        r.assert_status(200);
        let ct = r.header("content-type").unwrap_or_default();
        assert_eq!(ct, "application/json", "{path}");
        assert_eq!(r.json(), expected, "{path}");
    }
    assert_eq!(expected["openapi"], "3.1.0");
    assert!(expected["paths"]["/openapi.json"]["get"].is_object());
}

#[tokio::test]
async fn an_oversized_json_body_is_a_json_413_on_every_json_endpoint() {
    let app = TestApp::start().await;
    let body = vec![b' '; 3 * 1024 * 1024];
    for (method, path) in [
        (reqwest::Method::PUT, "/register"),
        (reqwest::Method::PUT, "/product/create"),
        (reqwest::Method::PUT, "/product/modify/addToken"),
        (reqwest::Method::DELETE, "/product/modify/deleteToken"),
    ] {
        let r = app
            .send(
                app.request(method.clone(), path, Some(app.admin()))
                    .header("content-type", "application/json")
                    .body(body.clone()),
            )
            .await;
        r.assert_error(413, "payload_too_large");
    }
}
