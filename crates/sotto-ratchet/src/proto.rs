//! Hand-written prost message structs mirroring libsignal 0.90.0's `wire.proto` and
//! `storage.proto`/`fingerprint.proto` field numbers (see `protocol-spec/ratchet.md`).

/// Messages on the wire.
pub mod wire {
    /// `signal.proto.wire.SignalMessage` (proto2). Field 5 (`pq_ratchet`, SPQR) is decoded so
    /// we can tell a peer that needs it; field 6 and any unknown fields are skipped by prost.
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
