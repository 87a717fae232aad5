//! The permission matrix. Admin passes everything; everything else depends on the
//! caller's grant on the product.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grant {
    pub maintainer: bool,
    pub download: bool,
    pub upload: bool,
    pub delete: bool,
}

impl Grant {
    pub const ALL: Grant = Grant {
        maintainer: true,
        download: true,
        upload: true,
        delete: true,
    };

    /// True when no flag is set. Such a grant gives nothing, not even visibility: the API
    /// refuses to store one (`empty_grant`) and `decide` treats one from old data as none.
    pub fn is_empty(&self) -> bool {
        !(self.maintainer || self.download || self.upload || self.delete)
    }

    /// True when every flag of `self` is also set in `other`.
    pub fn is_subset_of(&self, other: &Grant) -> bool {
        (!self.maintainer || other.maintainer)
            && (!self.download || other.download)
            && (!self.upload || other.upload)
            && (!self.delete || other.delete)
    }
}

/// A grant as a client sends it (`addToken`, `PUT /register`): an unknown key such as
/// `downlaod` is an error instead of being ignored. Stores keep [`Grant`], which stays lenient.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrantInput {
    pub maintainer: bool,
    pub download: bool,
    pub upload: bool,
    pub delete: bool,
}

impl From<GrantInput> for Grant {
    fn from(g: GrantInput) -> Self {
        Grant {
            maintainer: g.maintainer,
            download: g.download,
            upload: g.upload,
            delete: g.delete,
        }
    }
}

/// Operations on a product that need a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductOp {
    Fetch,
    DeleteProduct,
    ManageTokens,
    DeleteVersion,
    Upload,
    Download,
    /// Read the product's audit events (`GET /audit?product=`).
    ReadAudit,
    /// Create, list and delete the product's webhooks.
    ManageWebhooks,
    /// Change a version's labels (promote it to a channel).
    Label,
    /// Read and change retention settings, preview and run retention.
    Lifecycle,
    /// Add, list and remove trust policies (trusted publishing).
    ManageTrust,
}

impl ProductOp {
    pub fn allowed_by(self, grant: &Grant) -> bool {
        match self {
            ProductOp::Fetch => true,
            ProductOp::DeleteProduct | ProductOp::DeleteVersion => grant.maintainer || grant.delete,
            ProductOp::ManageTokens
            | ProductOp::ReadAudit
            | ProductOp::ManageWebhooks
            | ProductOp::Label
            | ProductOp::Lifecycle
            | ProductOp::ManageTrust => grant.maintainer,
            ProductOp::Upload => grant.upload,
            ProductOp::Download => grant.download,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            ProductOp::Fetch => "read this product",
            ProductOp::DeleteProduct => "delete this product (needs maintainer or delete)",
            ProductOp::ManageTokens => "manage this product's tokens (needs maintainer)",
            ProductOp::DeleteVersion => "delete versions (needs maintainer or delete)",
            ProductOp::Upload => "upload (needs upload)",
            ProductOp::Download => "download (needs download)",
            ProductOp::ReadAudit => "read this product's audit log (needs maintainer)",
            ProductOp::ManageWebhooks => "manage this product's webhooks (needs maintainer)",
            ProductOp::Label => "change version labels (needs maintainer)",
            ProductOp::Lifecycle => "manage retention settings and runs (needs maintainer)",
            ProductOp::ManageTrust => "manage this product's trust policies (needs maintainer)",
        }
    }
}

/// The outcome of a permission check on a product.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No grant at all: answer as if the product did not exist.
    Hidden,
    /// A grant without the needed flag.
    Deny,
}

pub fn decide(is_admin: bool, grant: Option<&Grant>, op: ProductOp) -> Decision {
    if is_admin {
        return Decision::Allow;
    }
    match grant {
        None => Decision::Hidden,
        // An all-false grant (refused by the API, but possibly in old data) is no grant.
        Some(g) if g.is_empty() => Decision::Hidden,
        Some(g) if op.allowed_by(g) => Decision::Allow,
        Some(_) => Decision::Deny,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(flag: &str) -> Grant {
        Grant {
            maintainer: flag == "maintainer",
            download: flag == "download",
            upload: flag == "upload",
            delete: flag == "delete",
        }
    }

    #[test]
    fn matrix_matches_the_contract() {
        use ProductOp::*;
        let cases = [
            (DeleteProduct, ["maintainer", "delete"].as_slice()),
            (DeleteVersion, &["maintainer", "delete"]),
            (ManageTokens, &["maintainer"]),
            (ReadAudit, &["maintainer"]),
            (ManageWebhooks, &["maintainer"]),
            (Label, &["maintainer"]),
            (Upload, &["upload"]),
            (Download, &["download"]),
            (Fetch, &["maintainer", "download", "upload", "delete"]),
        ];
        for (op, allowed) in cases {
            for flag in ["maintainer", "download", "upload", "delete"] {
                let expect = if allowed.contains(&flag) {
                    Decision::Allow
                } else {
                    Decision::Deny
                };
                assert_eq!(
                    decide(false, Some(&only(flag)), op),
                    expect,
                    "{op:?} {flag}"
                );
            }
            assert_eq!(decide(false, None, op), Decision::Hidden);
            assert_eq!(decide(false, Some(&Grant::default()), op), Decision::Hidden);
            assert_eq!(decide(true, None, op), Decision::Allow);
        }
    }

    #[test]
    fn subset_check() {
        assert!(only("download").is_subset_of(&Grant::ALL));
        assert!(!Grant::ALL.is_subset_of(&only("download")));
        assert!(Grant::default().is_subset_of(&Grant::default()));
    }
}
