//! Server-Sent Events read off a byte stream: the `id:`, `event:` and `data:` lines of each
//! message, up to the blank line that ends it (comments and other fields skipped). What the
//! event stream of [`crate::Client::events`] is read with.

use std::io::BufRead;

/// Longest message accepted (its `data:` lines together).
pub const MAX_MESSAGE: usize = 1 << 20;

/// One message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Its `id:`, if it had one.
    pub id: Option<String>,
    /// Its `event:` (empty: none).
    pub event: String,
    /// Its `data:` lines, joined by '\n'.
    pub data: String,
}

/// Why the stream cannot be read on.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// The connection failed or timed out.
    #[error("reading the event stream: {0}")]
    Io(#[from] std::io::Error),
    /// A message was longer than [`MAX_MESSAGE`].
    #[error("an event stream message is longer than {MAX_MESSAGE} bytes")]
    TooLong,
}

/// The next message, or `None` at the end of the stream.
pub fn next_message(reader: &mut impl BufRead) -> Result<Option<Message>, SseError> {
    let mut message = Message::default();
    let mut any = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        // A line is read at most MAX_MESSAGE + 1 bytes at a time.
        let n = std::io::Read::take(&mut *reader, MAX_MESSAGE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(None);
        }
        if line.len() > MAX_MESSAGE {
            return Err(SseError::TooLong);
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            if any {
                return Ok(Some(message));
            }
            continue;
        }
        if text.starts_with(':') {
            continue;
        }
        let (field, value) = text.split_once(':').unwrap_or((text, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => message.id = Some(value.to_string()),
            "event" => message.event = value.to_string(),
            "data" => {
                if message.data.len() + value.len() + 1 > MAX_MESSAGE {
                    return Err(SseError::TooLong);
                }
                if any && !message.data.is_empty() {
                    message.data.push('\n');
                }
                message.data.push_str(value);
            }
            _ => continue,
        }
        any = true;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn all(text: &[u8]) -> Result<Vec<Message>, SseError> {
        let mut r = std::io::BufReader::new(text);
        let mut out = Vec::new();
        while let Some(m) = next_message(&mut r)? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn messages_with_ids_events_comments_and_crlf() {
        let got = all(b": keep-alive\n\nid: 3.1\nevent: job\ndata: {\"a\":1}\n\r\nretry: 5\ndata:x\ndata: y\n\n").unwrap();
        assert_eq!(
            got,
            vec![
                Message {
                    id: Some("3.1".into()),
                    event: "job".into(),
                    data: "{\"a\":1}".into()
                },
                Message {
                    id: None,
                    event: String::new(),
                    data: "x\ny".into()
                }
            ]
        );
    }

    #[test]
    fn an_endless_line_is_refused_not_buffered() {
        let long = vec![b'a'; MAX_MESSAGE + 10];
        assert!(matches!(all(&long), Err(SseError::TooLong)));
    }

    proptest! {
        /// Any bytes are read into messages or refused; nothing panics.
        #[test]
        fn any_bytes_read_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = all(&bytes);
        }
    }
}
