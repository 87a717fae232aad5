//! Depot-signed download URLs for stores that cannot presign (the filesystem): an HMAC
//! over product, version and expiry, checked by `GET /signed/{product}/{version}`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
}

impl UrlSigner {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    fn mac(&self, product: &str, version: &str, expires: i64) -> Hmac<Sha256> {
        // Hmac accepts keys of any length; new_from_slice cannot fail for it.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(product.as_bytes());
        mac.update(b"\0");
        mac.update(version.as_bytes());
        mac.update(b"\0");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    pub fn sign(&self, product: &str, version: &str, expires: i64) -> String {
        hex::encode(self.mac(product, version, expires).finalize().into_bytes())
    }

    /// Constant-time check of a signature; `now` in unix seconds.
    pub fn verify(
        &self,
        product: &str,
        version: &str,
        expires: i64,
        signature: &str,
        now: i64,
    ) -> bool {
        if expires < now {
            return false;
        }
        let Ok(sig) = hex::decode(signature) else {
            return false;
        };
        self.mac(product, version, expires)
            .verify_slice(&sig)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_product_version_and_expiry() {
        let s = UrlSigner::new(b"k".to_vec());
        let sig = s.sign("p", "v1", 100);
        assert!(s.verify("p", "v1", 100, &sig, 50));
        assert!(!s.verify("p", "v1", 100, &sig, 101), "expired");
        assert!(!s.verify("p", "v2", 100, &sig, 50));
        assert!(!s.verify("p", "v1", 101, &sig, 50));
        assert!(!s.verify("p", "v1", 100, "zz", 50));
        assert!(!UrlSigner::new(b"other".to_vec()).verify("p", "v1", 100, &sig, 50));
    }
}
