//! Hand-written prost message structs mirroring libsignal 0.90.0's `wire.proto` and
//! `storage.proto`/`fingerprint.proto` field numbers (see `protocol-spec/ratchet.md`).

/// Messages on the wire.
pub mod wire {
    /// `signal.proto.wire.SignalMessage` (proto2): field 5 `pq_ratchet` (SPQR), field 6
    /// `addresses` (libsignal ≥ 0.91); unknown fields are skipped by prost.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SignalMessage {
        #[prost(bytes = "vec", optional, tag = "1")]
        pub ratchet_key: Option<Vec<u8>>,
        #[prost(uint32, optional, tag = "2")]
        pub counter: Option<u32>,
        #[prost(uint32, optional, tag = "3")]
        pub previous_counter: Option<u32>,
        #[prost(bytes = "vec", optional, tag = "4")]
        pub ciphertext: Option<Vec<u8>>,
        #[prost(bytes = "vec", optional, tag = "5")]
        pub pq_ratchet: Option<Vec<u8>>,
        #[prost(bytes = "vec", optional, tag = "6")]
        pub addresses: Option<Vec<u8>>,
    }

    /// `signal.proto.wire.PreKeySignalMessage` (proto2).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PreKeySignalMessage {
        #[prost(uint32, optional, tag = "5")]
        pub registration_id: Option<u32>,
        #[prost(uint32, optional, tag = "1")]
        pub pre_key_id: Option<u32>,
        #[prost(uint32, optional, tag = "6")]
        pub signed_pre_key_id: Option<u32>,
        #[prost(uint32, optional, tag = "7")]
        pub kyber_pre_key_id: Option<u32>,
        #[prost(bytes = "vec", optional, tag = "8")]
        pub kyber_ciphertext: Option<Vec<u8>>,
        #[prost(bytes = "vec", optional, tag = "2")]
        pub base_key: Option<Vec<u8>>,
        #[prost(bytes = "vec", optional, tag = "3")]
        pub identity_key: Option<Vec<u8>>,
        #[prost(bytes = "vec", optional, tag = "4")]
        pub message: Option<Vec<u8>>,
    }
}

/// Storage structures.
pub mod storage {
    use zeroize::Zeroize;

    /// `signal.proto.storage.IdentityKeyPairStructure` (proto3).
    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct IdentityKeyPairStructure {
        #[prost(bytes = "vec", tag = "1")]
        pub public_key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub private_key: Vec<u8>,
    }

    /// `SessionStructure.Chain.ChainKey`.
    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct ChainKey {
        #[prost(uint32, tag = "1")]
        pub index: u32,
        #[prost(bytes = "vec", tag = "2")]
        pub key: Vec<u8>,
    }

    /// `SessionStructure.Chain.MessageKey` (we always store the seed form).
    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct MessageKey {
        #[prost(uint32, tag = "1")]
        pub index: u32,
        #[prost(bytes = "vec", tag = "5")]
        pub seed: Vec<u8>,
    }

    /// `SessionStructure.Chain`.
    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct Chain {
        #[prost(bytes = "vec", tag = "1")]
        pub sender_ratchet_key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub sender_ratchet_key_private: Vec<u8>,
        #[prost(message, optional, tag = "3")]
        pub chain_key: Option<ChainKey>,
        #[prost(message, repeated, tag = "4")]
        pub message_keys: Vec<MessageKey>,
    }

    /// `SessionStructure.PendingPreKey`.
    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct PendingPreKey {
        #[prost(uint32, optional, tag = "1")]
        pub pre_key_id: Option<u32>,
        #[prost(int32, tag = "3")]
        pub signed_pre_key_id: i32,
        #[prost(bytes = "vec", tag = "2")]
        pub base_key: Vec<u8>,
        #[prost(uint64, tag = "4")]
        pub timestamp: u64,
    }

    /// `SessionStructure.PendingKyberPreKey`.
    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct PendingKyberPreKey {
        #[prost(uint32, tag = "1")]
        pub pre_key_id: u32,
        #[prost(bytes = "vec", tag = "2")]
        pub ciphertext: Vec<u8>,
    }

    /// `signal.proto.storage.SessionStructure` (proto3), same field numbers as libsignal.
    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct SessionStructure {
        #[prost(uint32, tag = "1")]
        pub session_version: u32,
        #[prost(bytes = "vec", tag = "2")]
        pub local_identity_public: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub remote_identity_public: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub root_key: Vec<u8>,
        #[prost(uint32, tag = "5")]
        pub previous_counter: u32,
        #[prost(message, optional, tag = "6")]
        pub sender_chain: Option<Chain>,
        #[prost(message, repeated, tag = "7")]
        pub receiver_chains: Vec<Chain>,
        #[prost(message, optional, tag = "9")]
        pub pending_pre_key: Option<PendingPreKey>,
        #[prost(message, optional, tag = "14")]
        pub pending_kyber_pre_key: Option<PendingKyberPreKey>,
        #[prost(uint32, tag = "10")]
        pub remote_registration_id: u32,
        #[prost(uint32, tag = "11")]
        pub local_registration_id: u32,
        #[prost(bytes = "vec", tag = "13")]
        pub alice_base_key: Vec<u8>,
        /// sotto's own SPQR state encoding (`spqr::storage`); empty = no SPQR.
        #[prost(bytes = "vec", tag = "15")]
        pub pq_ratchet_state: Vec<u8>,
    }

    /// `signal.proto.storage.RecordStructure`.
    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct RecordStructure {
        #[prost(message, optional, tag = "1")]
        pub current_session: Option<SessionStructure>,
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub previous_sessions: Vec<Vec<u8>>,
    }

    /// `PreKeyRecordStructure`.
    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct PreKeyRecordStructure {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(bytes = "vec", tag = "2")]
        pub public_key: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub private_key: Vec<u8>,
    }

    /// `SignedPreKeyRecordStructure` (libsignal uses it for Kyber prekeys too).
    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct SignedPreKeyRecordStructure {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(bytes = "vec", tag = "2")]
        pub public_key: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub private_key: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub signature: Vec<u8>,
        #[prost(fixed64, tag = "5")]
        pub timestamp: u64,
    }
}

/// Scannable fingerprint.
pub mod fingerprint {
    /// `signal.proto.fingerprint.LogicalFingerprint` (proto2).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogicalFingerprint {
        #[prost(bytes = "vec", optional, tag = "1")]
        pub content: Option<Vec<u8>>,
    }

    /// `signal.proto.fingerprint.CombinedFingerprints` (proto2).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CombinedFingerprints {
        #[prost(uint32, optional, tag = "1")]
        pub version: Option<u32>,
        #[prost(message, optional, tag = "2")]
        pub local_fingerprint: Option<LogicalFingerprint>,
        #[prost(message, optional, tag = "3")]
        pub remote_fingerprint: Option<LogicalFingerprint>,
    }
}

/// File-store snapshot (sotto's own format; see `file_store`).
pub mod snapshot {
    use zeroize::Zeroize;

    use super::storage::{PreKeyRecordStructure, SignedPreKeyRecordStructure};

    /// A contact's identity or session, keyed by address.
    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct AddressEntry {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(uint32, tag = "2")]
        pub device_id: u32,
        #[prost(bytes = "vec", tag = "3")]
        pub value: Vec<u8>,
    }

    /// A Kyber prekey with its last-resort flag.
    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct KyberEntry {
        #[prost(message, optional, tag = "1")]
        pub record: Option<SignedPreKeyRecordStructure>,
        #[prost(bool, tag = "2")]
        pub last_resort: bool,
    }

    /// Everything in an `InMemoryStore`.
    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct StoreSnapshot {
        #[prost(bytes = "vec", tag = "1")]
        pub identity_key_pair: Vec<u8>,
        #[prost(uint32, tag = "2")]
        pub registration_id: u32,
        #[prost(message, repeated, tag = "3")]
        pub identities: Vec<AddressEntry>,
        #[prost(message, repeated, tag = "4")]
        pub pre_keys: Vec<PreKeyRecordStructure>,
        #[prost(message, repeated, tag = "5")]
        pub signed_pre_keys: Vec<SignedPreKeyRecordStructure>,
        #[prost(message, repeated, tag = "6")]
        pub kyber_pre_keys: Vec<KyberEntry>,
        #[prost(message, repeated, tag = "7")]
        pub sessions: Vec<AddressEntry>,
    }
}
