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
/// or the name tries to climb (`..`).
pub fn sanitize_file_name(raw: &str) -> Option<String> {
    if raw.split(['/', '\\']).any(|part| part == "..") {
        return None;
    }
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." || cleaned.len() > 255 {
        return None;
    }
    Some(cleaned.to_string())
}

/// A name for messages: control characters escaped, long names cut.
fn printable(name: &str) -> String {
    let mut out: String = name.chars().take(64).flat_map(char::escape_default).collect();
    if name.chars().count() > 64 {
        out.push('…');
    }
    out
}

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
        for name in ["", ".", "..", "../etc", "a/b", "a\\b", "-x", ".hidden", "a b", "é", "a%2Fb"] {
            assert!(!is_valid_name(name), "{name:?}");
        }
        assert!(!is_valid_name(&"a".repeat(129)));
        assert!(is_valid_name(&"a".repeat(128)));
    }

    #[test]
    fn latest_is_reserved_for_uploads() {
        assert!(matches!(validate_new_version("latest"), Err(NameError::Reserved(_))));
        assert!(validate_version("latest").is_ok());
    }

    #[test]
    fn file_names_are_reduced_to_a_safe_base_name() {
        assert_eq!(sanitize_file_name("dir/sub/app.tar.gz").as_deref(), Some("app.tar.gz"));
        assert_eq!(sanitize_file_name("C:\\x\\app.zip").as_deref(), Some("app.zip"));
        assert_eq!(sanitize_file_name("a\u{0}b\nc").as_deref(), Some("abc"));
        assert_eq!(sanitize_file_name("../../etc/passwd"), None);
        assert_eq!(sanitize_file_name(".."), None);
        assert_eq!(sanitize_file_name("dir/"), None);
    }
}
