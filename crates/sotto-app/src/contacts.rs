//! The page's contacts list: the accounts the device knows, each with its device count as
//! the signaling server lists it now, bounded by
//! [`MAX_CONTACTS_SENT`](crate::consts::MAX_CONTACTS_SENT) and by time (`protocol-spec/app.md`
//! §9).

use std::future::Future;
use std::time::Duration;

use crate::consts::MAX_CONTACTS_SENT;
use crate::protocol::{PageContact, PageContacts};

/// The contacts list for `known` (account names, sorted and without duplicates, as
/// `sotto_call::sealed::Device::known_peers` returns them): the first
/// [`MAX_CONTACTS_SENT`] in that order, each with the device count `devices(name)` gives
/// within `per_lookup`; no lookup starts once `total` has passed since the call, and a
/// contact whose lookup failed, took too long or did not start has no count.
pub async fn contacts_list<F, Fut>(
    known: Vec<String>,
    mut devices: F,
    per_lookup: Duration,
    total: Duration,
) -> PageContacts
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Option<u32>>,
{
    let deadline = tokio::time::Instant::now() + total;
    let truncated = known.len() > MAX_CONTACTS_SENT;
    let mut contacts = Vec::with_capacity(known.len().min(MAX_CONTACTS_SENT));
    for name in known.into_iter().take(MAX_CONTACTS_SENT) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let count = if left.is_zero() {
            None
        } else {
            tokio::time::timeout(per_lookup.min(left), devices(name.clone()))
                .await
                .ok()
                .flatten()
        };
        contacts.push(PageContact {
            name,
            devices: count,
        });
    }
    PageContacts {
        contacts,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("user{i:04}")).collect()
    }

    #[tokio::test]
    async fn at_most_the_limit_is_sent_and_the_list_says_when_more_are_known() {
        let at = contacts_list(
            names(MAX_CONTACTS_SENT),
            |_| async { Some(1) },
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(at.contacts.len(), MAX_CONTACTS_SENT);
        assert!(!at.truncated);
        let over = contacts_list(
            names(MAX_CONTACTS_SENT + 1),
            |_| async { Some(2) },
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(over.contacts.len(), MAX_CONTACTS_SENT);
        assert!(over.truncated);
        assert_eq!(over.contacts[0].name, "user0000");
        assert!(over.contacts.iter().all(|c| c.devices == Some(2)));
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_leaves_the_count_out_in_bounded_time() {
        let t0 = std::time::Instant::now();
        let list = contacts_list(
            names(3),
            |name| async move {
                if name == "user0001" {
                    std::future::pending::<()>().await;
                }
                Some(1)
            },
            Duration::from_millis(200),
            Duration::from_secs(30),
        )
        .await;
        let counts: Vec<_> = list.contacts.iter().map(|c| c.devices).collect();
        assert_eq!(counts, [Some(1), None, Some(1)]);
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        // past the total, no lookup starts: every contact is still listed
        let t0 = std::time::Instant::now();
        let slow = contacts_list(
            names(50),
            |_| std::future::pending::<Option<u32>>(),
            Duration::from_millis(100),
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(slow.contacts.len(), 50);
        assert!(slow.contacts.iter().all(|c| c.devices.is_none()));
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }
}
