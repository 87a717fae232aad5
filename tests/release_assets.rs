//! Release assets (issue 12): several files per version, drafts filled by parallel jobs and
//! published atomically, immutability, SHA256SUMS checked by the real `sha256sum`, the
//! primary-file rule, labels and label filters, draft visibility and expiry, events.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// `PUT /product/upload/{product}/{version}/{file}` with a raw body.
async fn put_file(
    app: &TestApp,
    token: &str,
    product: &str,
    version: &str,
    name: &str,
    bytes: &[u8],
) -> Reply {
    let req = app
        .request(
            Method::PUT,
            &format!("/product/upload/{product}/{version}/{name}"),
            Some(token),
        )
        .header("X-Checksum-Sha256", sha256_hex(bytes))
        .body(bytes.to_vec());
    app.send(req).await
}

async fn publish(
    app: &TestApp,
    token: &str,
    product: &str,
    version: &str,
    body: Option<Value>,
) -> Reply {
    let mut req = app.request(
        Method::POST,
        &format!("/product/publish/{product}/{version}"),
        Some(token),
    );
    if let Some(body) = body {
        req = req.json(&body);
    }
    app.send(req).await
}

async fn listing(app: &TestApp, token: &str, product: &str, query: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/product/versions/{product}{query}"), Some(token))
        .await;
    r.assert_status(200);
    r.json()["versions"].as_array().expect("versions").clone()
}

fn file_names(entry: &Value) -> Vec<String> {
    let mut names: Vec<String> = entry["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_seed_upload_still_makes_a_one_file_version_and_several_file_parts_make_one_version() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    let one = app.upload_ok(&admin, &product, "1.0.0", b"only").await;
    assert_eq!(one["state"], "published");
    assert_eq!(one["file_name"], "artifact.bin");
    assert_eq!(one["checksum"], format!("sha256:{}", sha256_hex(b"only")));

    let form = Form::new()
        .text("product", &product)
        .text("version", "2.0.0")
        .text("label.channel", "beta")
        .file("file", Some("tool.tar.gz"), b"tarball")
        .file("file", Some("tool.sig"), b"signature");
    let r = app.upload_form(Some(&admin), form).await;
    r.assert_status(201);
    let body = r.json();
    assert_eq!(
        body["file_name"], "tool.tar.gz",
        "the first file is the primary"
    );
    assert_eq!(body["files"].as_array().map(Vec::len), Some(2));
    let listed = listing(&app, &admin, &product, "").await;
    let v2 = listed
        .iter()
        .find(|v| v["version"] == "2.0.0")
        .expect("2.0.0 listed");
    assert_eq!(file_names(v2), ["tool.sig", "tool.tar.gz"]);
    assert_eq!(v2["labels"]["channel"], "beta");
    let d = app.download(&admin, &product, "2.0.0").await;
    d.assert_status(200);
    assert_eq!(d.body.as_slice(), b"tarball");

    // All or nothing: a repeated file name refuses the whole request, nothing stays.
    let form = Form::new()
        .text("product", &product)
        .text("version", "3.0.0")
        .file("file", Some("a.bin"), b"1")
        .file("file", Some("a.bin"), b"2");
    app.upload_form(Some(&admin), form)
        .await
        .assert_error(409, "file_exists");
    assert!(!app.versions(&product).await.contains(&"3.0.0".to_string()));
    app.upload(&admin, &product, "2.0.0", b"again")
        .await
        .assert_error(409, "version_exists");
}

#[tokio::test]
async fn twenty_jobs_fill_one_draft_at_once_and_a_publish_seals_it() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let ci = app
        .token_with(
            &product,
            Perms {
                upload: true,
                download: true,
                maintainer: false,
                delete: false,
            },
        )
        .await;
    let jobs = (0..20).map(|i| {
        let (app, ci, product) = (&app, ci.clone(), product.clone());
        async move {
            let bytes = payload(i, 1000 + i as usize);
            put_file(
                app,
                &ci,
                &product,
                "1.0.0",
                &format!("tool-{i}.bin"),
                &bytes,
            )
            .await
        }
    });
    let replies = futures::future::join_all(jobs).await;
    for r in &replies {
        r.assert_status(201);
        assert_eq!(r.json()["state"], "draft");
    }
    let drafts = listing(&app, &ci, &product, "").await;
    assert_eq!(drafts.len(), 1, "one draft");
    assert_eq!(drafts[0]["state"], "draft");
    assert_eq!(drafts[0]["files"].as_array().map(Vec::len), Some(20));

    // Two jobs with the same name: exactly one wins.
    let same = futures::future::join_all((0..2).map(|i| {
        let (app, ci, product) = (&app, ci.clone(), product.clone());
        async move {
            put_file(
                app,
                &ci,
                &product,
                "1.0.0",
                "dup.bin",
                &payload(100 + i, 5000),
            )
            .await
        }
    }))
    .await;
    let mut statuses: Vec<u16> = same.iter().map(|r| r.status.as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    assert!(
        same.iter()
            .any(|r| r.status.as_u16() == 409 && r.error_code() == "file_exists")
    );

    let r = publish(&app, &ci, &product, "1.0.0", None).await;
    r.assert_status(200);
    assert_eq!(r.json()["state"], "published");
    assert_eq!(r.json()["files"].as_array().map(Vec::len), Some(21));
    for i in [0u64, 7, 19] {
        let d = app
            .get(
                &format!("/product/download/{product}/1.0.0/tool-{i}.bin"),
                Some(&ci),
            )
            .await;
        d.assert_status(200);
        assert_eq!(d.body.as_slice(), payload(i, 1000 + i as usize).as_slice());
    }
}

#[tokio::test]
async fn drafts_are_invisible_without_upload_or_maintainer_and_never_latest() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;
    app.upload_ok(&admin, &product, "1.0.0", b"old").await;
    put_file(&app, &admin, &product, "2.0.0", "a.bin", b"draft")
        .await
        .assert_status(201);

    let seen = listing(&app, &reader, &product, "").await;
    assert_eq!(seen.len(), 1, "the reader lists only the published version");
    let fetched = app
        .get(&format!("/product/fetch/{product}"), Some(&reader))
        .await
        .json();
    assert!(fetched["versions"].get("2.0.0").is_none());
    assert_eq!(fetched["latest"], "1.0.0");
    for path in [
        format!("/product/download/{product}/2.0.0"),
        format!("/product/download/{product}/2.0.0/a.bin"),
        format!("/product/download/{product}/2.0.0/SHA256SUMS"),
        format!("/product/presign/{product}/2.0.0/a.bin"),
    ] {
        app.get(&path, Some(&reader))
            .await
            .assert_error(404, "version_not_found");
    }
    // The uploader sees its draft, listed as such, but `latest` is still the published one.
    let all = listing(&app, &admin, &product, "").await;
    assert!(
        all.iter()
            .any(|v| v["version"] == "2.0.0" && v["state"] == "draft")
    );
    let latest = app
        .get(&format!("/product/download/{product}/latest"), Some(&admin))
        .await;
    latest.assert_status(200);
    assert_eq!(latest.header("x-depot-version").as_deref(), Some("1.0.0"));
}

#[tokio::test]
async fn a_published_version_is_immutable_on_every_route() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    put_file(&app, &admin, &product, "1.0.0", "a.bin", b"a")
        .await
        .assert_status(201);
    publish(&app, &admin, &product, "1.0.0", None)
        .await
        .assert_status(200);

    put_file(&app, &admin, &product, "1.0.0", "b.bin", b"b")
        .await
        .assert_error(409, "version_exists");
    put_file(&app, &admin, &product, "1.0.0", "a.bin", b"x")
        .await
        .assert_error(409, "version_exists");
    app.delete(
        &format!("/product/delete/{product}/1.0.0/a.bin"),
        Some(&admin),
    )
    .await
    .assert_error(409, "version_published");
    publish(&app, &admin, &product, "1.0.0", None)
        .await
        .assert_error(409, "version_exists");
    app.upload(&admin, &product, "1.0.0", b"seed")
        .await
        .assert_error(409, "version_exists");
    let d = app
        .get(
            &format!("/product/download/{product}/1.0.0/a.bin"),
            Some(&admin),
        )
        .await;
    assert_eq!(d.body.as_slice(), b"a");
    // Deleting the whole version still works.
    app.delete(&format!("/product/delete/{product}/1.0.0"), Some(&admin))
        .await
        .assert_status(204);
}

#[tokio::test]
async fn sha256sums_verifies_a_download_directory_with_the_real_sha256sum() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    let files = [
        ("z-last.txt", payload(1, 3000)),
        ("a first.bin", payload(2, 70_000)),
        ("m.sig", payload(3, 10)),
    ];
    for (name, bytes) in &files {
        let encoded = name.replace(' ', "%20");
        put_file(&app, &admin, &product, "1.0.0", &encoded, bytes)
            .await
            .assert_status(201);
    }
    publish(&app, &admin, &product, "1.0.0", None)
        .await
        .assert_status(200);
    let sums = app
        .get(
            &format!("/product/download/{product}/latest/SHA256SUMS"),
            Some(&admin),
        )
        .await;
    sums.assert_status(200);
    assert_eq!(sums.header("x-depot-version").as_deref(), Some("1.0.0"));
    let text = sums.text();
    let names: Vec<&str> = text.lines().map(|l| &l[66..]).collect();
    assert_eq!(
        names,
        ["a first.bin", "m.sig", "z-last.txt"],
        "sorted by name"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("SHA256SUMS"), &text).unwrap();
    for (name, _) in &files {
        let encoded = name.replace(' ', "%20");
        let d = app
            .get(
                &format!("/product/download/{product}/1.0.0/{encoded}"),
                Some(&admin),
            )
            .await;
        d.assert_status(200);
        std::fs::write(dir.path().join(name), &d.body).unwrap();
    }
    let ok = std::process::Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(dir.path())
        .output()
        .expect("sha256sum runs");
    assert!(
        ok.status.success(),
        "sha256sum -c: {}",
        String::from_utf8_lossy(&ok.stdout)
    );
    std::fs::write(dir.path().join("m.sig"), b"tampered").unwrap();
    let bad = std::process::Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success(), "a changed file fails the check");

    put_file(&app, &admin, &product, "2.0.0", "SHA256SUMS", b"x")
        .await
        .assert_error(400, "reserved_name");
}

#[tokio::test]
async fn the_seed_download_serves_the_first_committed_file_and_says_which_version() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    put_file(&app, &admin, &product, "1.0.0", "first.bin", b"first")
        .await
        .assert_status(201);
    put_file(&app, &admin, &product, "1.0.0", "second.bin", b"second")
        .await
        .assert_status(201);
    publish(
        &app,
        &admin,
        &product,
        "1.0.0",
        Some(json!({"files": ["second.bin", "first.bin"]})),
    )
    .await
    .assert_status(200);
    let d = app
        .get(&format!("/product/download/{product}/latest"), Some(&admin))
        .await;
    d.assert_status(200);
    assert_eq!(d.body.as_slice(), b"first");
    assert_eq!(d.header("x-depot-version").as_deref(), Some("1.0.0"));
    assert_eq!(
        d.header("content-location"),
        Some(format!("/product/download/{product}/1.0.0"))
    );
    let one = app
        .get(
            &format!("/product/download/{product}/latest/second.bin"),
            Some(&admin),
        )
        .await;
    assert_eq!(one.body.as_slice(), b"second");
    assert_eq!(
        one.header("content-location"),
        Some(format!("/product/download/{product}/1.0.0/second.bin"))
    );
    let ranged = app
        .send(
            app.request(
                Method::GET,
                &format!("/product/download/{product}/1.0.0/second.bin"),
                Some(&admin),
            )
            .header("Range", "bytes=1-2"),
        )
        .await;
    ranged.assert_status(206);
    assert_eq!(ranged.body.as_slice(), b"ec");
    let head = app
        .send(app.request(
            Method::HEAD,
            &format!("/product/download/{product}/1.0.0/second.bin"),
            Some(&admin),
        ))
        .await;
    head.assert_status(200);
    assert_eq!(
        head.header("x-checksum-sha256"),
        Some(sha256_hex(b"second"))
    );
    let presigned = app
        .get(
            &format!("/product/presign/{product}/1.0.0/second.bin"),
            Some(&admin),
        )
        .await;
    presigned.assert_status(200);
    let url = presigned.json()["url"].as_str().unwrap().to_string();
    let direct = reqwest::get(&url).await.unwrap();
    assert_eq!(direct.status(), 200);
    assert_eq!(direct.bytes().await.unwrap().as_ref(), b"second");
    app.get(
        &format!("/product/download/{product}/1.0.0/nope.bin"),
        Some(&admin),
    )
    .await
    .assert_error(404, "file_not_found");
}

#[tokio::test]
async fn labels_promote_versions_and_filter_listings_and_latest() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    let uploader = app
        .token_with(
            &product,
            Perms {
                upload: true,
                download: true,
                maintainer: false,
                delete: false,
            },
        )
        .await;
    for v in ["1.0.0", "1.1.0", "2.0.0"] {
        put_file(&app, &uploader, &product, v, "t.bin", v.as_bytes())
            .await
            .assert_status(201);
        publish(
            &app,
            &uploader,
            &product,
            v,
            Some(json!({"labels": {"channel": "beta"}})),
        )
        .await
        .assert_status(200);
    }
    let path = format!("/product/labels/{product}/1.1.0");
    app.put_json(&path, Some(&uploader), &json!({"channel": "stable"}))
        .await
        .assert_error(403, "forbidden");
    let r = app
        .put_json(
            &path,
            Some(&admin),
            &json!({"channel": "stable", "nope": null}),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.json()["labels"], json!({"channel": "stable"}));
    app.put_json(&path, Some(&admin), &json!({"Bad Key": "x"}))
        .await
        .assert_error(400, "invalid_label");

    let stable = app
        .get(
            &format!("/product/download/{product}/latest?label=channel=stable"),
            Some(&admin),
        )
        .await;
    stable.assert_status(200);
    assert_eq!(stable.body.as_slice(), b"1.1.0");
    let beta = app
        .get(
            &format!("/product/download/{product}/latest?label=channel=beta"),
            Some(&admin),
        )
        .await;
    assert_eq!(beta.header("x-depot-version").as_deref(), Some("2.0.0"));
    let listed = listing(&app, &admin, &product, "?label=channel=beta").await;
    let names: Vec<&str> = listed
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["2.0.0", "1.0.0"]);
    app.get(
        &format!("/product/versions/{product}?label=nolabel"),
        Some(&admin),
    )
    .await
    .assert_error(400, "invalid_label");
}

#[tokio::test]
async fn publish_and_draft_file_errors_have_their_codes_and_change_nothing() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    publish(&app, &admin, &product, "9.9.9", None)
        .await
        .assert_error(404, "version_not_found");
    put_file(&app, &admin, &product, "1.0.0", "a.bin", b"a")
        .await
        .assert_status(201);
    put_file(&app, &admin, &product, "1.0.0", "a.bin", b"a")
        .await
        .assert_error(409, "file_exists");
    publish(
        &app,
        &admin,
        &product,
        "1.0.0",
        Some(json!({"files": ["a.bin", "b.bin"]})),
    )
    .await
    .assert_error(409, "files_mismatch");
    publish(
        &app,
        &admin,
        &product,
        "1.0.0",
        Some(json!({"labels": {"-bad": "x"}})),
    )
    .await
    .assert_error(400, "invalid_label");
    publish(&app, &admin, &product, "1.0.0", Some(json!({"nope": 1})))
        .await
        .assert_error(400, "invalid_body");
    app.delete(
        &format!("/product/delete/{product}/1.0.0/zz.bin"),
        Some(&admin),
    )
    .await
    .assert_error(404, "file_not_found");
    app.delete(
        &format!("/product/delete/{product}/1.0.0/a.bin"),
        Some(&admin),
    )
    .await
    .assert_status(204);
    publish(&app, &admin, &product, "1.0.0", None)
        .await
        .assert_error(409, "empty_version");
    let wrong = app
        .send(
            app.request(
                Method::PUT,
                &format!("/product/upload/{product}/1.0.0/c.bin"),
                Some(&admin),
            )
            .header("X-Checksum-Sha256", sha256_hex(b"other"))
            .body(b"content".to_vec()),
        )
        .await;
    wrong.assert_error(400, "checksum_mismatch");
    let versions = listing(&app, &admin, &product, "").await;
    assert_eq!(versions[0]["files"].as_array().map(Vec::len), Some(0));
    put_file(&app, &admin, "no-such-product", "1.0.0", "a.bin", b"a")
        .await
        .assert_error(404, "product_not_found");
    put_file(&app, &admin, &product, "latest", "a.bin", b"a")
        .await
        .assert_error(400, "reserved_name");
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;
    put_file(&app, &reader, &product, "1.0.0", "r.bin", b"r")
        .await
        .assert_error(403, "forbidden");
    publish(&app, &reader, &product, "1.0.0", None)
        .await
        .assert_error(403, "forbidden");
    let small = TestApp::builder().max_upload_bytes(1000).start().await;
    let p2 = small.product().await;
    put_file(
        &small,
        small.admin(),
        &p2,
        "1.0.0",
        "big.bin",
        &payload(9, 5000),
    )
    .await
    .assert_error(413, "payload_too_large");
}

#[tokio::test]
async fn the_janitor_deletes_drafts_left_untouched_past_their_ttl() {
    let app = TestApp::builder()
        .env("DEPOT_DRAFT_TTL_SECONDS", 2)
        .env("DEPOT_JANITOR_INTERVAL_SECONDS", 1)
        .start()
        .await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    put_file(&app, &admin, &product, "1.0.0", "a.bin", b"a")
        .await
        .assert_status(201);
    app.upload_ok(&admin, &product, "0.9.0", b"published").await;
    eventually(
        Duration::from_secs(30),
        "the idle draft expires",
        || async { !app.versions(&product).await.contains(&"1.0.0".to_string()) },
    )
    .await;
    assert!(
        app.versions(&product).await.contains(&"0.9.0".to_string()),
        "published versions stay"
    );
    let audit = app
        .get(
            &format!("/audit?product={product}&type=version.deleted"),
            Some(&admin),
        )
        .await
        .json();
    let e = &audit["events"][0];
    assert_eq!(e["actor"], json!({"system": "janitor"}));
    assert_eq!(e["details"]["reason"], "draft_expired");
}

#[tokio::test]
async fn drafts_labels_and_files_survive_a_restart_and_every_step_is_in_the_audit_log() {
    let mut app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    put_file(&app, &admin, &product, "1.0.0", "a.bin", b"a")
        .await
        .assert_status(201);
    put_file(&app, &admin, &product, "1.0.0", "b.bin", b"b")
        .await
        .assert_status(201);
    app.delete(
        &format!("/product/delete/{product}/1.0.0/b.bin"),
        Some(&admin),
    )
    .await
    .assert_status(204);
    app.restart().await;
    let drafts = listing(&app, &admin, &product, "").await;
    assert_eq!(file_names(&drafts[0]), ["a.bin"]);
    publish(
        &app,
        &admin,
        &product,
        "1.0.0",
        Some(json!({"labels": {"channel": "beta"}})),
    )
    .await
    .assert_status(200);
    app.put_json(
        &format!("/product/labels/{product}/1.0.0"),
        Some(&admin),
        &json!({"channel": "stable"}),
    )
    .await
    .assert_status(200);
    app.restart().await;
    let v = &listing(&app, &admin, &product, "").await[0];
    assert_eq!(v["state"], "published");
    assert_eq!(v["labels"]["channel"], "stable");
    let audit = app
        .get(&format!("/audit?product={product}"), Some(&admin))
        .await
        .json();
    let mut types: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    types.reverse();
    assert_eq!(
        types,
        [
            "product.created",
            "draft.created",
            "file.uploaded",
            "file.uploaded",
            "file.deleted",
            "version.published",
            "version.labeled"
        ]
    );
    let published = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "version.published")
        .unwrap();
    assert_eq!(published["details"]["labels"]["channel"], "beta");
    assert_eq!(published["details"]["files"][0]["name"], "a.bin");
}
