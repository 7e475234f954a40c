//! Scenarios found by review of the call core, each a regression test (they fail on the rule the
//! review found wrong).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

#[test]
fn a_strangers_key_is_held_not_used_and_a_members_key_for_another_id_is_refused() {
    let mut n = group(&["alice", "bob"]);
    let call = n.devs["alice"].core.current_call().unwrap().0;
    // mallory, not a member, hands alice a key in this call: held (her `add` might still
    // come), never installed
    let k = SenderKey::new(SUITE, sender_id_for("mallory"), &[9u8; 16])
        .unwrap()
        .material();
    n.feed(
        "alice",
        Event::Message {
            from: "mallory".into(),
            device: 1,
            message: CallMessage::new(call, 0, Body::MediaKey { media_key: k }),
        },
    );
    n.run();
    assert!(!n.devs["alice"]
        .plane
        .received
        .iter()
        .any(|m| m.id.sender == sender_id_for("mallory")));
    // bob hands out a key under alice's sender id (in sequence, so it reaches the key check)
    let k = SenderKey::new(SUITE, sender_id_for("alice"), &[9u8; 16])
        .unwrap()
        .material();
    let seq = n.next_seq("bob", "alice");
    n.feed(
        "alice",
        Event::Message {
            from: "bob".into(),
            device: 1,
            message: CallMessage::new(call, seq, Body::MediaKey { media_key: k }),
        },
    );
    n.run();
    let claimed = sender_id_for("alice");
    assert!(n.notices("alice").iter().any(|x| matches!(
        x,
        Notice::Dropped(Dropped::Key { from, error: crate::group::GroupError::SenderIdClaimed(s) })
            if from == "bob" && *s == claimed
    )));
    n.everyone_decrypts_everyone(&["alice", "bob"]);
}

/// Review finding: the relay (untrusted) decided whether a newcomer got a ratcheted key. Someone
/// who stayed in the room after leaving and is added again must not open what was sent while it
/// was not a member.
#[test]
fn a_lingering_ex_member_added_again_opens_nothing_from_its_absence() {
    let mut n = Net::new(&["alice", "bob", "carol", "xavier"], true);
    n.connect("alice", "bob");
    n.invite("alice", "xavier");
    let room = n.devs["alice"].core.current_call().unwrap().0.to_string();
    n.cmd("xavier", UserCommand::Hangup);
    // xavier's connection to the relay lingers: the relay still lists him
    n.rooms.get_mut(&room).unwrap().insert("xavier".into());
    n.advance(KEY_ACTIVATION_DELAY);
    n.invite("alice", "carol");
    n.advance(KEY_ACTIVATION_DELAY);
    let absent: Vec<Vec<u8>> = ["alice", "bob", "carol"]
        .iter()
        .map(|s| n.frame(s, "while xavier was out"))
        .collect();
    n.devs.get_mut("xavier").unwrap().plane.received.clear();
    n.invite("bob", "xavier");
    n.advance(KEY_ACTIVATION_DELAY);
    n.everyone_decrypts_everyone(&["alice", "bob", "carol", "xavier"]);
    let keys = n.devs["xavier"].plane.received.clone();
    assert!(!keys.is_empty());
    for w in &absent {
        assert!(
            !n.any_key_opens(&keys, w),
            "xavier opens a frame from his absence"
        );
    }
}

/// Review finding: a relay join that completes after the call ended kept us in the room.
#[test]
fn a_join_that_completes_after_hangup_leaves_the_room() {
    let mut n = Net::new(&["alice", "bob"], true);
    n.cmd("alice", UserCommand::Dial("bob".into()));
    n.relay_stalls = true;
    n.cmd("bob", UserCommand::Answer);
    let call = n.devs.get_mut("bob").unwrap().stalled_join.take().unwrap();
    n.cmd("bob", UserCommand::Hangup);
    assert!(!n.devs["bob"].core.awaits_room(call));
    n.relay_stalls = false;
    n.join_room("bob", call, &call.to_string());
    n.run();
    assert!(
        !n.rooms[&call.to_string()].contains("bob"),
        "bob left the room the late join put him in"
    );
}

/// Review finding: an invitee's answer that arrives after it became our peer (the member we
/// dialled left) still carries a key that must be installed.
#[test]
fn an_invitees_answer_after_the_peer_left_still_gives_its_key() {
    let mut n = Net::new(&["alice", "bob", "xavier"], true);
    n.connect("alice", "bob");
    n.cmd("alice", UserCommand::Invite("xavier".into()));
    n.hold = Some(Box::new(|m: &Mail| m.from == "xavier" && m.to == "alice"));
    n.cmd("xavier", UserCommand::Answer);
    n.hold = None;
    n.cmd("bob", UserCommand::Hangup);
    assert_eq!(
        n.devs["alice"].core.status().peer.as_deref(),
        Some("xavier")
    );
    let all: Vec<usize> = (0..n.held.len()).collect();
    n.release_held(&all);
    n.everyone_decrypts_everyone(&["alice", "xavier"]);
}

/// Review finding: names whose 16-bit sender ids are equal could not call each other at all;
/// peer to peer nothing needs to tell them apart.
#[test]
fn two_names_with_the_same_sender_id_talk_peer_to_peer() {
    let twin = (0u32..)
        .map(|i| format!("u{i}"))
        .find(|n| sender_id_for(n) == sender_id_for("alice"))
        .unwrap();
    let mut n = Net::new(&["alice", &twin], false);
    n.connect("alice", &twin);
    n.everyone_decrypts_everyone(&["alice", &twin]);
    // through a relay they could not be told apart: refused by name at dial
    let mut n = Net::new(&["alice", &twin], true);
    n.cmd("alice", UserCommand::Dial(twin.clone()));
    assert!(n
        .notices("alice")
        .iter()
        .any(|x| matches!(x, Notice::Error(CallError::SenderIdClash { .. }))));
}

/// Review finding: a call we left kept acting on members' messages (rotating, forwarding adds).
#[test]
fn a_call_we_left_takes_no_more_messages() {
    let mut n = group(&["alice", "bob", "carol"]);
    n.hold = Some(Box::new(|m: &Mail| m.from == "bob" && m.to == "alice"));
    n.cmd("bob", UserCommand::Hangup);
    n.hold = None;
    n.cmd("alice", UserCommand::Hangup);
    let before = n.sent_by("alice");
    let all: Vec<usize> = (0..n.held.len()).collect();
    n.release_held(&all);
    n.advance(KEY_ACTIVATION_DELAY * 2);
    assert_eq!(n.sent_by("alice"), before, "nothing sent after we left");
}

/// Review finding: `add` in a peer-to-peer call would hand our candidates (addresses) to a
/// stranger after the peer hangs up.
#[test]
fn add_is_ignored_in_a_peer_to_peer_call() {
    let mut n = Net::new(&["alice", "bob"], false);
    n.connect("alice", "bob");
    let call = n.devs["alice"].core.current_call().unwrap().0;
    let seq = n.next_seq("bob", "alice");
    n.feed(
        "alice",
        Event::Message {
            from: "bob".into(),
            device: 1,
            message: CallMessage::new(
                call,
                seq,
                Body::Add {
                    user: "mallory".into(),
                },
            ),
        },
    );
    n.run();
    assert_eq!(
        n.devs["alice"].core.status().members,
        vec!["bob".to_string()]
    );
}

#[test]
fn thirty_two_lost_messages_in_a_row_do_not_stall_the_sender_for_the_call() {
    let mut n = Net::new(&["alice", "bob"], false);
    n.connect("alice", "bob");
    n.hold = Some(Box::new(|m: &Mail| m.to == "alice"));
    for i in 0..40 {
        n.cmd("bob", UserCommand::MuteVideo(i % 2 == 0));
    }
    n.hold = None;
    n.held.clear(); // lost for good
    n.cmd("bob", UserCommand::MuteAudio(true));
    n.advance(crate::consts::REORDER_GAP_WAIT);
    n.cmd("bob", UserCommand::MuteAudio(false));
    n.cmd("bob", UserCommand::MuteAudio(true));
    assert!(
        n.devs["alice"].core.status().peer_audio_muted,
        "bob heard again"
    );
}
