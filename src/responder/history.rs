//! Which first deliveries may have a stored reply already, known without asking Redis for each one.
//!
//! Answered once (DESIGN 6) holds on every delivery, but asking Redis before every first delivery costs a round
//! trip per read, which at low load is most of a request's latency. The reader keeps a **bound**, a stream entry
//! id: every entry up to it is checked for a stored reply (one `EXISTS` per entry, pipelined once per read by
//! [`super::reader`]); entries above it, the usual case, are not. The bound only grows, and is raised by:
//! - **History**: when the responder creates or joins its group (at start, and after `NOGROUP`) it notes the
//!   stream's newest entry id. Entries up to it may be history: in the stream before the group was created (a group
//!   recreated over the stream, or a second group added to it), or before this responder started.
//! - **Replies by hand**: `publish_reply` stores, with every reply, the stream's newest entry id in `T:byhand` (the
//!   request answered is at or below it). The reader reads that key in the same pipeline as each `XREADGROUP` (with
//!   `MGET`, which reads a key of another type as nil: a broken key never stops the reader), so it costs no round
//!   trip; every entry up to it is checked, in this read and the later ones.
//!
//! Redeliveries are always checked (by the dispatch, see [`super::dispatch::Stored`]).
//!
//! What this does not see: a request answered by another group that reads the same stream at the same time (two
//! live groups; each group's responders check only history and replies by hand); a group destroyed and created
//! again by another program between two reads of this responder (no `NOGROUP` reaches it, so it keeps its old
//! bound); and a reply by hand that lands between the `MGET` and the `XREADGROUP` of one pipeline (microseconds,
//! and only for an entry already waiting). In these, the handler runs once more; the first stored reply still wins.

use std::sync::Mutex;

use crate::protocol::entry::parse_entry_id;

/// The bound of the entries that may have a stored reply.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// Entries up to this id (`<ms>-<seq>`) are checked; `None` before the first look (then everything is).
    bound: Mutex<Option<(u64, u64)>>,
}

impl History {
    fn raise(&self, to: Option<(u64, u64)>) {
        let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        *bound = (*bound).max(to);
    }

    /// Notes the stream's newest entry id (`None`: an empty stream) and `T:byhand`, as seen right after the group
    /// was created or joined.
    pub(crate) fn noted(&self, newest: Option<&str>, by_hand: Option<Vec<u8>>) {
        let newest = newest.map(|id| parse_entry_id(id).unwrap_or((u64::MAX, u64::MAX)));
        self.raise(Some(newest.unwrap_or((0, 0))));
        self.raise(by_hand_bound(by_hand));
    }

    /// Noted when the history could not be read: every entry counts as history until it can be.
    pub(crate) fn unknown(&self) {
        self.raise(Some((u64::MAX, u64::MAX)));
    }

    /// For one read, with the `T:byhand` value read in its pipeline: which of `entry_ids` are to be checked.
    pub(crate) fn to_check<'a>(
        &self,
        by_hand: Option<Vec<u8>>,
        entry_ids: impl Iterator<Item = &'a str>,
    ) -> Vec<bool> {
        self.raise(by_hand_bound(by_hand));
        // Before the first look (cannot happen: the group is ensured first), everything counts as history.
        let bound = self
            .bound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or((u64::MAX, u64::MAX));
        entry_ids
            .map(|id| parse_entry_id(id).is_none_or(|id| id <= bound))
            .collect()
    }
}

/// The entry id held by `T:byhand`; a value that is not one (a broken key) raises nothing, and is overwritten by
/// the next reply by hand.
fn by_hand_bound(value: Option<Vec<u8>>) -> Option<(u64, u64)> {
    parse_entry_id(std::str::from_utf8(&value?).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_up_to_the_bound_are_checked_and_nothing_else() {
        let history = History::default();
        history.noted(Some("100-1"), None);
        let ids = ["99-0", "100-1", "100-2", "bogus"];
        assert_eq!(
            history.to_check(None, ids.into_iter()),
            [true, true, false, true]
        );
        // A reply by hand when the stream's newest entry was 200-0: every entry up to it, in this read and after.
        let by_hand = Some(b"200-0".to_vec());
        assert_eq!(
            history.to_check(by_hand.clone(), ["150-0"].into_iter()),
            [true]
        );
        assert_eq!(
            history.to_check(by_hand, ["199-0", "201-0"].into_iter()),
            [true, false]
        );
        assert_eq!(
            history.to_check(None, ["180-0"].into_iter()),
            [true],
            "the bound stays"
        );
        // A broken `T:byhand` raises nothing.
        assert_eq!(
            history.to_check(Some(b"x".to_vec()), ["300-0"].into_iter()),
            [false]
        );
        // An empty stream: nothing is history.
        let empty = History::default();
        empty.noted(None, None);
        assert_eq!(empty.to_check(None, ["0-1"].into_iter()), [false]);
        empty.unknown();
        assert_eq!(empty.to_check(None, ["6-0"].into_iter()), [true]);
    }
}
