//! The answer to a pipelined write (`send` or `ack`), written once: from the outcome of its group
//! commit to the protocol answer and the counters it moves.
//!
//! The store thread (`worker.rs`) counts each outcome right after its commit and hands the
//! typed outcome to the requesting connection; the connection builds the answer from it here and
//! encodes it when it writes it, so the store thread never builds or encodes a frame.

use crate::error::ErrorCode;
use crate::metrics::Metrics;
use crate::protocol::ServerMessage;
use crate::store::{EnqueueOutcome, WriteOutcome};

/// A write's committed outcome; `None` when its group commit failed.
pub(crate) type Written = Option<WriteOutcome>;

/// Why the write is refused, if it is.
fn refusal(outcome: &Written) -> Option<(ErrorCode, &'static str)> {
    match outcome {
        Some(WriteOutcome::Enqueued(EnqueueOutcome::Stored(_))) | Some(WriteOutcome::Acked(_)) => {
            None
        }
        Some(WriteOutcome::Enqueued(EnqueueOutcome::QueueFull)) => {
            Some((ErrorCode::RecipientQueueFull, "recipient queue full"))
        }
        Some(WriteOutcome::Enqueued(EnqueueOutcome::SenderShareFull)) => Some((
            ErrorCode::SenderShareFull,
            "too many envelopes from this sender waiting for the recipient",
        )),
        Some(WriteOutcome::Enqueued(EnqueueOutcome::UnknownRecipient)) => {
            Some((ErrorCode::UnknownRecipient, "unknown recipient"))
        }
        None => Some((ErrorCode::Internal, "storage failure")),
    }
}

/// Counts a committed write: the envelope stored or deleted, or the error frame its answer is.
pub(crate) fn count(metrics: &Metrics, outcome: &Written) {
    match outcome {
        Some(WriteOutcome::Enqueued(EnqueueOutcome::Stored(_))) => {
            Metrics::inc(&metrics.envelopes_stored_total);
        }
        Some(WriteOutcome::Acked(true)) => Metrics::inc(&metrics.envelopes_acked_total),
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
        Some(WriteOutcome::Enqueued(EnqueueOutcome::Stored(envelope_id))) => {
            ServerMessage::Stored {
                id,
                envelope_id: *envelope_id,
            }
        }
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
        let stored = Some(WriteOutcome::Enqueued(EnqueueOutcome::Stored(7)));
        count(&m, &stored);
        count(&m, &Some(WriteOutcome::Acked(true)));
        count(&m, &Some(WriteOutcome::Acked(false)));
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
            message(4, &Some(WriteOutcome::Acked(false))),
            ServerMessage::Acked { id: 4 }
        ));
    }

    #[test]
    fn refusals_are_error_frames_counted_by_code() {
        let m = Metrics::default();
        let cases = [
            (
                Some(WriteOutcome::Enqueued(EnqueueOutcome::QueueFull)),
                ErrorCode::RecipientQueueFull,
            ),
            (
                Some(WriteOutcome::Enqueued(EnqueueOutcome::UnknownRecipient)),
                ErrorCode::UnknownRecipient,
            ),
            (
                Some(WriteOutcome::Enqueued(EnqueueOutcome::SenderShareFull)),
                ErrorCode::SenderShareFull,
            ),
            (None, ErrorCode::Internal),
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
        assert_eq!(errors(&m).lines().count(), 4);
    }
}
