//! Request and response bodies that the server writes and the CLI reads: one definition,
//! so a renamed field breaks the build, not a script.

use serde::{Deserialize, Serialize};

/// `POST /product/upload`'s 201 body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadResult {
    pub product: String,
    pub version: String,
    pub file_name: String,
    pub size: u64,
    /// `sha256:<hex>`.
    pub checksum: String,
}

/// One version as product fetch and the version listing show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub path: String,
    pub file_name: String,
    pub size: u64,
    /// `sha256:<hex>`.
    pub checksum: String,
    pub uploaded_at: String,
    pub uploaded_by: String,
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
