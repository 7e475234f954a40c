//! The answer to a pipelined write (`send` or `ack`), written once: from the outcome of its group
//! commit to the protocol answer and the counters it moves.
//!
//! The store thread (`worker.rs`) counts each outcome right after its commit and hands the
//! typed outcome to the requesting connection; the connection builds the answer from it here and
//! encodes it when it writes it, so the store thread never builds or encodes a frame.

use crate::error::ErrorCode;
use crate::metrics::Metrics;
use crate::protocol::ServerMessage;
use crate::store::{EnqueueOutcome, StoreError, WriteOutcome};

/// A write's committed outcome, or the code of its group commit's failure.
pub(crate) type Written = Result<WriteOutcome, ErrorCode>;

/// The code a peer is told for a store failure (the details go to the log only).
pub(crate) fn failure_code(e: &StoreError) -> ErrorCode {
    match e {
        StoreError::Unavailable(_) => ErrorCode::StorageUnavailable,
        _ => ErrorCode::Internal,
    }
}

/// Why the write is refused, if it is.
fn refusal(outcome: &Written) -> Option<(ErrorCode, &'static str)> {
    match outcome {
        Ok(WriteOutcome::Enqueued(EnqueueOutcome::Stored(_))) | Ok(WriteOutcome::Acked(_)) => None,
        Ok(WriteOutcome::Enqueued(EnqueueOutcome::QueueFull)) => {
            Some((ErrorCode::RecipientQueueFull, "recipient queue full"))
        }
        Ok(WriteOutcome::Enqueued(EnqueueOutcome::SenderShareFull)) => Some((
            ErrorCode::SenderShareFull,
            "too many envelopes from this sender waiting for the recipient",
        )),
        Ok(WriteOutcome::Enqueued(EnqueueOutcome::UnknownRecipient)) => {
            Some((ErrorCode::UnknownRecipient, "unknown recipient"))
        }
        Err(ErrorCode::StorageUnavailable) => {
            Some((ErrorCode::StorageUnavailable, "storage unavailable"))
        }
        Err(code) => Some((*code, "storage failure")),
    }
}

/// Counts a committed write: the envelope stored or deleted, or the error frame its answer is.
pub(crate) fn count(metrics: &Metrics, outcome: &Written) {
    match outcome {
        Ok(WriteOutcome::Enqueued(EnqueueOutcome::Stored(_))) => {
            Metrics::inc(&metrics.envelopes_stored_total);
        }
        Ok(WriteOutcome::Acked(true)) => Metrics::inc(&metrics.envelopes_acked_total),
        _ => {}
    }
    if let Some((code, _)) = refusal(outcome) {
        metrics.error(code);
    }
}

/// The answer to request `id` whose write had `outcome`.
pub(crate) fn message(id: u64, outcome: &Written) -> ServerMessage {
    if let Some((code, why)) = refusal(outcome) {
        return ServerMessage::error(Some(id), code, why);
    }
    match outcome {
        Ok(WriteOutcome::Enqueued(EnqueueOutcome::Stored(envelope_id))) => ServerMessage::Stored {
            id,
            envelope_id: *envelope_id,
        },
        _ => ServerMessage::Acked { id },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(m: &Metrics) -> String {
        m.render()
            .lines()
            .filter(|l| l.starts_with("sotto_error_frames_total{"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn stored_and_acked_are_counted_and_answered() {
        let m = Metrics::default();
        let stored = Ok(WriteOutcome::Enqueued(EnqueueOutcome::Stored(7)));
        count(&m, &stored);
        count(&m, &Ok(WriteOutcome::Acked(true)));
        count(&m, &Ok(WriteOutcome::Acked(false)));
        assert_eq!(
            m.envelopes_stored_total
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            m.envelopes_acked_total
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(errors(&m), "");
        assert!(matches!(
            message(3, &stored),
            ServerMessage::Stored {
                id: 3,
                envelope_id: 7
            }
        ));
        assert!(matches!(
            message(4, &Ok(WriteOutcome::Acked(false))),
            ServerMessage::Acked { id: 4 }
        ));
    }

    #[test]
    fn an_unreachable_database_is_told_apart_from_a_failure() {
        assert_eq!(
            failure_code(&StoreError::Unavailable("down".into())),
            ErrorCode::StorageUnavailable
        );
        assert_eq!(
            failure_code(&StoreError::Failed("constraint".into())),
            ErrorCode::Internal
        );
    }

    #[test]
    fn refusals_are_error_frames_counted_by_code() {
        let m = Metrics::default();
        let cases = [
            (
                Ok(WriteOutcome::Enqueued(EnqueueOutcome::QueueFull)),
                ErrorCode::RecipientQueueFull,
            ),
            (
                Ok(WriteOutcome::Enqueued(EnqueueOutcome::UnknownRecipient)),
                ErrorCode::UnknownRecipient,
            ),
            (
                Ok(WriteOutcome::Enqueued(EnqueueOutcome::SenderShareFull)),
                ErrorCode::SenderShareFull,
            ),
            (Err(ErrorCode::Internal), ErrorCode::Internal),
            (
                Err(ErrorCode::StorageUnavailable),
                ErrorCode::StorageUnavailable,
            ),
        ];
        for (outcome, want) in &cases {
            count(&m, outcome);
            match message(9, outcome) {
                ServerMessage::Error { id, code, .. } => {
                    assert_eq!(id, Some(9));
                    assert_eq!(code, *want);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            m.envelopes_stored_total
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        assert_eq!(errors(&m).lines().count(), 5);
    }
}
