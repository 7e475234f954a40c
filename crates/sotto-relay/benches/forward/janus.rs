//! The Janus row: the relay's participants, publishing to and subscribing from a Janus
//! VideoRoom. Janus counts nothing we can read cheaply, so its figures are the participants'
//! own: packets they received, and the Janus process's CPU per packet received.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sotto_testkit::janus::{create_room, publish, subscribe, Janus, JanusSession};
use sotto_testkit::plain::PlainPeer;
use sotto_testkit::relay::vp8_track;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::{
    clock_ticks, cpu_time, spawn_senders, Figures, DURATION, RECEIVED, SENDERS, SENT, WARM_UP,
};

const ROOM: u64 = 4242;

/// A peer whose every received RTP packet counts in `RECEIVED`.
async fn counting_peer() -> PlainPeer {
    let on_track = Box::new(|track: Arc<dyn TrackRemote>| {
        tokio::spawn(async move {
            while let Some(evt) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(_) = evt {
                    RECEIVED.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    });
    PlainPeer::build(None, Some(on_track)).await
}

/// `SENDERS` publishers, each also subscribed to the others, and a listener subscribed to all:
/// the relay run's 16 streams. `None` if Janus is not installed.
pub(crate) async fn janus_run() -> Option<Figures> {
    let janus = Janus::start()?;
    let url = janus.url();
    let mut admin = JanusSession::open(&url).await;
    create_room(&mut admin, ROOM, SENDERS + 1).await;
    let mut keep = vec![admin.keep_alive()];
    let (mut tracks, mut feeds, mut peers) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..SENDERS {
        let name = format!("p{i}");
        let peer = PlainPeer::new().await;
        let ssrc = rand::random::<u32>();
        let video = Arc::new(vp8_track(&name, ssrc));
        peer.pc
            .add_track(video.clone() as Arc<dyn TrackLocal>)
            .await
            .unwrap();
        let mut s = JanusSession::open(&url).await;
        let (answer, feed) = publish(&mut s, ROOM, &name, peer.offer().await.unwrap()).await;
        peer.accept_answer(answer).await.unwrap();
        peer.wait_connected(&name).await;
        keep.push(s.keep_alive());
        tracks.push((video, ssrc));
        feeds.push(feed);
        peers.push(peer);
    }
    for i in 0..=SENDERS {
        let others: Vec<u64> = (0..SENDERS).filter(|&j| j != i).map(|j| feeds[j]).collect();
        let peer = counting_peer().await;
        let mut s = JanusSession::open(&url).await;
        subscribe(&mut s, ROOM, &others, |offer| async {
            peer.answer(offer).await.unwrap()
        })
        .await;
        peer.wait_connected(&format!("subscriber {i}")).await;
        keep.push(s.keep_alive());
        peers.push(peer);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let senders = spawn_senders(tracks, &stop);
    tokio::time::sleep(WARM_UP).await;
    let tick = clock_ticks();
    let (rx0, tx0, c0) = (
        RECEIVED.load(Ordering::Relaxed),
        SENT.load(Ordering::Relaxed),
        cpu_time(janus.pid(), tick),
    );
    let t0 = Instant::now();
    tokio::time::sleep(DURATION).await;
    let (rx1, tx1, c1) = (
        RECEIVED.load(Ordering::Relaxed),
        SENT.load(Ordering::Relaxed),
        cpu_time(janus.pid(), tick),
    );
    let t = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.await;
    }
    let (rx, tx, cpu) = (
        (rx1 - rx0) as f64,
        (tx1 - tx0) as f64,
        (c1 - c0).as_secs_f64(),
    );
    let f = Figures {
        rate: rx / t,
        cpu_us: cpu * 1e6 / rx.max(1.0),
        fan_out: rx / tx.max(1.0),
        delivered: 0.0,
        cpu_us_delivered: 0.0,
    }
    .with_delivered(rx / t, cpu / t);
    println!(
        "janus videoroom: participants received {:.0} packets/s ({:.2} per packet sent), {:.1} us \
         of janus-process CPU per packet received",
        f.delivered, f.fan_out, f.cpu_us_delivered
    );
    for p in &peers {
        let _ = tokio::time::timeout(Duration::from_secs(5), p.pc.close()).await;
    }
    keep.iter().for_each(|k| k.abort());
    Some(f)
}
