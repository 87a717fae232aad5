//! Webhook rules with no I/O: which targets are allowed, which events a webhook takes,
//! the retry schedule and the signature.

use crate::domain::events::{Event, EventType};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const WEBHOOK_ID_PREFIX: &str = "wh_";
/// Retries stop this long after an event's first attempt; the delivery is then `failed`.
pub const RETRY_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// The longest wait between two attempts.
pub const MAX_BACKOFF_MS: i64 = 3600 * 1000;
const FIRST_BACKOFF_MS: i64 = 1000;
pub const MIN_SECRET_LEN: usize = 16;
pub const MAX_SECRET_LEN: usize = 256;
pub const MAX_URL_LEN: usize = 2048;
pub const MAX_EVENT_TYPES: usize = 32;

pub fn is_webhook_id(s: &str) -> bool {
    s.strip_prefix(WEBHOOK_ID_PREFIX).is_some_and(|h| {
        h.len() == 16
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// Why a target URL is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    Invalid(String),
    Private(IpAddr),
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetError::Invalid(why) => f.write_str(why),
            TargetError::Private(ip) => write!(
                f,
                "the webhook target resolves to {ip}, a loopback, private, link-local or metadata address (set DEPOT_WEBHOOK_ALLOW_PRIVATE=true to allow it)"
            ),
        }
    }
}

/// Checks a target URL's shape: http(s), a host, no user info, no fragment. When the
/// host is an IP literal it is checked too (`allow_private` lifts that check).
pub fn check_target(url: &str, allow_private: bool) -> Result<url::Url, TargetError> {
    if url.len() > MAX_URL_LEN {
        return Err(TargetError::Invalid(format!(
            "the webhook url is longer than {MAX_URL_LEN} bytes"
        )));
    }
    let parsed = url::Url::parse(url)
        .map_err(|e| TargetError::Invalid(format!("the webhook url is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(TargetError::Invalid(
            "the webhook url must be http or https".into(),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(TargetError::Invalid(
            "the webhook url must not carry user info (put credentials in the secret)".into(),
        ));
    }
    if parsed.fragment().is_some() {
        return Err(TargetError::Invalid(
            "the webhook url must not have a fragment".into(),
        ));
    }
    match parsed.host() {
        None => return Err(TargetError::Invalid("the webhook url has no host".into())),
        Some(url::Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allow_private)?,
        Some(url::Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allow_private)?,
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if !allow_private && (d == "localhost" || d.ends_with(".localhost")) {
                return Err(TargetError::Private(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            }
        }
    }
    Ok(parsed)
}

/// Refuses loopback, private, link-local, unspecified, shared (CGNAT), multicast and
/// cloud-metadata addresses, also when wrapped in IPv6 (mapped, NAT64, 6to4).
pub fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), TargetError> {
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(TargetError::Private(ip))
    }
}

pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254.0.0/16: the cloud metadata service lives here
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address inside.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || ip.to_ipv4().is_some_and(|v4| !is_public_v4(v4)))
}

/// The event types a webhook subscribes to: `["*"]` or a list of known types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    All,
    Only(Vec<EventType>),
}

impl Subscription {
    pub fn parse(types: &[String]) -> Result<Subscription, String> {
        if types.is_empty() {
            return Err("events must name at least one event type, or be [\"*\"]".into());
        }
        if types.len() > MAX_EVENT_TYPES {
            return Err(format!("events may list at most {MAX_EVENT_TYPES} types"));
        }
        if types.iter().any(|t| t == "*") {
            return if types.len() == 1 {
                Ok(Subscription::All)
            } else {
                Err("\"*\" cannot be combined with other event types".into())
            };
        }
        let mut out = Vec::new();
        for t in types {
            let kind = EventType::parse(t).ok_or_else(|| {
                let shown: String = t.chars().take(64).flat_map(char::escape_default).collect();
                format!("unknown event type '{shown}'")
            })?;
            if !out.contains(&kind) {
                out.push(kind);
            }
        }
        Ok(Subscription::Only(out))
    }

    pub fn as_strings(&self) -> Vec<String> {
        match self {
            Subscription::All => vec!["*".to_string()],
            Subscription::Only(types) => types.iter().map(|t| t.as_str().to_string()).collect(),
        }
    }
}

/// Whether a webhook with these settings takes `event`.
pub fn wants(types: &[String], product: Option<&str>, event: &Event) -> bool {
    let type_ok = types.iter().any(|t| t == "*" || t == event.kind.as_str());
    let product_ok = product.is_none_or(|p| event.product.as_deref() == Some(p));
    type_ok && product_ok
}

/// When to try again after `attempts` failed attempts: 1 s, 2 s, 4 s ... up to an hour.
pub fn backoff_ms(attempts: u32) -> i64 {
    let exp = attempts.saturating_sub(1).min(20);
    (FIRST_BACKOFF_MS << exp).min(MAX_BACKOFF_MS)
}

/// `X-Depot-Signature-256`: `sha256=<hex HMAC-SHA256(secret, body)>` (GitHub's scheme).
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_metadata_targets_are_refused() {
        for bad in [
            "http://127.0.0.1/h",
            "http://10.1.2.3/h",
            "http://172.16.0.1/h",
            "http://192.168.1.1/h",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/h",
            "http://0.0.0.0/h",
            "http://[::1]/h",
            "http://[fd00::1]/h",
            "http://[fe80::1]/h",
            "http://[::ffff:127.0.0.1]/h",
            "http://[64:ff9b::a9fe:a9fe]/h",
            "http://[2002:7f00:1::]/h",
            "http://localhost:8080/h",
            "http://api.localhost/h",
        ] {
            assert!(
                matches!(check_target(bad, false), Err(TargetError::Private(_))),
                "{bad}"
            );
            assert!(
                check_target(bad, true).is_ok(),
                "{bad} with private allowed"
            );
        }
        assert!(check_target("https://hooks.example.com/depot", false).is_ok());
        assert!(check_target("http://93.184.216.34/h", false).is_ok());
    }

    #[test]
    fn only_plain_http_urls_are_targets() {
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "not a url",
            "gopher://example.com",
        ] {
            assert!(
                matches!(check_target(bad, true), Err(TargetError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn subscriptions_take_known_types_or_a_lone_star() {
        assert_eq!(Subscription::parse(&["*".into()]), Ok(Subscription::All));
        assert!(Subscription::parse(&["*".into(), "version.published".into()]).is_err());
        assert!(Subscription::parse(&[]).is_err());
        assert!(Subscription::parse(&["version.nope".into()]).is_err());
        assert_eq!(
            Subscription::parse(&["version.published".into(), "version.published".into()]),
            Ok(Subscription::Only(vec![EventType::VersionPublished]))
        );
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff_ms(1), 1000);
        assert_eq!(backoff_ms(2), 2000);
        assert_eq!(backoff_ms(5), 16_000);
        assert_eq!(backoff_ms(40), MAX_BACKOFF_MS);
    }

    #[test]
    fn the_signature_is_githubs_hmac_sha256_scheme() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
