//! Page sizes and opaque page tokens shared by every listing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::AppError;

pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;
/// Longest page token accepted: the encoding of the longest sort key (an external id of 256
/// characters of up to 4 bytes each), with room to spare.
const MAX_TOKEN_CHARS: usize = 2048;

/// A validated page request: how many items and where to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub size: usize,
    /// The cursor decoded from the token: the sort key of the last item already returned.
    pub after: Option<String>,
}

impl Page {
    /// `page_size` 0 means the default; negative or over `MAX_PAGE_SIZE` is INVALID_ARGUMENT.
    pub fn parse(page_size: i32, page_token: &str) -> Result<Self, AppError> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 || n as usize > MAX_PAGE_SIZE => {
                return Err(AppError::invalid(
                    "page_size",
                    format!(
                        "{n} is out of range: expected 1 to {MAX_PAGE_SIZE} (0 for the default {DEFAULT_PAGE_SIZE})"
                    ),
                ));
            }
            n => n as usize,
        };
        let malformed = || {
            AppError::invalid(
                "page_token",
                "is malformed: pass the next_page_token of a previous page",
            )
        };
        let after = if page_token.is_empty() {
            None
        } else {
            // Checked before decoding, so a huge token costs nothing; every cursor the server
            // makes is far shorter.
            if page_token.len() > MAX_TOKEN_CHARS {
                return Err(malformed());
            }
            let bytes = URL_SAFE_NO_PAD.decode(page_token).map_err(|_| {
                AppError::invalid(
                    "page_token",
                    "is malformed: pass the next_page_token of a previous page",
                )
            })?;
            let cursor = String::from_utf8(bytes).map_err(|_| {
                AppError::invalid(
                    "page_token",
                    "is malformed: pass the next_page_token of a previous page",
                )
            })?;
            // A cursor is a sort key the server wrote (a name, an external id, a version):
            // never a control character, and a NUL would not even reach PostgreSQL.
            if cursor.chars().any(char::is_control) {
                return Err(malformed());
            }
            Some(cursor)
        };
        Ok(Self { size, after })
    }

    /// Ends a page read as `size + 1` items: keeps at most `size`, fewer where they would pass
    /// `budget` bytes (each measured by `len`), and returns them with the token continuing
    /// after the last one kept (named by `key`), empty when nothing follows.
    pub(crate) fn close<T>(
        &self,
        mut items: Vec<T>,
        budget: usize,
        len: impl Fn(&T) -> usize,
        key: impl Fn(&T) -> String,
    ) -> (Vec<T>, String) {
        let fetched = items.len();
        items.truncate(self.size);
        let cut = super::budget::fit(&mut items, budget, len);
        let last = items.last().map(key);
        let token = self.token(cut || fetched > self.size, last.as_deref());
        (items, token)
    }

    /// The token continuing after `last_key` when `more` items follow; empty otherwise.
    pub fn token(&self, more: bool, last_key: Option<&str>) -> String {
        match last_key {
            Some(key) if more => URL_SAFE_NO_PAD.encode(key.as_bytes()),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(Page::parse(0, "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(Page::parse(1000, "").unwrap().size, 1000);
        assert!(Page::parse(1001, "").is_err());
        assert!(Page::parse(-1, "").is_err());
        assert!(Page::parse(10_000_000, "").is_err());
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_rejected() {
        let page = Page::parse(2, "").unwrap();
        let token = page.token(true, Some("player-002"));
        assert_eq!(
            Page::parse(2, &token).unwrap().after.as_deref(),
            Some("player-002")
        );
        assert_eq!(page.token(false, Some("x")), "");
        assert!(Page::parse(2, "!!not base64!!").is_err());
        // Valid base64 of a NUL or another control character, and an oversized token.
        for cursor in ["\0", "a\0b", "\u{1b}"] {
            assert!(
                Page::parse(2, &URL_SAFE_NO_PAD.encode(cursor)).is_err(),
                "{cursor:?}"
            );
        }
        assert!(Page::parse(2, &"A".repeat(1 << 20)).is_err());
    }
}
