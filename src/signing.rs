//! Depot-signed download URLs for stores that cannot presign (the filesystem): an HMAC
//! over product, version, the version's blob key, the issuing token's public id and the
//! expiry, checked by `GET /signed/{product}/{version}`. Binding the blob key makes a link
//! die with the upload it was made for (a delete, or a re-upload under the same version);
//! binding the token lets the handler refuse links of revoked or expired tokens.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a signed link grants access to.
#[derive(Debug, Clone, Copy)]
pub struct SignedTarget<'a> {
    pub product: &'a str,
    pub version: &'a str,
    pub blob_key: &'a str,
    pub token_id: &'a str,
    /// Unix seconds.
    pub expires: i64,
}

#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
}

impl UrlSigner {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    fn mac(&self, t: &SignedTarget<'_>) -> Hmac<Sha256> {
        // Hmac accepts keys of any length; new_from_slice cannot fail for it.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        // Every part is length-prefixed, so no two different targets share an input.
        let expires = t.expires.to_string();
        for part in [
            t.product,
            t.version,
            t.blob_key,
            t.token_id,
            expires.as_str(),
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    pub fn sign(&self, target: &SignedTarget<'_>) -> String {
        hex::encode(self.mac(target).finalize().into_bytes())
    }

    /// Constant-time check of a signature; `now` in unix seconds.
    pub fn verify(&self, target: &SignedTarget<'_>, signature: &str, now: i64) -> bool {
        let Ok(sig) = hex::decode(signature) else {
            return false;
        };
        let valid = self.mac(target).verify_slice(&sig).is_ok();
        valid && target.expires >= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(
        version: &str,
        blob_key: &str,
        token_id: &str,
        expires: i64,
    ) -> SignedTarget<'static> {
        SignedTarget {
            product: "p",
            version: version.to_string().leak(),
            blob_key: blob_key.to_string().leak(),
            token_id: token_id.to_string().leak(),
            expires,
        }
    }

    #[test]
    fn signatures_bind_product_version_blob_token_and_expiry() {
        let s = UrlSigner::new(b"k".repeat(32));
        let t = target("v1", "b1", "tok_1", 100);
        let sig = s.sign(&t);
        assert!(s.verify(&t, &sig, 50));
        assert!(!s.verify(&t, &sig, 101), "expired");
        assert!(!s.verify(&target("v2", "b1", "tok_1", 100), &sig, 50));
        assert!(!s.verify(&target("v1", "b2", "tok_1", 100), &sig, 50));
        assert!(!s.verify(&target("v1", "b1", "tok_2", 100), &sig, 50));
        assert!(!s.verify(&target("v1", "b1", "tok_1", 101), &sig, 50));
        assert!(!s.verify(&t, "zz", 50));
        assert!(!UrlSigner::new(b"other".repeat(8)).verify(&t, &sig, 50));
    }
}
