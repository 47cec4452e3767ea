//! Thin entry points for the cargo-fuzz targets in `fuzz/` (FUZZING.md):
//! the parsers of untrusted bytes that are not public otherwise. Not an API.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use futures_util::{Stream, StreamExt as _};

pub use crate::sources::mapping::{Fields, Mapped, RawFields};
pub use eventsource_stream::Event as SseEvent;

/// Runs the SSE source's frame parser (`sources::sse::frames`: a UTF-8
/// check, then `eventsource-stream`) over `chunks`, as they would arrive
/// from the network, and returns every item: a frame, or the error as text.
/// With `open`, the connection stays open after the last chunk (as an SSE
/// stream does) instead of ending.
pub fn sse_frames(chunks: Vec<Vec<u8>>, open: bool) -> Vec<Result<SseEvent, String>> {
    let stream = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(c))),
    );
    let tail = if open {
        futures_util::stream::pending().left_stream()
    } else {
        futures_util::stream::empty().right_stream()
    };
    let mut events = pin!(crate::sources::sse::frames(stream.chain(tail)));
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        // An in-memory stream never waits: `Pending` is the open connection.
        match events.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(item)) => out.push(item.map_err(|e| e.to_string())),
            Poll::Ready(None) | Poll::Pending => return out,
        }
    }
}

/// What the SSE source does with one frame (`sources::sse::map_frame`).
pub fn map_sse_frame(
    ev: &SseEvent,
    prev_frame_id: &mut String,
    fields: &Fields,
    source: &str,
    wants: impl Fn(&str) -> bool,
    received: &str,
) -> Option<Mapped> {
    crate::sources::sse::map_frame(ev, prev_frame_id, fields, source, wants, received)
}

/// One backfill page's items and next cursor (`sources::backfill::parse_page`).
///
/// # Errors
/// As the backfill: not JSON, or no array where the items should be.
pub fn backfill_page(
    bytes: &[u8],
    items_field: Option<&str>,
    next_cursor_field: Option<&str>,
) -> Result<(Vec<serde_json::Value>, Option<String>), String> {
    crate::sources::backfill::parse_page(bytes, items_field, next_cursor_field)
}
