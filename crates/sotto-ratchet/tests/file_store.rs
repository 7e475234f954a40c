//! The encrypted file store: survives a restart, refuses wrong keys and tampered files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use common::{now, rng, Party};
use sotto_ratchet::*;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sotto-ratchet-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("store.bin")
}

const PASS: StoreKeySource<'static> = StoreKeySource::Passphrase(b"correct horse battery staple");

#[test]
fn file_store_session_survives_restart() {
    let path = tmp("restart");
    let mut r = rng(1);
    let mut alice = Party::new("alice", 1, &mut r);
    let bob_id = IdentityKeyPair::generate(&mut r);
    let bob_addr = ProtocolAddress::new("bob", 1);
    let bundle = {
        let mut bob = FileStore::create(&path, PASS, bob_id.clone(), 2, rng(2)).unwrap();
        let spk = SignedPreKeyRecord::generate(1, 0, &bob_id, &mut r);
        let kpk = KyberPreKeyRecord::generate(1, 0, &bob_id, &mut r);
        let opk = PreKeyRecord::generate(5, &mut r);
        let b = PreKeyBundle::from_records(2, 1, bob_id.public(), Some(&opk), &spk, &kpk);
        bob.save_signed_pre_key(spk).unwrap();
        bob.save_kyber_pre_key(kpk, false).unwrap();
        bob.save_pre_key(opk).unwrap();
        b
    }; // "process exits"
    process_prekey_bundle(&bob_addr, &mut alice.store, &bundle, now(), &mut r).unwrap();
    let m1 = alice.encrypt(&bob_addr, b"before restart");
    let m2 = alice.encrypt(&bob_addr, b"after restart");
    {
        let mut bob = FileStore::open(&path, PASS, rng(3)).unwrap();
        let pt = decrypt(&alice.address, &mut bob, &m1, &mut r).unwrap();
        assert_eq!(pt, b"before restart");
        assert!(bob.get_pre_key(5).unwrap().is_none());
        assert!(
            bob.get_kyber_pre_key(1).unwrap().is_none(),
            "one-time Kyber key used"
        );
    }
    let mut bob = FileStore::open(&path, PASS, rng(4)).unwrap();
    assert_eq!(bob.identity_key_pair().unwrap().public(), bob_id.public());
    assert_eq!(
        bob.get_identity(&alice.address).unwrap(),
        Some(alice.identity.public())
    );
    assert_eq!(
        decrypt(&alice.address, &mut bob, &m2, &mut r).unwrap(),
        b"after restart"
    );
    let reply = encrypt(&alice.address, &mut bob, b"reply", now()).unwrap();
    assert_eq!(alice.decrypt(&bob_addr, &reply, &mut r).unwrap(), b"reply");
    assert!(
        !path.with_extension("bin.tmp").exists(),
        "temp file renamed away"
    );
}

#[test]
fn file_store_refuses_wrong_passphrase_and_every_tampered_byte() {
    let path = tmp("tamper");
    let id = IdentityKeyPair::generate(&mut rng(5));
    drop(FileStore::create(&path, PASS, id, 7, rng(6)).unwrap());
    let wrong = StoreKeySource::Passphrase(b"wrong");
    assert_eq!(
        FileStore::open(&path, wrong, rng(7)).unwrap_err(),
        Error::StoreTampered
    );
    let good = std::fs::read(&path).unwrap();
    // Flip one byte at a time in the salt, nonce and ciphertext: always refused.
    for i in (9..good.len()).step_by(7) {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        let err = FileStore::open(&path, PASS, rng(8)).unwrap_err();
        assert_eq!(err, Error::StoreTampered, "byte {i}");
    }
    std::fs::write(&path, &good[..good.len() - 1]).unwrap();
    assert_eq!(
        FileStore::open(&path, PASS, rng(9)).unwrap_err(),
        Error::StoreTampered
    );
    std::fs::write(&path, b"not a store").unwrap();
    assert!(matches!(
        FileStore::open(&path, PASS, rng(9)).unwrap_err(),
        Error::StoreFormat(_)
    ));
    assert_eq!(
        format!("{}", Error::StoreTampered),
        "store file failed authentication (wrong key or tampered file)"
    );
    std::fs::write(&path, &good).unwrap();
    assert!(FileStore::open(&path, PASS, rng(10)).is_ok());
}

#[test]
fn file_store_with_key_file() {
    let path = tmp("keyfile");
    let key_path = path.with_file_name("store.key");
    std::fs::write(&key_path, [0x42u8; 32]).unwrap();
    let id = IdentityKeyPair::generate(&mut rng(11));
    let src = || StoreKeySource::KeyFile(&key_path);
    drop(FileStore::create(&path, src(), id.clone(), 9, rng(12)).unwrap());
    assert!(
        FileStore::create(&path, src(), id.clone(), 9, rng(12)).is_err(),
        "no overwrite"
    );
    let s = FileStore::open(&path, src(), rng(13)).unwrap();
    assert_eq!(s.local_registration_id().unwrap(), 9);
    assert!(format!("{s:?}").contains("redacted"));
    // A passphrase cannot open a key-file store, a wrong key file is refused.
    assert!(FileStore::open(&path, PASS, rng(14)).is_err());
    std::fs::write(&key_path, [0x43u8; 32]).unwrap();
    assert_eq!(
        FileStore::open(&path, src(), rng(15)).unwrap_err(),
        Error::StoreTampered
    );
    std::fs::write(&key_path, [0x42u8; 31]).unwrap();
    assert!(matches!(
        FileStore::open(&path, src(), rng(16)).unwrap_err(),
        Error::InvalidArgument(_)
    ));
}

#[test]
fn a_transaction_that_panics_rolls_back_and_leaves_the_store_writing() {
    let path = tmp("txn-panic");
    let id = IdentityKeyPair::generate(&mut rng(30));
    let mut r = rng(31);
    let mut s = FileStore::create(&path, PASS, id, 3, rng(32)).unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = s.transaction(|s| {
            s.save_pre_key(PreKeyRecord::generate(1, &mut r))?;
            panic!("a bug in the middle of a change");
            #[allow(unreachable_code)]
            Ok(())
        });
    }));
    assert!(caught.is_err(), "the panic reaches the caller");
    assert!(s.get_pre_key(1).unwrap().is_none(), "memory rolled back");
    assert_eq!(std::fs::read(&path).unwrap(), on_disk, "file untouched");
    // the next change is written through (no transaction left open that it would join)
    s.save_pre_key(PreKeyRecord::generate(2, &mut r)).unwrap();
    drop(s);
    let s = FileStore::open(&path, PASS, rng(33)).unwrap();
    assert!(
        s.get_pre_key(2).unwrap().is_some(),
        "written after the panic"
    );
    assert!(s.get_pre_key(1).unwrap().is_none());
}

#[test]
fn a_transaction_is_all_or_nothing_in_memory_and_on_disk() {
    let path = tmp("txn");
    let id = IdentityKeyPair::generate(&mut rng(20));
    let mut r = rng(21);
    let mut s = FileStore::create(&path, PASS, id, 3, rng(22)).unwrap();
    let on_disk = std::fs::read(&path).unwrap();

    // a closure that changes two things and then fails: neither change stays, file untouched
    let err = s
        .transaction(|s| {
            s.save_pre_key(PreKeyRecord::generate(1, &mut r))?;
            s.save_pre_key(PreKeyRecord::generate(2, &mut r))?;
            Err::<(), _>(Error::InvalidArgument("caller gave up"))
        })
        .unwrap_err();
    assert_eq!(err, Error::InvalidArgument("caller gave up"));
    assert!(s.get_pre_key(1).unwrap().is_none());
    assert!(s.get_pre_key(2).unwrap().is_none());
    assert_eq!(std::fs::read(&path).unwrap(), on_disk, "file untouched");

    // a closure that succeeds: both changes, one write, visible after reopening
    s.transaction(|s| {
        s.save_pre_key(PreKeyRecord::generate(1, &mut r))?;
        s.save_pre_key(PreKeyRecord::generate(2, &mut r))
    })
    .unwrap();
    drop(s);
    let mut s = FileStore::open(&path, PASS, rng(23)).unwrap();
    assert!(s.get_pre_key(1).unwrap().is_some());
    assert!(s.get_pre_key(2).unwrap().is_some());

    // a write that fails (the temporary file's name is taken by a directory): the mutation is
    // refused with an I/O error and memory goes back to what the file holds
    let before = std::fs::read(&path).unwrap();
    let tmp_path = path.with_extension("bin.tmp");
    std::fs::create_dir(&tmp_path).unwrap();
    let err = s.remove_pre_key(1).unwrap_err();
    assert!(matches!(err, Error::StoreIo(_)), "{err:?}");
    assert!(
        s.get_pre_key(1).unwrap().is_some(),
        "memory rolled back to what is on disk"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    std::fs::remove_dir(&tmp_path).unwrap();
    s.remove_pre_key(1).unwrap();
    drop(s);
    let s = FileStore::open(&path, PASS, rng(24)).unwrap();
    assert!(s.get_pre_key(1).unwrap().is_none());
    assert!(s.get_pre_key(2).unwrap().is_some());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "store file readable by its owner only");
    }
}

#[test]
fn stored_identities_are_listed_sorted_and_survive_restart() {
    let path = tmp("identities");
    let mut r = rng(20);
    let me = IdentityKeyPair::generate(&mut r);
    let addrs = [
        ProtocolAddress::new("carol", 1),
        ProtocolAddress::new("bob", 2),
        ProtocolAddress::new("bob", 1),
    ];
    {
        let mut s = FileStore::create(&path, PASS, me, 3, rng(21)).unwrap();
        assert!(s.identity_addresses().unwrap().is_empty());
        for a in &addrs {
            let key = IdentityKeyPair::generate(&mut r).public();
            let _ = s.save_identity(a, &key).unwrap();
        }
    }
    let s = FileStore::open(&path, PASS, rng(22)).unwrap();
    assert_eq!(
        s.identity_addresses().unwrap(),
        [
            ProtocolAddress::new("bob", 1),
            ProtocolAddress::new("bob", 2),
            ProtocolAddress::new("carol", 1),
        ]
    );
}
