//! `sotto app`: this device with the browser call screen. The engine is the one `call` and
//! `answer` run; its media engine is the page (camera, microphone, WebRTC, SFrame worker),
//! served on 127.0.0.1 by `sotto-app`.

use std::sync::Arc;

use sotto_app::consts::{CONTACTS_REFRESH_TIMEOUT, CONTACT_LOOKUP_TIMEOUT};
use sotto_app::page_media::IceProvider;
use sotto_app::protocol::{
    NoticeKind, PageCommand, PageContacts, PageIceServer, PageMember, PageStatus, ToPage,
};
use sotto_app::{AppWiring, PageLink, PageMedia};
use sotto_call::core::CallState;
use sotto_call::engine::RelayChoice;
use sotto_call::engine::{
    default_machine, sender_id_for, Command as EngineCmd, Engine, Notice, Status,
};
use sotto_call::messages::valid_member_name;
use sotto_call::sealed::Device;
use sotto_frame::CipherSuite;
use tokio::sync::{mpsc, watch};

use crate::phone::{notice_line, printable};
use crate::settings::ClientArgs;
use crate::CliError;

#[derive(clap::Args, Debug)]
pub struct AppArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Open the call screen in the system's browser (`chromium --app=…` where present).
    #[arg(long)]
    open: bool,
}

/// How long showing or trusting a changed identity may take (server round trips: the device
/// listing, then the prekey bundle of the key to trust).
pub const TRUST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

fn fail(s: impl Into<String>) -> CliError {
    CliError::Usage(s.into())
}

pub fn run(a: AppArgs) -> Result<(), CliError> {
    let st = a.client.resolve()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    rt.block_on(async move {
        let user = st.user()?.to_string();
        if let Some(r) = st.relay.as_ref().and_then(RelayChoice::url) {
            sotto_server::tls::check_url(r).map_err(|e| fail(format!("relay: {e}")))?;
        }
        let (dev, events) = crate::account::load_device(&st).await?;
        // each call's ICE servers as `call`/`answer` get them: the signaling server's STUN and
        // TURN with fresh credentials, or the user's --ice URLs
        let (client, given) = (dev.client().clone(), st.ice.clone());
        let ice: IceProvider = Arc::new(move || {
            let (client, given) = (client.clone(), given.clone());
            Box::pin(async move {
                crate::phone::call_ice_servers(&client, given)
                    .await
                    .into_iter()
                    .map(|s| PageIceServer {
                        urls: s.urls,
                        username: s.username,
                        credential: s.credential,
                    })
                    .collect()
            })
        });
        let link = PageLink::default();
        let media = PageMedia::new(link.clone(), CipherSuite::default(), ice, st.relay_only);
        let engine = Engine::spawn_with_media(
            dev,
            events,
            Box::new(media),
            default_machine,
            st.relay.clone(),
        );
        serve(user, engine, link, a.open).await
    })
}

async fn serve(
    user: String,
    mut engine: Engine,
    link: PageLink,
    open: bool,
) -> Result<(), CliError> {
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<PageCommand>(32);
    let mut status = engine.status();
    let (page_tx, page_rx) = watch::channel(page_status(&status.borrow()));
    let (contacts_tx, contacts_rx) = watch::channel(PageContacts::default());
    let contacts_tx = Arc::new(contacts_tx);
    // the contacts list: now, and again after every call (a call may add a peer)
    let mut refreshing = tokio::spawn(refresh_contacts(engine.device(), contacts_tx.clone()));
    let mut last_state = status.borrow().state;
    let server = sotto_app::start(AppWiring {
        me: user,
        link: link.clone(),
        commands: cmd_tx,
        status: page_rx,
        contacts: contacts_rx,
    })
    .await
    .map_err(|e| fail(e.to_string()))?;
    {
        use std::io::Write as _;
        let url = server.url();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "call screen: {}", url.as_str());
        let _ = writeln!(
            out,
            "(open it in a browser on this machine; the link is this run's key)"
        );
        let _ = out.flush();
        if open {
            open_browser(url.as_str());
        }
    }
    loop {
        tokio::select! {
            c = cmd_rx.recv() => {
                let Some(c) = c else { break };
                match c {
                    PageCommand::Dial { user } | PageCommand::Invite { user } if !valid_member_name(&user) => {
                        link.send(&ToPage::Notice {
                            kind: NoticeKind::Error,
                            text: format!("{:?} is not an account name", printable(&user)),
                        });
                    }
                    PageCommand::Dial { user } => engine.command(EngineCmd::Dial(user)).await,
                    PageCommand::Invite { user } => engine.command(EngineCmd::Invite(user)).await,
                    PageCommand::Answer => engine.command(EngineCmd::Answer).await,
                    PageCommand::Reject => engine.command(EngineCmd::Reject).await,
                    PageCommand::Hangup => engine.command(EngineCmd::Hangup).await,
                    PageCommand::MuteAudio { muted } => engine.command(EngineCmd::MuteAudio(muted)).await,
                    PageCommand::MuteVideo { muted } => engine.command(EngineCmd::MuteVideo(muted)).await,
                    PageCommand::TrustIdentity { peer, .. } if !valid_member_name(&peer) => {
                        link.send(&ToPage::Notice {
                            kind: NoticeKind::Error,
                            text: format!("{:?} is not an account name", printable(&peer)),
                        });
                    }
                    PageCommand::TrustIdentity { peer, safety_number } => {
                        tokio::spawn(trust(engine.device(), link.clone(), peer, safety_number));
                    }
                }
            }
            changed = status.changed() => {
                if changed.is_err() { break }
                let (state, s) = {
                    let cur = status.borrow_and_update();
                    (cur.state, page_status(&cur))
                };
                if state == CallState::Ended && last_state != CallState::Ended {
                    refreshing.abort();
                    refreshing = tokio::spawn(refresh_contacts(engine.device(), contacts_tx.clone()));
                }
                last_state = state;
                page_tx.send_if_modified(|cur| if *cur == s { false } else { *cur = s; true });
            }
            n = engine.notice() => {
                let Some(n) = n else { break };
                link.send(&ToPage::Notice { kind: notice_kind(&n), text: notice_line(&n) });
                if let Notice::IdentityChanged(peer) = n {
                    tokio::spawn(show_identity(engine.device(), link.clone(), peer));
                }
            }
            _ = tokio::signal::ctrl_c() => {
                if !matches!(engine.status().borrow().state, CallState::Idle | CallState::Ended) {
                    engine.command(EngineCmd::Hangup).await;
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                }
                break;
            }
        }
    }
    refreshing.abort();
    server.stop();
    Ok(())
}

/// Lists the peers the device knows, each with its device count from the signaling server
/// (every lookup bounded, [`sotto_app::contacts::contacts_list`]), for the page.
async fn refresh_contacts(dev: Arc<Device>, out: Arc<watch::Sender<PageContacts>>) {
    let known = dev.known_peers();
    let list = sotto_app::contacts::contacts_list(
        known,
        |name| {
            let dev = dev.clone();
            async move {
                let ids = dev.client().list_devices(&name).await.ok()?;
                u32::try_from(ids.len()).ok()
            }
        },
        CONTACT_LOOKUP_TIMEOUT,
        CONTACTS_REFRESH_TIMEOUT,
    )
    .await;
    out.send_replace(list);
}

fn page_status(s: &Status) -> PageStatus {
    PageStatus {
        state: s.state.to_string(),
        peer: s.peer.clone(),
        end_reason: s.end_reason.as_ref().map(ToString::to_string),
        safety_number: s.safety_number.clone(),
        audio_muted: s.audio_muted,
        video_muted: s.video_muted,
        peer_audio_muted: s.peer_audio_muted,
        peer_video_muted: s.peer_video_muted,
        members: s
            .members
            .iter()
            .map(|m| PageMember {
                name: m.clone(),
                sender: sender_id_for(m).to_string(),
            })
            .collect(),
        setup_ms: s
            .setup_time
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        local_generation: s.media.as_ref().map(|m| m.local_generation),
        remote_generation: s.media.as_ref().and_then(|m| m.remote_generation),
    }
}

/// Shows the page both safety numbers of `peer`, whose identity key changed, to compare.
async fn show_identity(dev: Arc<Device>, link: PageLink, peer: String) {
    let numbers =
        tokio::time::timeout(TRUST_TIMEOUT, crate::account::identity_numbers(&dev, &peer)).await;
    let msg = match numbers {
        Ok(Ok(n)) => ToPage::Identity {
            peer,
            trusted: n.trusted,
            offered: n.offered,
        },
        Ok(Err(e)) => ToPage::Notice {
            kind: NoticeKind::Error,
            text: e.to_string(),
        },
        Err(_) => ToPage::Notice {
            kind: NoticeKind::Error,
            text: format!(
                "{}'s safety number: the server did not answer",
                printable(&peer)
            ),
        },
    };
    link.send(&msg);
}

/// The user says `peer`'s new key has `safety_number`: the one trust path `sotto trust`
/// takes decides ([`crate::account::trust_compared`]); the page is told what came of it.
async fn trust(dev: Arc<Device>, link: PageLink, peer: String, safety_number: String) {
    let done = tokio::time::timeout(
        TRUST_TIMEOUT,
        crate::account::trust_compared(&dev, &peer, &safety_number),
    )
    .await;
    let (kind, text) = match done {
        Ok(Ok(number)) => (
            NoticeKind::IdentityTrusted,
            format!(
                "trusted {}'s new identity key; safety number {number}",
                printable(&peer)
            ),
        ),
        Ok(Err(e)) => (NoticeKind::Error, e.to_string()),
        Err(_) => (
            NoticeKind::Error,
            format!(
                "trusting {}: the server did not answer; nothing changed",
                printable(&peer)
            ),
        ),
    };
    link.send(&ToPage::Notice { kind, text });
}

/// How the page shows a notice (the text is the event log's, [`notice_line`]).
fn notice_kind(n: &Notice) -> NoticeKind {
    match n {
        Notice::Incoming(_) => NoticeKind::Incoming,
        Notice::IdentityChanged(_) => NoticeKind::IdentityChanged,
        Notice::Member(_) => NoticeKind::Member,
        Notice::State(_) => NoticeKind::State,
        Notice::Dropped(_) => NoticeKind::Dropped,
        Notice::KeyRotated(_) | Notice::PeerKey { .. } => NoticeKind::Key,
        Notice::Error(_) => NoticeKind::Error,
        _ => NoticeKind::Other,
    }
}

/// Opens `url` in Chromium as an app window when installed, else the desktop's browser.
fn open_browser(url: &str) {
    let tries: [(&str, Vec<String>); 3] = [
        ("chromium", vec![format!("--app={url}")]),
        ("google-chrome", vec![format!("--app={url}")]),
        ("xdg-open", vec![url.to_owned()]),
    ];
    for (cmd, args) in tries {
        if std::process::Command::new(cmd)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
        {
            return;
        }
    }
    eprintln!("could not start a browser: open the link above yourself");
}
