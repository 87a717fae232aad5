//! A streaming `multipart/form-data` reader with hard limits, for hostile bodies.
//!
//! Everything outside the artifact (preamble, boundary lines, part headers, text fields)
//! shares one small budget ([`ENVELOPE_LIMIT`]); the artifact's own bytes are handed out as
//! they arrive, as slices of the body's chunks (no copy), and never buffered. The whole body
//! has a byte limit, the number of text parts a count limit, and every read an idle timeout.
//! A part header that never ends, a body without a first boundary or megabytes of text
//! fields are refused once they pass the budget, with memory bounded by it.
//!
//! The boundary search is linear: every byte of the body is searched once, plus the few
//! bytes of a delimiter split across two chunks.

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use memchr::memmem;
use std::time::Duration;

/// Bytes a request may spend outside the file field: preamble, boundary lines, part
/// headers and text fields together.
pub const ENVELOPE_LIMIT: usize = 64 * 1024;
/// Parts other than files a form may have: the name fields, a checksum, up to 32 labels.
pub const MAX_TEXT_PARTS: usize = 48;
/// Reads and drops what is left of a refused request's body, for up to 2 s or 64 MiB, so
/// the client gets to read the error response (closing a socket with unread data sends
/// an RST that can destroy the response before the client reads it).
pub async fn drain<S, E>(body: &mut S)
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
{
    const CAP: usize = 64 * 1024 * 1024;
    let mut seen = 0usize;
    let drained = async {
        while seen <= CAP {
            match body.next().await {
                Some(Ok(chunk)) => seen += chunk.len(),
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drained).await;
}

/// RFC 2046: a boundary is 1 to 70 characters.
const MAX_BOUNDARY: usize = 70;
/// Headers one part may have.
const MAX_PART_HEADERS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// Not `multipart/form-data`, or no usable boundary.
    NotMultipart(&'static str),
    Malformed(&'static str),
    /// Preamble, headers and text fields passed [`ENVELOPE_LIMIT`].
    EnvelopeTooLarge,
    /// More than [`MAX_TEXT_PARTS`] parts besides the file.
    TooManyParts,
    /// The body passed its byte limit.
    BodyTooLarge,
    /// No byte arrived within the idle timeout.
    Idle,
    /// The body could not be read (the client went away, a transport error).
    Read(String),
}

impl std::fmt::Display for FormError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormError::NotMultipart(why) | FormError::Malformed(why) => f.write_str(why),
            FormError::EnvelopeTooLarge => write!(
                f,
                "the form's headers and text fields exceed {ENVELOPE_LIMIT} bytes"
            ),
            FormError::TooManyParts => {
                write!(
                    f,
                    "the form has more than {MAX_TEXT_PARTS} fields besides the file"
                )
            }
            FormError::BodyTooLarge => f.write_str("the request body exceeds the upload limit"),
            FormError::Idle => f.write_str("no data arrived within the upload idle timeout"),
            FormError::Read(cause) => write!(f, "the request body could not be read: {cause}"),
        }
    }
}

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Result<String, FormError> {
    let mut params = content_type.split(';');
    let media = params.next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return Err(FormError::NotMultipart(
            "expected a multipart/form-data body",
        ));
    }
    for param in params {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("boundary") {
            continue;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let valid = !value.is_empty()
            && value.len() <= MAX_BOUNDARY
            && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            && !value.ends_with(' ');
        if !valid {
            return Err(FormError::NotMultipart(
                "the multipart boundary must be 1 to 70 printable characters",
            ));
        }
        return Ok(value.to_string());
    }
    Err(FormError::NotMultipart(
        "the multipart/form-data content type has no boundary",
    ))
}

/// One part's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    /// The raw `filename` (or decoded `filename*`) parameter, unsanitised.
    pub file_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside a part's content (or the preamble, before the first delimiter).
    Content,
    /// Right after a delimiter: either `--` (the end) or a new part's headers follow.
    AfterDelimiter,
    Done,
}

pub struct FormReader<S> {
    body: S,
    /// Received, not yet consumed bytes.
    pending: Bytes,
    /// `\r\n--` + boundary: what ends every part.
    delimiter: Vec<u8>,
    state: State,
    /// Whether the current content counts against the envelope (everything but the file).
    counted: bool,
    file_field: &'static str,
    envelope_left: usize,
    text_parts_left: usize,
    body_left: u64,
    idle: Duration,
    eof: bool,
}

impl<S, E> FormReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    /// A reader of `body`; the content of parts named `file_field` is not counted against
    /// the envelope, everything else is.
    pub fn new(
        body: S,
        boundary: &str,
        file_field: &'static str,
        body_limit: u64,
        idle: Duration,
    ) -> Self {
        Self {
            body,
            // The first delimiter may open the body without a line break before it.
            pending: Bytes::from_static(b"\r\n"),
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            state: State::Content,
            counted: true,
            file_field,
            envelope_left: ENVELOPE_LIMIT,
            text_parts_left: MAX_TEXT_PARTS,
            body_left: body_limit,
            idle,
            eof: false,
        }
    }

    /// The next part's headers, skipping what is left of the current part; `None` after
    /// the closing delimiter.
    pub async fn next_part(&mut self) -> Result<Option<Part>, FormError> {
        while self.state == State::Content {
            self.chunk().await?;
        }
        if self.state == State::Done {
            return Ok(None);
        }
        self.fill_to(2).await?;
        if self.pending.starts_with(b"--") {
            self.state = State::Done;
            return Ok(None);
        }
        // The rest of the boundary line: optional whitespace (RFC 2046 transport padding), CRLF.
        let line_end = self.find_in_pending(b"\r\n").await?;
        if !self.pending[..line_end]
            .iter()
            .all(|b| *b == b' ' || *b == b'\t')
        {
            return Err(FormError::Malformed(
                "malformed multipart body: junk after a boundary",
            ));
        }
        self.consume_envelope(line_end + 2)?;
        let part = if self.pending.starts_with(b"\r\n") {
            self.consume_envelope(2)?;
            return Err(FormError::Malformed(
                "malformed multipart body: a part without Content-Disposition",
            ));
        } else {
            let end = self.find_in_pending(b"\r\n\r\n").await? + 4;
            let part = parse_part_headers(&self.pending[..end])?;
            self.consume_envelope(end)?;
            part
        };
        self.counted = part.name != self.file_field;
        if self.counted {
            if self.text_parts_left == 0 {
                return Err(FormError::TooManyParts);
            }
            self.text_parts_left -= 1;
        }
        self.state = State::Content;
        Ok(Some(part))
    }

    /// The next piece of the current part's content; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, FormError> {
        loop {
            if self.state != State::Content {
                return Ok(None);
            }
            if let Some(at) = memmem::find(&self.pending, &self.delimiter) {
                let data = self.pending.split_to(at);
                self.pending.advance(self.delimiter.len());
                self.state = State::AfterDelimiter;
                self.count(data.len())?;
                if data.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(data));
            }
            // No delimiter: all but a possible delimiter start at the end is content.
            let keep = self.delimiter.len() - 1;
            if self.pending.len() > keep {
                let data = self.pending.split_to(self.pending.len() - keep);
                self.count(data.len())?;
                return Ok(Some(data));
            }
            let Some(incoming) = self.read().await? else {
                return Err(FormError::Malformed(
                    "malformed multipart body: it ends inside a part",
                ));
            };
            if self.pending.is_empty() {
                self.pending = incoming;
                continue;
            }
            // A short tail is left. Unless a delimiter starts in it, hand it out as it is
            // and keep the new chunk whole, without copying it.
            // (A chunk shorter than that cannot tell: join it.)
            let tail_starts_delimiter = incoming.len() < keep || {
                let mut probe = BytesMut::with_capacity(self.pending.len() + keep);
                probe.extend_from_slice(&self.pending);
                probe.extend_from_slice(&incoming[..keep]);
                memmem::find(&probe, &self.delimiter).is_some_and(|at| at < self.pending.len())
            };
            if tail_starts_delimiter {
                let mut joined = BytesMut::with_capacity(self.pending.len() + incoming.len());
                joined.extend_from_slice(&self.pending);
                joined.extend_from_slice(&incoming);
                self.pending = joined.freeze();
            } else {
                let tail = std::mem::replace(&mut self.pending, incoming);
                self.count(tail.len())?;
                return Ok(Some(tail));
            }
        }
    }

    /// Reads (and drops) what is left of a refused body, for at most 2 s and 64 MiB, so a
    /// client still sending sees the error response instead of a connection reset (a close
    /// with unread data sends an RST, which destroys the response on its way).
    pub async fn drain_rest(&mut self) {
        drain(&mut self.body).await;
    }

    fn count(&mut self, len: usize) -> Result<(), FormError> {
        if self.counted {
            self.envelope_left = self
                .envelope_left
                .checked_sub(len)
                .ok_or(FormError::EnvelopeTooLarge)?;
        }
        Ok(())
    }

    fn consume_envelope(&mut self, len: usize) -> Result<(), FormError> {
        self.pending.advance(len);
        self.envelope_left = self
            .envelope_left
            .checked_sub(len)
            .ok_or(FormError::EnvelopeTooLarge)?;
        Ok(())
    }

    /// Reads until `pending` holds at least `len` bytes.
    async fn fill_to(&mut self, len: usize) -> Result<(), FormError> {
        while self.pending.len() < len {
            self.append().await?;
        }
        Ok(())
    }

    /// The offset of `needle` in `pending`, reading more (within the envelope) until it
    /// shows up.
    async fn find_in_pending(&mut self, needle: &[u8]) -> Result<usize, FormError> {
        let mut searched = 0usize;
        loop {
            let from = searched.saturating_sub(needle.len() - 1);
            if let Some(at) = memmem::find(&self.pending[from..], needle) {
                return Ok(from + at);
            }
            if self.pending.len() > self.envelope_left {
                return Err(FormError::EnvelopeTooLarge);
            }
            searched = self.pending.len();
            self.append().await?;
        }
    }

    /// Appends the next chunk to `pending` (a copy: only for the small envelope parts).
    async fn append(&mut self) -> Result<(), FormError> {
        let Some(incoming) = self.read().await? else {
            return Err(FormError::Malformed(
                "malformed multipart body: it ends inside a part header",
            ));
        };
        let mut joined = BytesMut::with_capacity(self.pending.len() + incoming.len());
        joined.extend_from_slice(&self.pending);
        joined.extend_from_slice(&incoming);
        self.pending = joined.freeze();
        Ok(())
    }

    /// The next non-empty chunk of the body, `None` at its end.
    async fn read(&mut self) -> Result<Option<Bytes>, FormError> {
        while !self.eof {
            match tokio::time::timeout(self.idle, self.body.next()).await {
                Err(_) => return Err(FormError::Idle),
                Ok(None) => self.eof = true,
                Ok(Some(Err(err))) => return Err(FormError::Read(err.to_string())),
                Ok(Some(Ok(chunk))) => {
                    self.body_left = self
                        .body_left
                        .checked_sub(chunk.len() as u64)
                        .ok_or(FormError::BodyTooLarge)?;
                    if !chunk.is_empty() {
                        return Ok(Some(chunk));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// Parses a part's header block (ending with the empty line).
fn parse_part_headers(block: &[u8]) -> Result<Part, FormError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_PART_HEADERS];
    let parsed = httparse::parse_headers(block, &mut headers)
        .map_err(|_| FormError::Malformed("malformed multipart body: unreadable part headers"))?;
    let httparse::Status::Complete((_, headers)) = parsed else {
        return Err(FormError::Malformed(
            "malformed multipart body: unreadable part headers",
        ));
    };
    let disposition = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-disposition"))
        .ok_or(FormError::Malformed(
            "malformed multipart body: a part without Content-Disposition",
        ))?;
    let value = std::str::from_utf8(disposition.value).map_err(|_| {
        FormError::Malformed("malformed multipart body: Content-Disposition is not UTF-8")
    })?;
    parse_disposition(value)
}

/// `form-data; name="..."; filename="..."` (also `filename*=UTF-8''...`, RFC 5987).
fn parse_disposition(value: &str) -> Result<Part, FormError> {
    const BAD: FormError =
        FormError::Malformed("malformed multipart body: invalid Content-Disposition");
    let (kind, mut rest) = value.split_once(';').unwrap_or((value, ""));
    if !kind.trim().eq_ignore_ascii_case("form-data") {
        return Err(FormError::Malformed(
            "malformed multipart body: a part that is not form-data",
        ));
    }
    let (mut name, mut file_name, mut file_name_ext) = (None, None, None);
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            break;
        }
        let (key, after) = rest.split_once('=').ok_or(BAD)?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices().peekable();
            let end = loop {
                match chars.next() {
                    None => return Err(BAD),
                    Some((i, '"')) => break i + 1,
                    // Only `\"` and `\\` are escapes: browsers send Windows paths as they are.
                    Some((_, '\\')) if matches!(chars.peek(), Some((_, '"' | '\\'))) => {
                        if let Some((_, c)) = chars.next() {
                            out.push(c);
                        }
                    }
                    Some((_, c)) => out.push(c),
                }
            };
            (out, &quoted[end..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        rest = remaining;
        match key.as_str() {
            "name" => name = Some(value),
            "filename" => file_name = Some(value),
            "filename*" => file_name_ext = decode_ext_value(&value),
            _ => {}
        }
    }
    let name = name.ok_or(FormError::Malformed(
        "malformed multipart body: a part without a name",
    ))?;
    Ok(Part {
        name,
        file_name: file_name_ext.or(file_name),
    })
}

/// An RFC 5987 `UTF-8''percent-encoded` value; other charsets are ignored.
fn decode_ext_value(value: &str) -> Option<String> {
    let mut pieces = value.splitn(3, '\'');
    let charset = pieces.next()?;
    let _language = pieces.next()?;
    let encoded = pieces.next()?;
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOUNDARY: &str = "XyZ-boundary-123";

    fn form(fields: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, file_name, content) in fields {
            body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
            match file_name {
                Some(f) => body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                None => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        body
    }

    /// Each part's name, file name and content.
    type Parts = Vec<(String, Option<String>, Vec<u8>)>;
    type Chunks = futures::stream::Iter<std::vec::IntoIter<Result<Bytes, std::io::Error>>>;

    fn reader(body: &[u8], cuts: &[usize], limit: u64) -> FormReader<Chunks> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for p in points.into_iter().chain([body.len()]) {
            chunks.push(Ok(Bytes::copy_from_slice(&body[start..p])));
            start = p;
        }
        FormReader::new(
            futures::stream::iter(chunks),
            BOUNDARY,
            "file",
            limit,
            Duration::from_secs(5),
        )
    }

    async fn collect(mut r: FormReader<Chunks>) -> Result<Parts, FormError> {
        let mut out = Vec::new();
        while let Some(part) = r.next_part().await? {
            let mut content = Vec::new();
            while let Some(chunk) = r.chunk().await? {
                content.extend_from_slice(&chunk);
            }
            out.push((part.name, part.file_name, content));
        }
        Ok(out)
    }

    fn parse(body: &[u8], cuts: &[usize]) -> Result<Parts, FormError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(collect(reader(body, cuts, u64::MAX)))
    }

    #[test]
    fn a_form_reads_back_its_fields_and_file() {
        let body = form(&[
            ("product", None, b"p"),
            ("file", Some("a.bin"), b"\r\n--XyZ-boundary-12 almost\r\n"),
            ("version", None, b"1.0"),
        ]);
        let parts = parse(&body, &[]).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[1].0, "file");
        assert_eq!(parts[1].1.as_deref(), Some("a.bin"));
        assert_eq!(parts[1].2, b"\r\n--XyZ-boundary-12 almost\r\n");
        assert_eq!(parts[2].2, b"1.0");
    }

    #[test]
    fn a_part_header_that_never_ends_is_refused_within_the_envelope() {
        let mut body = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"x\"\r\nX: ")
            .into_bytes();
        body.extend(std::iter::repeat_n(b'a', 1024 * 1024));
        assert_eq!(
            parse(&body, &[1000, 5000, 70_000]),
            Err(FormError::EnvelopeTooLarge)
        );
    }

    #[test]
    fn a_body_without_a_first_boundary_is_refused_within_the_envelope() {
        let body = vec![b'z'; 1024 * 1024];
        assert_eq!(
            parse(&body, &[10, 4096, 65_000]),
            Err(FormError::EnvelopeTooLarge)
        );
    }

    #[test]
    fn text_fields_together_share_the_envelope() {
        let big = vec![b'c'; 22 * 1024];
        let body = form(&[
            ("checksum", None, &big),
            ("other", None, &big),
            ("more", None, &big),
            ("file", Some("f"), b"x"),
        ]);
        assert_eq!(parse(&body, &[]), Err(FormError::EnvelopeTooLarge));
    }

    #[test]
    fn the_file_does_not_count_against_the_envelope() {
        let big = vec![b'f'; 1024 * 1024];
        let body = form(&[("product", None, b"p"), ("file", Some("f"), &big)]);
        let parts = parse(&body, &[100, 300_000]).unwrap();
        assert_eq!(parts[1].2.len(), big.len());
    }

    #[test]
    fn more_text_parts_than_the_limit_are_refused() {
        let names: Vec<String> = (0..=MAX_TEXT_PARTS).map(|i| format!("f{i}")).collect();
        let fields: Vec<(&str, Option<&str>, &[u8])> = names
            .iter()
            .map(|n| (n.as_str(), None, &b"v"[..]))
            .collect();
        assert_eq!(parse(&form(&fields), &[]), Err(FormError::TooManyParts));
        assert!(parse(&form(&fields[..MAX_TEXT_PARTS]), &[]).is_ok());
    }

    #[test]
    fn the_body_limit_counts_every_byte() {
        let body = form(&[("file", Some("f"), &[7u8; 1000])]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let result = rt.block_on(collect(reader(&body, &[], 500)));
        assert_eq!(result, Err(FormError::BodyTooLarge));
    }

    #[test]
    fn a_truncated_body_is_malformed() {
        let body = form(&[("file", Some("f"), b"abc")]);
        let cut = &body[..body.len() - 10];
        assert!(matches!(parse(cut, &[]), Err(FormError::Malformed(_))));
    }

    #[test]
    fn boundaries_come_from_the_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc").unwrap(),
            "abc"
        );
        assert_eq!(
            boundary("Multipart/Form-Data;boundary=\"a b\"").unwrap(),
            "a b"
        );
        assert!(boundary("application/json").is_err());
        assert!(boundary("multipart/form-data").is_err());
        assert!(boundary(&format!("multipart/form-data; boundary={}", "a".repeat(71))).is_err());
    }

    #[test]
    fn dispositions_take_quoted_escaped_and_extended_names() {
        let p = parse_disposition(r#"form-data; name="file"; filename="a \"b\".txt""#).unwrap();
        assert_eq!(p.file_name.as_deref(), Some("a \"b\".txt"));
        let p = parse_disposition(r#"form-data; name="file"; filename="C:\dir\a.zip""#).unwrap();
        assert_eq!(p.file_name.as_deref(), Some(r"C:\dir\a.zip"));
        let p = parse_disposition("form-data; name=file; filename*=UTF-8''%E2%82%AC.bin").unwrap();
        assert_eq!(
            (p.name.as_str(), p.file_name.as_deref()),
            ("file", Some("€.bin"))
        );
        assert!(parse_disposition("attachment; name=\"x\"").is_err());
        assert!(parse_disposition("form-data; filename=\"x\"").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn any_split_of_a_valid_body_yields_the_same_file_and_digest(
            // Bytes that often form near-delimiters: CR, LF, dashes and the boundary's letters.
            file in proptest::collection::vec(proptest::sample::select(b"\r\n-XyZb1\x00\xff".to_vec()), 0..600),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            use sha2::{Digest, Sha256};
            let body = form(&[("product", None, b"p"), ("file", Some("f.bin"), &file), ("version", None, b"1")]);
            let parts = parse(&body, &cuts).unwrap();
            prop_assert_eq!(parts.len(), 3);
            prop_assert_eq!(Sha256::digest(&parts[1].2), Sha256::digest(&file));
            prop_assert_eq!(&parts[0].2, b"p");
            prop_assert_eq!(&parts[2].2, b"1");
        }

        #[test]
        fn arbitrary_bodies_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let _ = parse(&body, &cuts);
        }
    }
}
