//! Relay rooms are the cluster's, not each node's (`Store::grant_relay_room` in PostgreSQL):
//! three nodes, two relays. A room one node placed is at the same relay whichever node is
//! asked; new rooms the cluster places are spread over the relays; the membership rule holds
//! across nodes (an outsider on another node cannot claim a room a member claimed elsewhere, a
//! member cannot mint its own way back in through another node); every token verifies with the
//! secret of the relay the room is placed at, and only with it. On the code before rooms moved
//! to the store (each node's rooms in its memory) the outsider's and the rejoiner's requests on
//! another node claimed the room anew and succeeded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::*;
use sotto_admission::RelaySecret;
use sotto_server::protocol::ParticipantToken;
use sotto_server::{Client, Error, ErrorCode, RelayEntry, ServerConfig};
use sotto_testkit::cluster::Cluster;

const R: &str = "wss://r.relay.test:8443";
const S: &str = "wss://s.relay.test:8443";

async fn placed(
    c: &Client,
    room: &str,
    who: &[&str],
) -> Result<(String, Vec<ParticipantToken>), Error> {
    let g = c.relay_tokens(None, room, &names(who)).await?;
    Ok((g.relay, g.tokens))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_placed_once_for_the_cluster_and_membership_holds_across_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let secrets: BTreeMap<&str, RelaySecret> = [(R, relay_secret()), (S, relay_secret())].into();
    let sec = secrets.clone();
    let Some(cluster) = Cluster::start(dir.path(), 3, move |i| {
        let mut c = ServerConfig::new(SERVER_ID);
        // the nodes list the relays in different orders: placement does not depend on it
        let mut order = vec![R, S];
        if i % 2 == 1 {
            order.reverse();
        }
        c.relays = order
            .into_iter()
            .map(|u| RelayEntry {
                url: u.into(),
                secret: sec[u].clone(),
            })
            .collect();
        c
    })
    .await
    else {
        return;
    };
    let (alice, _ea, _) = register(&cluster.nodes[0], "alice").await;
    let (bob, _eb, _) = register(&cluster.nodes[1], "bob").await;
    let (carol, _ec, _) = register(&cluster.nodes[2], "carol").await;
    let (mallory, _em, _) = register(&cluster.nodes[2], "mallory").await;

    // alice (node 0) has the cluster place her call
    let (relay, t) = placed(&alice, "call-1", &["alice", "bob"]).await.unwrap();
    assert!(relay == R || relay == S, "{relay}");
    let other = if relay == R { S } else { R };
    assert_eq!(
        admits(&relay, &secrets[relay.as_str()], &t[0], "call-1", "alice"),
        Ok(())
    );
    assert_eq!(
        admits(&relay, &secrets[relay.as_str()], &t[1], "call-1", "bob"),
        Ok(())
    );
    assert!(
        admits(other, &secrets[other], &t[1], "call-1", "bob").is_err(),
        "a token for one relay is nothing at the other"
    );

    // bob (node 1) invites carol: the same relay, placed or named
    let (again, t) = placed(&bob, "call-1", &["carol"]).await.unwrap();
    assert_eq!(again, relay);
    assert_eq!(
        admits(&relay, &secrets[relay.as_str()], &t[0], "call-1", "carol"),
        Ok(())
    );
    assert_eq!(
        refusal(
            bob.relay_tokens(Some(other), "call-1", &names(&["dave"]))
                .await
        ),
        ErrorCode::RoomAtAnotherRelay
    );

    // the membership rule is the cluster's: an outsider on node 2 gets nothing for a room
    // claimed on node 0, and a member cannot mint itself back in through another node
    assert_eq!(
        refusal(placed(&mallory, "call-1", &["mallory"]).await),
        ErrorCode::NotARoomMember
    );
    assert_eq!(
        refusal(placed(&bob, "call-1", &["bob"]).await),
        ErrorCode::RejoinNeedsInvite
    );
    assert_eq!(
        refusal(placed(&carol, "call-1", &["carol"]).await),
        ErrorCode::RejoinNeedsInvite
    );

    // new rooms the cluster places alternate between the relays, whichever node is asked
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    *count.entry(relay.clone()).or_default() += 1;
    for i in 0..9 {
        let asker = [&alice, &bob, &carol][i % 3];
        let (r, _) = placed(asker, &format!("room-{i}"), &["mallory"])
            .await
            .unwrap();
        *count.entry(r).or_default() += 1;
    }
    assert_eq!(count.get(R), Some(&5), "{count:?}");
    assert_eq!(count.get(S), Some(&5), "{count:?}");
}
