//! Loopback media: [`MediaPeer`]s with a tap of every frame they send or decrypt, two of them
//! connected, media factories for engines, and key rotation as the call core draws it.

use std::path::PathBuf;
use std::time::Duration;

use sotto_call::engine::MediaFactory;
use sotto_call::media::{MediaConfig, MediaPeer, TapFrame};
use sotto_frame::{KeyMaterial, SenderKey};
use tokio::sync::mpsc;

/// Every frame a peer sent or decrypted, in order.
pub type Tap = mpsc::UnboundedReceiver<TapFrame>;

/// A media peer with its tap.
pub struct Leg {
    pub peer: MediaPeer,
    pub tap: Tap,
}

/// A media peer for `cfg` with a fresh tap (any tap in `cfg` is replaced); its events are
/// dropped.
pub async fn tapped(mut cfg: MediaConfig) -> Leg {
    let (tx, rx) = mpsc::unbounded_channel();
    cfg.tap = Some(tx);
    let (peer, _events) = MediaPeer::new(cfg).await.unwrap();
    Leg { peer, tap: rx }
}

/// A loopback media peer with sender id `id` and a tap, recording what it receives under
/// `record` if given.
pub async fn leg(id: u64, record: Option<PathBuf>) -> Leg {
    let mut cfg = MediaConfig::loopback(id).unwrap();
    cfg.record_prefix = record;
    tapped(cfg).await
}

/// Connects `a` (offering) and `b` (answering), exchanging their keys first if
/// `exchange_keys`; panics unless both connect within 20 s. Neither starts sending.
pub async fn connect_pair(a: &MediaPeer, b: &MediaPeer, exchange_keys: bool) {
    let offer = a.create_offer().await.unwrap();
    let answer = b.accept_offer(&offer).await.unwrap();
    a.accept_answer(&answer).await.unwrap();
    if exchange_keys {
        a.install_remote_key(&b.local_key_material()).unwrap();
        b.install_remote_key(&a.local_key_material()).unwrap();
    }
    assert!(
        a.wait_connected(Duration::from_secs(20)).await,
        "a never connected"
    );
    assert!(
        b.wait_connected(Duration::from_secs(20)).await,
        "b never connected"
    );
}

/// The frames in `tap` so far.
pub fn drain(tap: &mut Tap) -> Vec<TapFrame> {
    let mut v = Vec::new();
    while let Ok(f) = tap.try_recv() {
        v.push(f);
    }
    v
}

/// The next generation of `m` under a fresh base key: what the call core's key schedule draws
/// for a rotation (`sotto_call::group`).
pub fn rotated(m: &KeyMaterial) -> KeyMaterial {
    let mut k = SenderKey::resume(m, 0).unwrap();
    k.rotate(&rand::random::<[u8; 32]>()).unwrap();
    k.material()
}

/// An engine's media factory: [`MediaConfig::loopback`] for each call, then `tweak`.
pub fn loopback_factory(tweak: impl Fn(&mut MediaConfig) + Send + 'static) -> MediaFactory {
    Box::new(move |id| {
        let mut c = MediaConfig::loopback(id)?;
        tweak(&mut c);
        Ok(c)
    })
}
