//! Which first deliveries may have a stored reply already, known without asking Redis for each one.
//!
//! Answered once (DESIGN 6) holds on every delivery, but asking Redis before every first delivery costs a round
//! trip per read, which at low load is most of a request's latency. A first delivery can only have a stored reply
//! in two ways, and both can be seen without that round trip:
//! - **History**: the entry was in the stream before this responder's group was created (a group recreated over
//!   the stream, or a second group added to it), or before this responder started (its group may have been created
//!   over history by someone else). When the responder creates or joins its group it notes the newest entry id:
//!   every entry up to that **bound** is checked.
//! - **Answered by hand before any read**: `publish_reply` counts each reply it stores in `T:byhand`. The reader
//!   reads that counter in the same pipeline as each `XREADGROUP` (with `MGET`, which reads a key of another type
//!   as nil: a broken key never stops the reader), so it costs no round trip; when it moved since
//!   the last read, every entry of this read is checked.
//!
//! Redeliveries are always checked (by the dispatch, see [`super::dispatch::Stored`]). The check itself is one
//! `EXISTS` per entry, pipelined once per read ([`super::reader`]).
//!
//! What this does not see: a group destroyed and created again by another program between two reads of this
//! responder (no `NOGROUP` reaches it, so it keeps its old bound), and a reply by hand that lands between the
//! counter's `MGET` and the `XREADGROUP` of the same pipeline (microseconds, and only for an entry already
//! waiting). In both, the handler runs once more; the first stored reply still wins.

use std::sync::Mutex;

use crate::protocol::entry::parse_entry_id;

/// What the reader knows of the stream's history and of replies by hand.
#[derive(Debug, Default)]
pub(crate) struct History {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Entries up to this id (`<ms>-<seq>`) may be history; `None` before the first look. An entry id that does not
    /// parse counts as history.
    bound: Option<(u64, u64)>,
    /// The last value of the by-hand counter seen, as bytes (`MGET` reads a key of another type as nil, and a
    /// string that is not a number is compared as it is: a broken key never stops the reader).
    by_hand: Option<Vec<u8>>,
}

impl History {
    /// Notes the stream's newest entry id (`None`: empty stream) and the by-hand counter, as seen right after the
    /// group was created or joined. The bound only grows.
    pub(crate) fn noted(&self, newest: Option<&str>, by_hand: Option<Vec<u8>>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let newest = newest.map(|id| parse_entry_id(id).unwrap_or((u64::MAX, u64::MAX)));
        state.bound = state.bound.max(newest).or(Some((0, 0)));
        if by_hand.is_some() {
            state.by_hand = by_hand;
        }
    }

    /// Noted when the history could not be read: every entry counts as history until it can be.
    pub(crate) fn unknown(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).bound = Some((u64::MAX, u64::MAX));
    }

    /// For one read: whether the by-hand counter moved since the last read (every entry is then checked), and
    /// which of `entry_ids` are history.
    pub(crate) fn to_check<'a>(
        &self,
        by_hand: Option<Vec<u8>>,
        entry_ids: impl Iterator<Item = &'a str>,
    ) -> Vec<bool> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let moved = by_hand != state.by_hand;
        state.by_hand = by_hand;
        // Before the first look (cannot happen: the group is ensured first), everything counts as history.
        let bound = state.bound.unwrap_or((u64::MAX, u64::MAX));
        entry_ids
            .map(|id| moved || parse_entry_id(id).is_none_or(|id| id <= bound))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_and_replies_by_hand_are_checked_and_nothing_else() {
        let history = History::default();
        history.noted(Some("100-1"), Some(b"3".to_vec()));
        let ids = ["99-0", "100-1", "100-2", "bogus"];
        assert_eq!(
            history.to_check(Some(b"3".to_vec()), ids.into_iter()),
            [true, true, false, true]
        );
        // A reply by hand since the last read: all of this read is checked, then only history again.
        assert_eq!(
            history.to_check(Some(b"4".to_vec()), ids.into_iter()),
            [true, true, true, true]
        );
        assert_eq!(
            history.to_check(Some(b"4".to_vec()), ids.into_iter()),
            [true, true, false, true]
        );
        // An empty stream: nothing is history.
        let empty = History::default();
        empty.noted(None, None);
        assert_eq!(empty.to_check(None, ["0-1"].into_iter()), [false]);
        // The bound only grows; unknown history checks everything.
        empty.noted(Some("5-0"), None);
        empty.noted(Some("3-0"), None);
        assert_eq!(
            empty.to_check(None, ["4-0", "6-0"].into_iter()),
            [true, false]
        );
        empty.unknown();
        assert_eq!(empty.to_check(None, ["6-0"].into_iter()), [true]);
    }
}
