//! Keyframe requests (RTCP PLI/FIR) from receivers, surfaced to the relay so it can ask the
//! original sender for a keyframe.
//!
//! webrtc-rs hands inbound RTCP to the application only when an interceptor marks it with
//! `Attribute::DeliverToApplication`. [`KeyframeRequests`] marks PLI and FIR and drops every
//! other inbound RTCP packet (for an endpoint that acts on nothing else);
//! [`KeyframeRequests::passing_other_rtcp`] marks them the same way but lets every other packet
//! through untouched, for endpoints whose other interceptors (NACK responder) need them. The relay
//! and sotto's `MediaPeer` use the latter (the relay's chain: [`crate::nack::registry`]).

use std::collections::VecDeque;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio;
use rtc::shared::error::Error;

/// Whether an RTCP packet asks for a keyframe (PLI or FIR).
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Interceptor passing inbound PLI/FIR to the application and dropping other inbound RTCP.
#[derive(Default)]
pub struct KeyframeRequests {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
    pass_others: bool,
}

impl KeyframeRequests {
    /// Marks inbound PLI/FIR for the application and passes every inbound packet on unchanged
    /// (receiver reports and NACKs still reach the interceptors that act on them).
    pub fn passing_other_rtcp() -> Self {
        KeyframeRequests {
            pass_others: true,
            ..Self::default()
        }
    }
}

impl sansio::Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            if self.pass_others {
                if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                    msg.message.add(Attribute::DeliverToApplication);
                }
                self.read.push_back(msg);
                return Ok(());
            }
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| is_keyframe_request(p.as_ref()))
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
