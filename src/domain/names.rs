//! Validation of product, version and file names. Anything that could escape a
//! directory or a key prefix is refused here, before any I/O happens.

/// Version names with a meaning of their own; they cannot be uploaded.
pub const RESERVED_VERSIONS: &[&str] = &["latest"];

#[derive(Debug, PartialEq, Eq)]
pub enum NameError {
    Invalid(String),
    Reserved(String),
}

/// `^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`, and never `.`/`..`-like (the first char rules those out).
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 128 || !bytes[0].is_ascii_alphanumeric() {
        return false;
    }
    bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

pub fn validate_product(name: &str) -> Result<(), NameError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(NameError::Invalid(format!(
            "invalid product name '{}': use 1-128 characters from A-Z a-z 0-9 . _ + -, starting with a letter or digit",
            printable(name)
        )))
    }
}

pub fn validate_version(name: &str) -> Result<(), NameError> {
    if !is_valid_name(name) {
        return Err(NameError::Invalid(format!(
            "invalid version '{}': use 1-128 characters from A-Z a-z 0-9 . _ + -, starting with a letter or digit",
            printable(name)
        )));
    }
    Ok(())
}

/// A version name that may be uploaded: valid and not reserved.
pub fn validate_new_version(name: &str) -> Result<(), NameError> {
    validate_version(name)?;
    if RESERVED_VERSIONS.contains(&name) {
        return Err(NameError::Reserved(format!(
            "'{name}' is a reserved version name"
        )));
    }
    Ok(())
}

/// Reduces a client-supplied file name to a safe base name: the last path component
/// (either separator), without control characters. `None` when nothing safe is left
/// or the name tries to climb (`..`), raw or percent-encoded (`..%2F`, `%2e%2e`).
pub fn sanitize_file_name(raw: &str) -> Option<String> {
    let climbs =
        |name: &str| name.split(['/', '\\']).any(|part| part.trim() == "..") || name.trim() == ".";
    if climbs(raw) || climbs(&percent_decoded(raw)) {
        return None;
    }
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && !is_format_character(*c) && *c != '"')
        .collect();
    let cleaned = cleaned.trim();
    // The base name itself, raw or decoded, must not be a dot name either (`%2e\%2e`).
    if cleaned.is_empty()
        || cleaned.len() > 255
        || climbs(cleaned)
        || climbs(&percent_decoded(cleaned))
    {
        return None;
    }
    Some(cleaned.to_string())
}

/// `Content-Disposition` of a download: the stored name, ASCII-only in `filename` and
/// RFC 6266 `filename*` for the rest.
pub fn content_disposition(file_name: &str) -> String {
    // Names are sanitised at upload (no quotes or control characters); non-ASCII goes
    // in the RFC 6266 filename* form.
    let ascii: String = file_name
        .chars()
        .map(|c| if c.is_ascii() && c != '\\' { c } else { '_' })
        .collect();
    let encoded: String = file_name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// `s` safe to print on a terminal: control and format characters become `?`.
pub fn terminal_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || is_format_character(c) {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// Invisible format characters (Unicode category Cf) that change how a name displays:
/// bidi overrides and isolates (U+202E shows `exe.txt` as `txt.exe`), zero-width
/// characters, the BOM, soft hyphens. Stripped from uploaded names; the CLI refuses
/// server-chosen names with them.
pub fn is_format_character(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{0600}'..='\u{0605}'
        | '\u{061C}'
        | '\u{06DD}'
        | '\u{070F}'
        | '\u{0890}'..='\u{0891}'
        | '\u{08E2}'
        | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{110BD}'
        | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}')
}

/// `raw` with `%XX` escapes decoded, a few rounds deep so double encoding hides nothing.
fn percent_decoded(raw: &str) -> String {
    let mut current = raw.to_string();
    for _ in 0..3 {
        let bytes = current.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                bytes[i],
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (b'%', Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                (b, _, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        let decoded = String::from_utf8_lossy(&out).into_owned();
        if decoded == current {
            break;
        }
        current = decoded;
    }
    current
}

/// A name for messages: control characters escaped, long names cut.
fn printable(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect();
    if name.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// What a name keeps unescaped in one URL path segment (RFC 3986 unreserved characters):
/// everything else is percent-encoded, so `/`, `?`, `#` and `%` stay data.
pub const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_typical_names() {
        for name in ["my-lib", "v1.0.0", "1.2.3+build.5", "A_b.c-d", "x"] {
            assert!(is_valid_name(name), "{name}");
        }
    }

    #[test]
    fn rejects_traversal_and_odd_characters() {
        for name in [
            "", ".", "..", "../etc", "a/b", "a\\b", "-x", ".hidden", "a b", "é", "a%2Fb",
        ] {
            assert!(!is_valid_name(name), "{name:?}");
        }
        assert!(!is_valid_name(&"a".repeat(129)));
        assert!(is_valid_name(&"a".repeat(128)));
    }

    #[test]
    fn latest_is_reserved_for_uploads() {
        assert!(matches!(
            validate_new_version("latest"),
            Err(NameError::Reserved(_))
        ));
        assert!(validate_version("latest").is_ok());
    }

    #[test]
    fn file_names_are_reduced_to_a_safe_base_name() {
        assert_eq!(
            sanitize_file_name("dir/sub/app.tar.gz").as_deref(),
            Some("app.tar.gz")
        );
        assert_eq!(
            sanitize_file_name("C:\\x\\app.zip").as_deref(),
            Some("app.zip")
        );
        assert_eq!(sanitize_file_name("a\u{0}b\nc").as_deref(), Some("abc"));
        assert_eq!(sanitize_file_name("../../etc/passwd"), None);
        assert_eq!(sanitize_file_name(".."), None);
        assert_eq!(sanitize_file_name("dir/"), None);
        for encoded in [
            "..%2F..%2Fetc%2Fpasswd",
            "%2e%2e",
            "%2E%2E%2Fx",
            "%2e",
            "%252e%252e%252fetc",
            "..%5Cx",
            "a/%2e%2e/b",
            "%2e\\%2e",
        ] {
            assert_eq!(sanitize_file_name(encoded), None, "{encoded}");
        }
        assert_eq!(
            sanitize_file_name("my%20file.tgz").as_deref(),
            Some("my%20file.tgz")
        );
        assert_eq!(sanitize_file_name("100%.bin").as_deref(), Some("100%.bin"));
    }

    #[test]
    fn bidi_and_other_format_characters_are_stripped_from_file_names() {
        assert_eq!(
            sanitize_file_name("invoice\u{202E}fdp.exe").as_deref(),
            Some("invoicefdp.exe")
        );
        assert_eq!(
            sanitize_file_name("\u{FEFF}a\u{200B}b\u{2066}c\u{2069}.bin").as_deref(),
            Some("abc.bin")
        );
        assert_eq!(sanitize_file_name("\u{202E}\u{200F}"), None);
        assert_eq!(
            sanitize_file_name("naïve €.tgz").as_deref(),
            Some("naïve €.tgz")
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// What `is_valid_name` promises, spelled out independently.
        fn matches_the_name_pattern(name: &str) -> bool {
            let mut chars = name.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
                && name.len() <= 128
                && chars.all(|c| c.is_ascii_alphanumeric() || ".-_+".contains(c))
        }

        /// A safe base name: no separator, no control character or quote, not a dot
        /// name, trimmed, and nothing that climbs once percent-decoded.
        fn is_safe_base_name(name: &str) -> bool {
            let decoded = percent_decoded(name);
            !name.is_empty()
                && name.len() <= 255
                && name == name.trim()
                && name != "."
                && name != ".."
                && !name.contains(['/', '\\', '"'])
                && !name
                    .chars()
                    .any(|c| c.is_control() || is_format_character(c))
                && !decoded
                    .split(['/', '\\'])
                    .any(|part| part.trim() == ".." || part.trim() == ".")
        }

        proptest! {
            #[test]
            fn any_text_is_judged_as_a_name_without_panic_and_by_the_pattern(raw in any::<String>()) {
                prop_assert_eq!(is_valid_name(&raw), matches_the_name_pattern(&raw));
                prop_assert_eq!(validate_product(&raw).is_ok(), is_valid_name(&raw));
                prop_assert_eq!(validate_version(&raw).is_ok(), is_valid_name(&raw));
                if validate_new_version(&raw).is_ok() {
                    prop_assert!(is_valid_name(&raw) && raw != "latest");
                }
            }

            #[test]
            fn every_name_of_the_pattern_is_accepted(name in "[A-Za-z0-9][A-Za-z0-9._+-]{0,127}") {
                prop_assert!(is_valid_name(&name));
                prop_assert!(validate_product(&name).is_ok());
                prop_assert_eq!(validate_new_version(&name).is_ok(), name != "latest");
            }

            #[test]
            fn sanitized_file_names_are_safe_base_names_and_stay_as_they_are(raw in any::<String>()) {
                if let Some(name) = sanitize_file_name(&raw) {
                    prop_assert!(is_safe_base_name(&name), "{raw:?} -> {name:?}");
                    prop_assert_eq!(sanitize_file_name(&name), Some(name.clone()));
                }
            }

            #[test]
            fn path_like_file_names_sanitize_without_panic_to_safe_base_names(
                raw in "([a-z.%25 ]{0,4}|\\.\\.|%2[eEfF]|%5[cC]|\\x00|\\n)([/\\\\]([a-z.%25 ]{0,4}|\\.\\.|%2[eEfF]|%252[eE]|\\x01)){0,5}",
            ) {
                if let Some(name) = sanitize_file_name(&raw) {
                    prop_assert!(is_safe_base_name(&name), "{raw:?} -> {name:?}");
                    prop_assert_eq!(sanitize_file_name(&name), Some(name.clone()));
                }
            }
        }
    }
}
