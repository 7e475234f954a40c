//! Unit tests of the call message codec and the reorder buffer.

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod codec_tests {
    use super::super::*;

    /// A real media key (the wire carries only [`KeyMaterial`] encodings).
    fn key(b: u8) -> KeyMaterial {
        sotto_frame::SenderKey::new(sotto_frame::CipherSuite::default(), 7, &[b; 16])
            .unwrap()
            .material()
    }

    #[test]
    fn the_fuzz_seeds_decode_so_the_fuzzer_starts_past_the_key_check() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/call_message");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            let r = CallMessage::decode(&bytes);
            if p.file_name().unwrap() == "over-limit.json" {
                assert!(matches!(r, Err(MessageError::TooLarge(_))));
            } else {
                assert!(r.is_ok(), "{}: {r:?}", p.display());
                n += 1;
            }
        }
        assert!(n >= 5);
    }

    #[test]
    fn round_trip_and_exact_json() {
        let id = CallId([0xab; 16]);
        let m = CallMessage::new(
            id,
            3,
            Body::Mute {
                audio: true,
                video: false,
            },
        );
        let bytes = m.encode();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"v":1,"call":"abababababababababababababababab","seq":3,"type":"mute","audio":true,"video":false}"#
        );
        assert_eq!(CallMessage::decode(&bytes).unwrap(), m);
        assert_eq!(m.call_id().unwrap(), id);
    }

    #[test]
    fn bad_messages_are_refused_by_name() {
        let ok = r#"{"v":1,"call":"abababababababababababababababab","seq":0,"type":"ringing"}"#;
        assert!(CallMessage::decode(ok.as_bytes()).is_ok());
        let cases = [
            (
                r#"{"v":2,"call":"abababababababababababababababab","seq":0,"type":"ringing"}"#,
                "version",
            ),
            (r#"{"v":1,"call":"abab","seq":0,"type":"ringing"}"#, "field"),
            (
                r#"{"v":1,"call":"abababababababababababababababab","seq":0,"type":"dance"}"#,
                "malformed",
            ),
            (
                r#"{"v":1,"call":"abababababababababababababababab","seq":0,"type":"media_key","media_key":"zz"}"#,
                "field",
            ),
            ("", "malformed"),
            (
                r#"{"v":1,"call":"abababababababababababababababab","seq":0,"type":"ringing","x":1}"#,
                "malformed",
            ),
            (
                r#"{"v":1,"call":"abababababababababababababababab","seq":-1,"type":"ringing"}"#,
                "malformed",
            ),
            (
                r#"{"v":1,"call":"abababababababababababababababab","type":"ringing"}"#,
                "malformed",
            ),
            (
                r#"{"v":1,"call":"ABABABABABABABABABABABABABABABABAB","seq":0,"type":"ringing"}"#,
                "field",
            ),
            (
                r#"{"v":1,"call":"ABABABABABABABABABABABABABABABAB","seq":0,"type":"ringing"}"#,
                "field",
            ),
            ("[]", "malformed"),
        ];
        for (input, what) in cases {
            let e = CallMessage::decode(input.as_bytes()).unwrap_err();
            let matches = match what {
                "version" => matches!(e, MessageError::Version(2)),
                "field" => matches!(e, MessageError::Field(_)),
                _ => matches!(e, MessageError::Malformed(_)),
            };
            assert!(matches, "{input}: {e:?}");
        }
        let sdp = "a".repeat(MAX_SDP + 1);
        let big = CallMessage::new(
            CallId([1; 16]),
            0,
            Body::Answer {
                sdp,
                media_key: key(1),
            },
        );
        assert_eq!(
            CallMessage::decode(&big.encode()).unwrap_err(),
            MessageError::Field("sdp")
        );
        let huge = vec![b' '; MAX_CALL_MESSAGE + 1];
        assert_eq!(
            CallMessage::decode(&huge).unwrap_err(),
            MessageError::TooLarge(MAX_CALL_MESSAGE + 1)
        );
        let limit = vec![b' '; MAX_CALL_MESSAGE];
        assert!(matches!(
            CallMessage::decode(&limit).unwrap_err(),
            MessageError::Malformed(_)
        ));
    }

    #[test]
    fn debug_shows_no_sdp_or_key() {
        let m = CallMessage::new(
            CallId([1; 16]),
            0,
            Body::Offer {
                sdp: "v=0 secret".into(),
                video: true,
                media_key: Some(key(0xbe)),
                relay: None,
                members: Vec::new(),
                relay_token: None,
            },
        );
        let d = format!("{m:?}");
        assert!(!d.contains("secret") && !d.contains("bebe"), "{d}");
    }

    fn ringing(seq: u32) -> CallMessage {
        CallMessage::new(CallId([7; 16]), seq, Body::Ringing)
    }

    #[test]
    fn limits_at_and_over() {
        let at = |body| CallMessage::decode(&CallMessage::new(CallId([1; 16]), 0, body).encode());
        assert!(at(Body::Answer {
            sdp: "a".repeat(MAX_SDP),
            media_key: key(2)
        })
        .is_ok());
        assert_eq!(
            at(Body::Offer {
                sdp: "a".repeat(MAX_SDP + 1),
                video: false,
                media_key: None,
                relay: None,
                members: Vec::new(),
                relay_token: None,
            })
            .unwrap_err(),
            MessageError::Field("sdp")
        );
        let offer_via = |relay: String| Body::Offer {
            sdp: String::new(),
            video: false,
            media_key: None,
            relay: Some(relay),
            members: Vec::new(),
            relay_token: None,
        };
        assert!(at(offer_via("r".repeat(MAX_RELAY_URL))).is_ok());
        // the invitee's relay token rides in the offer, bounded by MAX_TOKEN_LEN
        let with_token = |len: usize| {
            let mut b = offer_via("wss://relay.example".into());
            if let Body::Offer { relay_token, .. } = &mut b {
                *relay_token = Some(
                    sotto_admission::RelayToken::from_text(
                        "t".repeat(len.min(sotto_admission::consts::MAX_TOKEN_LEN)),
                    )
                    .unwrap(),
                );
            }
            b
        };
        let max = sotto_admission::consts::MAX_TOKEN_LEN;
        let m = at(with_token(max)).unwrap();
        assert!(
            matches!(m.body, Body::Offer { relay_token: Some(ref t), .. } if t.as_str().len() == max)
        );
        assert!(!format!("{m:?}").contains("ttt"), "no token in Debug");
        let json = |len: usize| {
            format!(
                r#"{{"v":1,"call":"{}","seq":0,"type":"offer","sdp":"","video":true,"media_key":"","relay":"wss://r","relay_token":"{}"}}"#,
                CallId([1; 16]),
                "t".repeat(len)
            )
        };
        assert!(CallMessage::decode(json(max).as_bytes()).is_ok());
        assert!(CallMessage::decode(json(max + 1).as_bytes()).is_err());
        assert_eq!(
            at(offer_via("r".repeat(MAX_RELAY_URL + 1))).unwrap_err(),
            MessageError::Field("relay")
        );
        assert!(at(Body::Hangup {
            reason: "r".repeat(MAX_REASON)
        })
        .is_ok());
        assert_eq!(
            at(Body::Hangup {
                reason: "r".repeat(MAX_REASON + 1)
            })
            .unwrap_err(),
            MessageError::Field("reason")
        );
        assert!(at(Body::MediaKey { media_key: key(3) }).is_ok());
        // the key field: over MAX_MEDIA_KEY_HEX, not hex, or hex that is not key material,
        // refused by name; an empty key only in an offer (a group invite)
        let raw = |kind: &str, k: &str| {
            let extra = if kind == "answer" {
                r#","sdp":"""#
            } else if kind == "offer" {
                r#","sdp":"","video":true"#
            } else {
                ""
            };
            CallMessage::decode(
                format!(r#"{{"v":1,"call":"abababababababababababababababab","seq":0,"type":"{kind}","media_key":"{k}"{extra}}}"#)
                    .as_bytes(),
            )
        };
        let good = hex::encode(&*key(4).to_bytes());
        assert!(raw("media_key", &good).is_ok());
        assert!(raw("answer", &good).is_ok());
        assert!(raw("offer", "").is_ok());
        for bad in [
            "ab".repeat(MAX_MEDIA_KEY_HEX / 2 + 1),
            "ab".repeat(MAX_MEDIA_KEY_HEX / 2),
            "zz".into(),
            String::new(),
            format!("{good}00"),
        ] {
            assert_eq!(
                raw("media_key", &bad).unwrap_err(),
                MessageError::Field("media_key")
            );
            if !bad.is_empty() {
                assert_eq!(
                    raw("offer", &bad).unwrap_err(),
                    MessageError::Field("media_key")
                );
            }
        }
        assert_eq!(
            raw("answer", "").unwrap_err(),
            MessageError::Field("media_key")
        );
        // a message of exactly MAX_CALL_MESSAGE bytes is parsed; one more byte is not
        let mut exact = CallMessage::new(
            CallId([1; 16]),
            0,
            Body::Hangup {
                reason: String::new(),
            },
        )
        .encode()
        .to_vec();
        let pad = MAX_CALL_MESSAGE - exact.len();
        exact.splice(0..0, std::iter::repeat_n(b' ', pad));
        assert_eq!(exact.len(), MAX_CALL_MESSAGE);
        assert!(CallMessage::decode(&exact).is_ok());
        exact.insert(0, b' ');
        assert_eq!(
            CallMessage::decode(&exact).unwrap_err(),
            MessageError::TooLarge(MAX_CALL_MESSAGE + 1)
        );
    }

    #[test]
    fn every_kind_round_trips() {
        let id = CallId::random();
        let bodies = vec![
            Body::Offer {
                sdp: "v=0".into(),
                video: true,
                media_key: Some(key(5)),
                relay: None,
                members: Vec::new(),
                relay_token: None,
            },
            Body::Ringing,
            Body::Answer {
                sdp: "v=0".into(),
                media_key: key(6),
            },
            Body::Reject,
            Body::Busy,
            Body::Hangup {
                reason: "bye".into(),
            },
            Body::Mute {
                audio: false,
                video: true,
            },
            Body::MediaKey { media_key: key(7) },
        ];
        for (i, b) in bodies.into_iter().enumerate() {
            let m = CallMessage::new(id, i as u32, b);
            assert_eq!(CallMessage::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn garbage_and_mutations_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let valid = CallMessage::new(
            CallId([9; 16]),
            1,
            Body::Offer {
                sdp: "v=0\r\na=fingerprint:sha-256 AA".into(),
                video: true,
                media_key: Some(key(8)),
                relay: None,
                members: Vec::new(),
                relay_token: None,
            },
        )
        .encode()
        .to_vec();
        for _ in 0..20_000 {
            let mut b = valid.clone();
            for _ in 0..rng.gen_range(1..6) {
                let i = rng.gen_range(0..b.len());
                match rng.gen_range(0..3) {
                    0 => b[i] = rng.gen(),
                    1 => {
                        b.remove(i);
                    }
                    _ => b.truncate(i),
                }
                if b.is_empty() {
                    break;
                }
            }
            let _ = CallMessage::decode(&b);
            let len = rng.gen_range(0..64);
            let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = CallMessage::decode(&junk);
        }
    }

    #[test]
    fn reorder_releases_in_sequence_and_refuses_by_name() {
        let mut r = Reorder::new();
        assert!(r.push(ringing(2)).unwrap().is_empty());
        assert!(r.push(ringing(1)).unwrap().is_empty());
        assert_eq!(r.held(), 2);
        assert_eq!(
            r.push(ringing(2)).unwrap_err(),
            ReorderError::Duplicate { seq: 2 }
        );
        let out: Vec<u32> = r.push(ringing(0)).unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(out, vec![0, 1, 2]);
        assert_eq!(r.next_seq(), 3);
        assert_eq!(
            r.push(ringing(1)).unwrap_err(),
            ReorderError::Stale { seq: 1, next: 3 }
        );
        // window: next + MAX_REORDER - 1 is held, next + MAX_REORDER is refused
        assert!(r.push(ringing(3 + MAX_REORDER - 1)).unwrap().is_empty());
        assert_eq!(
            r.push(ringing(3 + MAX_REORDER)).unwrap_err(),
            ReorderError::TooFarAhead {
                seq: 3 + MAX_REORDER,
                next: 3
            }
        );
        assert_eq!(
            r.push(CallMessage::new(CallId([8; 16]), 3, Body::Ringing))
                .unwrap_err(),
            ReorderError::WrongCall
        );
        let mut s = Reorder::starting_at(CallId([7; 16]), 1);
        assert_eq!(s.push(ringing(1)).unwrap().len(), 1);
        assert_eq!(
            s.push(ringing(0)).unwrap_err(),
            ReorderError::Stale { seq: 0, next: 2 }
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod group_message_tests {
    use super::super::*;

    #[test]
    fn members_and_add_limits() {
        let id = CallId([0xab; 16]);
        let offer = |members: Vec<String>| {
            CallMessage::new(
                id,
                0,
                Body::Offer {
                    sdp: String::new(),
                    video: true,
                    media_key: None,
                    relay: Some("ws://r".into()),
                    members,
                    relay_token: None,
                },
            )
        };
        let name = |n: usize| "m".repeat(n);
        let ok = offer((0..MAX_GROUP_MEMBERS).map(|i| format!("m{i}")).collect());
        assert_eq!(CallMessage::decode(&ok.encode()).unwrap(), ok);
        let too_many = offer((0..=MAX_GROUP_MEMBERS).map(|i| format!("m{i}")).collect());
        assert_eq!(
            CallMessage::decode(&too_many.encode()).unwrap_err(),
            MessageError::Field("members")
        );
        assert!(CallMessage::decode(&offer(vec![name(MAX_MEMBER_NAME)]).encode()).is_ok());
        assert_eq!(
            CallMessage::decode(&offer(vec![name(MAX_MEMBER_NAME + 1)]).encode()).unwrap_err(),
            MessageError::Field("members")
        );
        let add = |u: String| CallMessage::new(id, 1, Body::Add { user: u });
        let a = add(name(MAX_MEMBER_NAME));
        let bytes = a.encode();
        assert!(std::str::from_utf8(&bytes)
            .unwrap()
            .contains(r#""type":"add","user":"#));
        assert_eq!(CallMessage::decode(&bytes).unwrap(), a);
        assert_eq!(
            CallMessage::decode(&add(name(MAX_MEMBER_NAME + 1)).encode()).unwrap_err(),
            MessageError::Field("user")
        );
        assert_eq!(
            CallMessage::decode(&add(String::new()).encode()).unwrap_err(),
            MessageError::Field("user")
        );
        let bad = [
            "bob\u{1b}[2J".to_string(),
            "bob\n".to_string(),
            "\u{0}".to_string(),
            "Bob".to_string(),
            "b\u{f6}b".to_string(),
            "\u{202e}bob".to_string(),
            String::new(),
            name(MAX_MEMBER_NAME + 1),
            "../x".to_string(),
            "a/b".to_string(),
            "bob ".to_string(),
        ];
        for b in bad {
            assert!(!valid_member_name(&b), "{b:?}");
            assert_eq!(
                CallMessage::decode(&add(b.clone()).encode()).unwrap_err(),
                MessageError::Field("user"),
                "{b:?}"
            );
            assert_eq!(
                CallMessage::decode(&offer(vec!["carol".into(), b.clone()]).encode()).unwrap_err(),
                MessageError::Field("members"),
                "{b:?}"
            );
        }
        for good in ["carol", "a", "alice.b-c_9", &name(MAX_MEMBER_NAME)] {
            assert!(valid_member_name(good), "{good}");
            let a = add(good.into());
            assert_eq!(CallMessage::decode(&a.encode()).unwrap(), a);
            let o = offer(vec![good.into()]);
            assert_eq!(CallMessage::decode(&o.encode()).unwrap(), o);
        }
        // the same rule as the signaling server's usernames
        for n in [
            "carol",
            "Carol",
            "",
            "../x",
            "a b",
            "x.y_z-0",
            &name(65),
            &name(64),
        ] {
            assert_eq!(
                valid_member_name(n),
                sotto_server::protocol::valid_username(n),
                "{n:?}"
            );
        }
        assert_eq!(MAX_MEMBER_NAME, sotto_server::consts::MAX_USERNAME_BYTES);
        // a 1:1 offer carries no members field at all
        let one = offer(vec![]);
        assert!(!std::str::from_utf8(&one.encode())
            .unwrap()
            .contains("members"));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod candidate_message_tests {
    use super::super::*;

    #[test]
    fn candidate_limit_and_exact_form() {
        let id = CallId([0xab; 16]);
        let m = |c: String| CallMessage::new(id, 2, Body::Candidate { candidate: c });
        let at = m("c".repeat(MAX_CANDIDATE));
        assert_eq!(CallMessage::decode(&at.encode()).unwrap(), at);
        assert_eq!(
            CallMessage::decode(&m("c".repeat(MAX_CANDIDATE + 1)).encode()).unwrap_err(),
            MessageError::Field("candidate")
        );
        let small = m("{}".into());
        assert_eq!(
            std::str::from_utf8(&small.encode()).unwrap(),
            r#"{"v":1,"call":"abababababababababababababababab","seq":2,"type":"candidate","candidate":"{}"}"#
        );
    }
}
