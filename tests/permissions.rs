//! The permission matrix, table-driven: every operation against every kind of caller
//! (admin, maintainer, each single flag, no grant, revoked, unknown, no token), each
//! row on a fresh product, checking status, error code, and that a refused request
//! changed nothing.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Admin,
    Maintainer,
    Download,
    Upload,
    Delete,
    NoGrant,
    Revoked,
    Unknown,
    NoToken,
}

const EVERYONE: [Who; 9] = [
    Who::Admin,
    Who::Maintainer,
    Who::Download,
    Who::Upload,
    Who::Delete,
    Who::NoGrant,
    Who::Revoked,
    Who::Unknown,
    Who::NoToken,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Register,
    Prune,
    FetchOtherToken,
    FetchProduct,
    CreateProduct,
    DeleteProduct,
    AddToken,
    DeleteToken,
    DeleteVersionByPath,
    DeleteVersionByModify,
    Upload,
    Download,
    Presign,
    ListVersions,
    ProductAccess,
}

impl Op {
    fn success(self) -> u16 {
        match self {
            Op::Register | Op::CreateProduct | Op::AddToken | Op::Upload => 201,
            Op::Prune
            | Op::DeleteProduct
            | Op::DeleteToken
            | Op::DeleteVersionByPath
            | Op::DeleteVersionByModify => 204,
            Op::FetchOtherToken
            | Op::FetchProduct
            | Op::Download
            | Op::Presign
            | Op::ListVersions
            | Op::ProductAccess => 200,
        }
    }

    /// Whether a grant with these flags allows a product operation; `None` for
    /// operations that do not depend on a product grant.
    fn allowed_by(self, p: Perms) -> Option<bool> {
        Some(match self {
            Op::FetchProduct => true,
            Op::DeleteProduct | Op::DeleteVersionByPath | Op::DeleteVersionByModify => {
                p.maintainer || p.delete
            }
            Op::AddToken | Op::DeleteToken => p.maintainer,
            Op::Upload => p.upload,
            Op::Download | Op::Presign | Op::ListVersions => p.download,
            Op::Register
            | Op::Prune
            | Op::FetchOtherToken
            | Op::CreateProduct
            | Op::ProductAccess => return None,
        })
    }
}

fn perms_of(who: Who) -> Option<Perms> {
    match who {
        Who::Maintainer => Some(Perms::MAINTAINER),
        Who::Download => Some(Perms::DOWNLOAD),
        Who::Upload => Some(Perms::UPLOAD),
        Who::Delete => Some(Perms::DELETE),
        _ => None,
    }
}

/// The contract: (status, error code).
fn expected(op: Op, who: Who) -> (u16, Option<&'static str>) {
    let ok = (op.success(), None);
    let forbidden = (403, Some("forbidden"));
    let hidden = (404, Some("product_not_found"));
    match who {
        Who::NoToken => (401, Some("missing_token")),
        Who::Revoked | Who::Unknown => (401, Some("invalid_token")),
        Who::Admin => ok,
        Who::NoGrant | Who::Maintainer | Who::Download | Who::Upload | Who::Delete => match op {
            Op::Register | Op::Prune | Op::FetchOtherToken => forbidden,
            Op::CreateProduct | Op::ProductAccess => ok,
            _ => match perms_of(who) {
                None => hidden,
                Some(p) if op.allowed_by(p) == Some(true) => ok,
                Some(_) => forbidden,
            },
        },
    }
}

/// Tokens shared by the rows of one operation's table.
struct Fixture {
    app: TestApp,
    maintainer: String,
    download: String,
    upload: String,
    delete: String,
    bystander: String,
    revoked: String,
    unknown: String,
}

/// What one row works on.
struct Row {
    product: String,
    /// A token to prune, for `Prune`.
    victim: Option<String>,
    /// A token with no grant at all, fresh for this row.
    no_grant: String,
}

const FIRST: &[u8] = b"version one bytes";
const SECOND: &[u8] = b"version two bytes";

impl Fixture {
    async fn new() -> Fixture {
        let app = TestApp::start().await;
        let revoked = app.register(false).await;
        app.prune(&revoked).await;
        let unknown = format!("depot_{}", random_string(43));
        app.remember_secret(&unknown);
        Fixture {
            maintainer: app.register(false).await,
            download: app.register(false).await,
            upload: app.register(false).await,
            delete: app.register(false).await,
            bystander: app.register(false).await,
            revoked,
            unknown,
            app,
        }
    }

    async fn row(&self, op: Op) -> Row {
        let app = &self.app;
        let product = app.product().await;
        app.upload_ok(app.admin(), &product, "1.0.0", FIRST).await;
        for (token, perms) in [
            (&self.maintainer, Perms::MAINTAINER),
            (&self.download, Perms::DOWNLOAD),
            (&self.upload, Perms::UPLOAD),
            (&self.delete, Perms::DELETE),
            (&self.bystander, Perms::DOWNLOAD),
        ] {
            app.grant(&product, token, perms).await;
        }
        let victim = match op {
            Op::Prune => Some(app.register(false).await),
            _ => None,
        };
        Row {
            product,
            victim,
            no_grant: app.register(false).await,
        }
    }

    fn token<'a>(&'a self, who: Who, row: &'a Row) -> Option<&'a str> {
        Some(match who {
            Who::Admin => self.app.admin(),
            Who::Maintainer => &self.maintainer,
            Who::Download => &self.download,
            Who::Upload => &self.upload,
            Who::Delete => &self.delete,
            Who::NoGrant => &row.no_grant,
            Who::Revoked => &self.revoked,
            Who::Unknown => &self.unknown,
            Who::NoToken => return None,
        })
    }

    async fn perform(&self, op: Op, row: &Row, token: Option<&str>) -> Reply {
        let app = &self.app;
        let p = &row.product;
        match op {
            Op::Register => {
                app.put_json("/register", token, &json!({ "admin": false }))
                    .await
            }
            Op::Prune => {
                let victim = row.victim.as_deref().unwrap();
                app.delete(&format!("/prune/{victim}"), token).await
            }
            Op::FetchOtherToken => app.get(&format!("/fetch/{}", self.bystander), token).await,
            Op::FetchProduct => app.get(&format!("/product/fetch/{p}"), token).await,
            Op::CreateProduct => {
                app.put_json(
                    "/product/create",
                    token,
                    &json!({ "name": format!("{p}-new") }),
                )
                .await
            }
            Op::DeleteProduct => app.delete(&format!("/product/delete/{p}"), token).await,
            Op::AddToken => {
                let body = json!({
                    "product": p, "token": self.bystander, "permissions": Perms::UPLOAD.json()
                });
                app.put_json("/product/modify/addToken", token, &body).await
            }
            Op::DeleteToken => {
                let body = json!({ "product": p, "token": self.bystander });
                app.delete_json("/product/modify/deleteToken", token, &body)
                    .await
            }
            Op::DeleteVersionByPath => {
                app.delete(&format!("/product/delete/{p}/1.0.0"), token)
                    .await
            }
            Op::DeleteVersionByModify => {
                let body = json!({ "product": p, "version": "1.0.0" });
                app.delete_json("/product/modify/deleteVersion", token, &body)
                    .await
            }
            Op::Upload => {
                let (ct, body) = Form::upload(p, "2.0.0", "two.bin", SECOND).finish();
                let req = app
                    .request(Method::POST, "/product/upload", token)
                    .header("Content-Type", ct)
                    .body(body);
                app.send(req).await
            }
            Op::Download => {
                app.get(&format!("/product/download/{p}/1.0.0"), token)
                    .await
            }
            Op::Presign => app.get(&format!("/product/presign/{p}/1.0.0"), token).await,
            Op::ListVersions => app.get(&format!("/product/versions/{p}"), token).await,
            Op::ProductAccess => app.get("/product/access", token).await,
        }
    }

    /// Everything a request could have changed, seen by the admin.
    async fn snapshot(&self, row: &Row) -> Value {
        let app = &self.app;
        let product = app
            .get(
                &format!("/product/fetch/{}", row.product),
                Some(app.admin()),
            )
            .await;
        let created = app
            .get(
                &format!("/product/fetch/{}-new", row.product),
                Some(app.admin()),
            )
            .await;
        let tokens = app.get("/tokens", Some(app.admin())).await.json();
        let mut ids: Vec<String> = tokens
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        json!({
            "product": (product.status.as_u16(), product.json()),
            "created": created.status.as_u16(),
            "tokens": ids,
        })
    }

    /// Checks what an allowed request did.
    async fn check_effect(&self, op: Op, who: Who, row: &Row, reply: &Reply) -> Result<(), String> {
        let app = &self.app;
        let p = &row.product;
        let fail = |msg: String| Err(format!("{op:?} by {who:?}: {msg}"));
        match op {
            Op::Register => {
                let raw = reply.text();
                app.remember_secret(&raw);
                if !raw.starts_with("depot_") {
                    return fail(format!("register returned {raw:?}"));
                }
            }
            Op::Prune => {
                let victim = row.victim.as_deref().unwrap();
                let r = app.get("/product/access", Some(victim)).await;
                if r.status != 401 {
                    return fail(format!("pruned token still answers {}", r.status));
                }
            }
            Op::FetchOtherToken => {
                if !reply.json()["id"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("tok_")
                {
                    return fail(format!("no id in {}", reply.text()));
                }
            }
            Op::FetchProduct => {
                if reply.json()["name"] != p.as_str() {
                    return fail(format!("wrong product {}", reply.text()));
                }
            }
            Op::CreateProduct => {
                let r = app
                    .get(&format!("/product/fetch/{p}-new"), Some(app.admin()))
                    .await;
                if r.status != 200 {
                    return fail("product not created".into());
                }
            }
            Op::DeleteProduct => {
                let r = app
                    .get(&format!("/product/fetch/{p}"), Some(app.admin()))
                    .await;
                if r.status != 404 {
                    return fail("product still there".into());
                }
            }
            Op::AddToken => {
                let id = app.token_id(&self.bystander).await;
                if app.fetch_product(p).await["tokens"][&id] != Perms::UPLOAD.json() {
                    return fail("grant not changed".into());
                }
            }
            Op::DeleteToken => {
                let id = app.token_id(&self.bystander).await;
                if app.fetch_product(p).await["tokens"].get(&id).is_some() {
                    return fail("grant not removed".into());
                }
            }
            Op::DeleteVersionByPath | Op::DeleteVersionByModify => {
                if !app.versions(p).await.is_empty() {
                    return fail("version not deleted".into());
                }
            }
            Op::Upload => {
                if app.download(app.admin(), p, "2.0.0").await.body != SECOND {
                    return fail("upload not stored".into());
                }
            }
            Op::Download => {
                if reply.body != FIRST {
                    return fail("wrong bytes".into());
                }
            }
            Op::Presign => {
                if !reply.json()["url"].is_string() {
                    return fail(format!("no url in {}", reply.text()));
                }
            }
            Op::ListVersions => {
                if reply.json()["versions"].as_array().map(Vec::len) != Some(1) {
                    return fail(format!("wrong listing {}", reply.text()));
                }
            }
            Op::ProductAccess => {
                let list = reply.json();
                let list: Vec<&str> = list
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                let sees = list.contains(&p.as_str());
                let ok = match who {
                    Who::NoGrant => list.is_empty() && reply.text() == "[]",
                    _ => sees,
                };
                if !ok {
                    return fail(format!("access list {list:?} (product {p})"));
                }
            }
        }
        Ok(())
    }
}

async fn check_matrix(op: Op) {
    let fx = Fixture::new().await;
    let mut failures = Vec::new();
    for who in EVERYONE {
        let row = fx.row(op).await;
        let before = fx.snapshot(&row).await;
        let reply = fx.perform(op, &row, fx.token(who, &row)).await;
        let (status, code) = expected(op, who);
        let got_code = if reply.status.is_success() {
            None
        } else {
            Some(reply.error_code())
        };
        if reply.status.as_u16() != status || got_code.as_deref() != code {
            failures.push(format!(
                "{op:?} by {who:?}: expected {status} {code:?}, got {} {got_code:?}: {}",
                reply.status.as_u16(),
                reply.text()
            ));
            continue;
        }
        if reply.status.is_success() {
            if let Err(msg) = fx.check_effect(op, who, &row, &reply).await {
                failures.push(msg);
            }
        } else {
            let after = fx.snapshot(&row).await;
            if before != after {
                failures.push(format!("{op:?} by {who:?} was refused but changed state:\n  before {before}\n  after  {after}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "permission matrix violations:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_expected_table_matches_the_contract() {
    // Spot checks of the table itself, so a typo in `expected` cannot hide a server bug.
    assert_eq!(
        expected(Op::Register, Who::Maintainer),
        (403, Some("forbidden"))
    );
    assert_eq!(expected(Op::CreateProduct, Who::NoGrant), (201, None));
    assert_eq!(expected(Op::DeleteProduct, Who::Delete), (204, None));
    assert_eq!(
        expected(Op::DeleteProduct, Who::Upload),
        (403, Some("forbidden"))
    );
    assert_eq!(
        expected(Op::AddToken, Who::Delete),
        (403, Some("forbidden"))
    );
    assert_eq!(
        expected(Op::DeleteVersionByModify, Who::Maintainer),
        (204, None)
    );
    assert_eq!(
        expected(Op::Upload, Who::Maintainer),
        (403, Some("forbidden"))
    );
    assert_eq!(
        expected(Op::Download, Who::NoGrant),
        (404, Some("product_not_found"))
    );
    assert_eq!(expected(Op::FetchProduct, Who::Upload), (200, None));
    assert_eq!(
        expected(Op::ProductAccess, Who::Revoked),
        (401, Some("invalid_token"))
    );
    assert_eq!(
        expected(Op::Prune, Who::NoToken),
        (401, Some("missing_token"))
    );
}

#[tokio::test]
async fn register_is_admin_only() {
    check_matrix(Op::Register).await;
}

#[tokio::test]
async fn prune_is_admin_only() {
    check_matrix(Op::Prune).await;
}

#[tokio::test]
async fn fetching_another_token_is_admin_only() {
    check_matrix(Op::FetchOtherToken).await;
}

#[tokio::test]
async fn fetch_product_needs_any_grant() {
    check_matrix(Op::FetchProduct).await;
}

#[tokio::test]
async fn create_product_needs_any_valid_token() {
    check_matrix(Op::CreateProduct).await;
}

#[tokio::test]
async fn delete_product_needs_maintainer_or_delete() {
    check_matrix(Op::DeleteProduct).await;
}

#[tokio::test]
async fn add_token_needs_maintainer() {
    check_matrix(Op::AddToken).await;
}

#[tokio::test]
async fn delete_token_needs_maintainer() {
    check_matrix(Op::DeleteToken).await;
}

#[tokio::test]
async fn delete_version_by_path_needs_maintainer_or_delete() {
    check_matrix(Op::DeleteVersionByPath).await;
}

#[tokio::test]
async fn delete_version_by_modify_needs_maintainer_or_delete() {
    check_matrix(Op::DeleteVersionByModify).await;
}

#[tokio::test]
async fn upload_needs_upload() {
    check_matrix(Op::Upload).await;
}

#[tokio::test]
async fn download_needs_download() {
    check_matrix(Op::Download).await;
}

#[tokio::test]
async fn presign_needs_download() {
    check_matrix(Op::Presign).await;
}

#[tokio::test]
async fn list_versions_needs_download() {
    check_matrix(Op::ListVersions).await;
}

#[tokio::test]
async fn product_access_lists_products_with_any_grant() {
    check_matrix(Op::ProductAccess).await;
}
