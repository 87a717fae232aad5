//! Request and response bodies that the server writes and the CLI reads: one definition,
//! so a renamed field breaks the build, not a script.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The 201 body of `POST /product/upload` (a published version; `file_name`, `size` and
/// `checksum` describe its primary file, `files` every file) and of
/// `PUT /product/upload/{product}/{version}/{file}` (one file added to a draft).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadResult {
    pub product: String,
    pub version: String,
    pub file_name: String,
    pub size: u64,
    /// `sha256:<hex>`.
    pub checksum: String,
    /// `published` or `draft`.
    #[serde(default)]
    pub state: String,
    /// Every file the request stored (the seed upload); absent for a draft file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileInfo>,
}

/// One file of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    pub name: String,
    pub size: u64,
    /// `sha256:<hex>`.
    pub checksum: String,
    pub uploaded_at: String,
    /// Public id of the token that uploaded it.
    pub uploaded_by: String,
}

/// `POST /product/publish/{product}/{version}`'s optional body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// When given, the draft's files must be exactly these names (409 `files_mismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `PUT /product/labels/{product}/{version}`'s 200 body: the version's labels after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelsResult {
    pub product: String,
    pub version: String,
    pub labels: BTreeMap<String, String>,
}

/// One version as product fetch and the version listing show it: `path`, `file_name`,
/// `size` and `checksum` are its primary file's (the seed's shape), `files` all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub path: String,
    pub file_name: String,
    pub size: u64,
    /// `sha256:<hex>`.
    pub checksum: String,
    pub uploaded_at: String,
    pub uploaded_by: String,
    /// `published` or `draft` (drafts are listed only for tokens that may upload).
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub files: Vec<FileInfo>,
    /// When a download (or a link to one) was last recorded: at most hourly, for the
    /// retention rule `not_downloaded_days`. Absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_downloaded_at: Option<String>,
}

/// An entry of `GET /product/versions/{product}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedVersion {
    pub version: String,
    #[serde(flatten)]
    pub info: VersionInfo,
}

/// `GET /product/versions/{product}`'s body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionPage {
    pub versions: Vec<ListedVersion>,
    pub next_cursor: Option<String>,
}

/// What the API shows of a stored file.
pub fn file_info(f: &crate::meta::FileRecord) -> FileInfo {
    FileInfo {
        name: f.name.clone(),
        size: f.size,
        checksum: format!("sha256:{}", f.checksum),
        uploaded_at: chrono::DateTime::from_timestamp_millis(f.uploaded_at)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        uploaded_by: f.uploaded_by.clone(),
    }
}
