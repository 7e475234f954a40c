//! The interactive call screen (ratatui) and its non-interactive twin (a script on stdin).
//!
//! Both drive the same [`Command`]s into the call, and both read the same [`Screen`] model that
//! the call updates; so tests that script a call exercise the same paths as a person at the keys.

use std::collections::VecDeque;
use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use sotto_call::messages::{valid_member_name, MAX_MEMBER_NAME};
use tokio::sync::{mpsc, watch};

/// Lines of the event log the screen keeps.
pub const MAX_LOG_LINES: usize = 200;
/// Longest script line accepted.
pub const MAX_SCRIPT_LINE: usize = 256;

/// What a person (or a script) asks the call to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Answer the ringing incoming call.
    Answer,
    /// Reject the ringing incoming call.
    Reject,
    /// Toggle audio mute.
    MuteAudio,
    /// Toggle video mute.
    MuteVideo,
    /// Switch the video source (the "camera").
    SwitchSource,
    /// Hang up.
    Hangup,
    /// Group call: invite this account into our call (the call must go through a relay).
    Invite(String),
    /// Leave the program (hangs up first if in a call).
    Quit,
}

/// Why a name was not invited: it is not an account name (`valid_member_name`, the rule the
/// call messages and the signaling server apply).
pub fn invalid_invite_note(name: &str) -> String {
    format!(
        "not invited: {name:?} is not an account name ([a-z0-9._-], 1 to {MAX_MEMBER_NAME} bytes)"
    )
}

/// One key `c` at the open invite prompt `prompt`. Enter closes the prompt and gives the
/// invite, or, if the typed text is not a valid member name, a note saying so instead; Esc
/// closes it; Backspace deletes; other printable characters are typed, up to
/// [`MAX_MEMBER_NAME`] bytes. `None`: nothing to send or show.
pub fn invite_prompt_key(prompt: &mut Option<String>, c: char) -> Option<Result<Command, String>> {
    let p = prompt.as_mut()?;
    match c {
        '\n' => {
            let name = std::mem::take(p);
            *prompt = None;
            if valid_member_name(&name) {
                return Some(Ok(Command::Invite(name)));
            }
            return Some(Err(invalid_invite_note(&name)));
        }
        '\u{1b}' => *prompt = None,
        '\u{8}' => {
            p.pop();
        }
        c if p.len() + c.len_utf8() <= MAX_MEMBER_NAME && !c.is_control() => p.push(c),
        _ => {}
    }
    None
}

impl Command {
    /// The key that issues this command on the call screen.
    pub fn from_key(c: char) -> Option<Command> {
        Some(match c.to_ascii_lowercase() {
            'a' => Command::Answer,
            'r' => Command::Reject,
            'm' => Command::MuteAudio,
            'v' => Command::MuteVideo,
            's' => Command::SwitchSource,
            'h' => Command::Hangup,
            'q' => Command::Quit,
            _ => return None,
        })
    }
}

/// One step of a non-interactive script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptStep {
    /// Issue a command.
    Do(Command),
    /// Sleep.
    Wait(Duration),
    /// Wait until the call state's name starts with this word (e.g. `connected`, `ended`).
    WaitState(String),
}

/// Parses one script line: `answer`, `reject`, `mute-audio`, `mute-video`, `switch`, `hangup`,
/// `invite NAME`, `quit`, `wait MS`, `wait-state NAME`; blank lines and `#` comments are skipped (`Ok(None)`).
///
/// # Errors
/// A message naming the bad line.
pub fn parse_script_line(line: &str) -> Result<Option<ScriptStep>, String> {
    if line.len() > MAX_SCRIPT_LINE {
        return Err(format!(
            "script line of {} bytes exceeds MAX_SCRIPT_LINE ({MAX_SCRIPT_LINE})",
            line.len()
        ));
    }
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or_default();
    let arg = words.next();
    if words.next().is_some() {
        return Err(format!("script: too many words in {line:?}"));
    }
    let step = match (verb, arg) {
        ("answer", None) => ScriptStep::Do(Command::Answer),
        ("reject", None) => ScriptStep::Do(Command::Reject),
        ("mute-audio", None) => ScriptStep::Do(Command::MuteAudio),
        ("mute-video", None) => ScriptStep::Do(Command::MuteVideo),
        ("switch", None) => ScriptStep::Do(Command::SwitchSource),
        ("hangup", None) => ScriptStep::Do(Command::Hangup),
        ("invite", Some(name)) if valid_member_name(name) => {
            ScriptStep::Do(Command::Invite(name.into()))
        }
        ("invite", _) => {
            return Err(format!(
                "script: `invite` wants one account name ([a-z0-9._-], 1 to {MAX_MEMBER_NAME} bytes), got {line:?}"
            ))
        }
        ("quit", None) => ScriptStep::Do(Command::Quit),
        ("wait", Some(ms)) => ScriptStep::Wait(Duration::from_millis(
            ms.parse()
                .map_err(|_| format!("script: `wait` wants milliseconds, got {ms:?}"))?,
        )),
        ("wait-state", Some(s)) => ScriptStep::WaitState(s.to_string()),
        (
            "answer" | "reject" | "mute-audio" | "mute-video" | "switch" | "hangup" | "quit",
            Some(_),
        ) => {
            return Err(format!(
                "script: {verb:?} takes no argument (too many words in {line:?})"
            ))
        }
        _ => return Err(format!("script: unknown step {line:?}")),
    };
    Ok(Some(step))
}

/// Everything the call screen shows. The call owns a `watch::Sender<Screen>` and updates it.
#[derive(Debug, Clone, Default)]
pub struct Screen {
    /// Our username.
    pub me: String,
    /// The other party, once there is one.
    pub peer: Option<String>,
    /// Call state, first word machine-readable: `idle`, `ringing`, `incoming`, `connecting`,
    /// `connected`, `ended ...`.
    pub state: String,
    /// The peer's safety number (12 groups of 5 digits), to compare out of band.
    pub safety_number: Option<String>,
    /// Set when the peer's identity key differs from the one seen before.
    pub identity_warning: Option<String>,
    /// Our mute flags and the peer's as it announced them.
    pub audio_muted: bool,
    pub video_muted: bool,
    pub peer_audio_muted: bool,
    pub peer_video_muted: bool,
    /// Name of the current video source.
    pub source: String,
    /// Live statistics, in display order.
    pub stats: Vec<(String, String)>,
    /// Recent events, oldest first.
    pub log: VecDeque<String>,
    /// The invite prompt's text while the user types a name (`i`, Enter sends, Esc cancels).
    pub prompt: Option<String>,
    /// A note for the person at the keys (e.g. why a typed name was not invited), shown in the
    /// bottom bar until the next key.
    pub note: Option<String>,
}

impl Screen {
    /// Appends to the event log, dropping the oldest line past [`MAX_LOG_LINES`].
    pub fn push_log(&mut self, line: impl Into<String>) {
        self.log.push_back(line.into());
        while self.log.len() > MAX_LOG_LINES {
            self.log.pop_front();
        }
    }

    /// The state's first word.
    pub fn state_word(&self) -> &str {
        // "ended: hung up" is the word "ended"
        self.state
            .split(|c: char| c == ':' || c.is_whitespace())
            .next()
            .unwrap_or("")
    }
}

/// Draws the whole screen.
pub fn draw(f: &mut ratatui::Frame<'_>, s: &Screen) {
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(6),
            Constraint::Length(4),
            Constraint::Min(6),
            Constraint::Length(3),
        ])
        .split(f.area());
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let state_color = match s.state_word() {
        "connected" => Color::Green,
        "ringing" | "incoming" | "connecting" => Color::Yellow,
        "ended" => Color::Red,
        _ => Color::Reset,
    };
    let mut head = vec![
        Line::from(vec![
            Span::styled(format!("sotto  {}", s.me), bold),
            Span::raw("  ->  "),
            Span::styled(s.peer.clone().unwrap_or_else(|| "-".into()), bold),
        ]),
        Line::from(vec![
            Span::raw("state: "),
            Span::styled(
                s.state.clone(),
                Style::default()
                    .fg(state_color)
                    .add_modifier(Modifier::BOLD),
            ),
        ]),
        Line::from(format!(
            "me: audio {} video {} source {}   peer: audio {} video {}",
            onoff(!s.audio_muted),
            onoff(!s.video_muted),
            s.source,
            onoff(!s.peer_audio_muted),
            onoff(!s.peer_video_muted),
        )),
    ];
    if s.state_word() == "incoming" {
        head.push(Line::from(Span::styled(
            "incoming call: [a]nswer or [r]eject",
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        )));
    }
    f.render_widget(
        Paragraph::new(head).block(Block::default().borders(Borders::ALL).title("call")),
        rows[0],
    );
    let mut id = vec![Line::from(format!(
        "safety number: {}",
        s.safety_number
            .clone()
            .unwrap_or_else(|| "(no session yet)".into())
    ))];
    if let Some(w) = &s.identity_warning {
        id.push(Line::from(Span::styled(
            format!("WARNING: {w}"),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        )));
    }
    f.render_widget(
        Paragraph::new(id)
            .wrap(Wrap { trim: true })
            .block(Block::default().borders(Borders::ALL).title("identity")),
        rows[1],
    );
    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(45), Constraint::Percentage(55)])
        .split(rows[2]);
    let stats: Vec<Line<'_>> = s
        .stats
        .iter()
        .map(|(k, v)| Line::from(format!("{k:<18} {v}")))
        .collect();
    f.render_widget(
        Paragraph::new(stats).block(Block::default().borders(Borders::ALL).title("stats")),
        cols[0],
    );
    let height = cols[1].height.saturating_sub(2) as usize;
    let log: Vec<Line<'_>> = s
        .log
        .iter()
        .skip(s.log.len().saturating_sub(height))
        .map(|l| Line::from(l.as_str()))
        .collect();
    f.render_widget(
        Paragraph::new(log).block(Block::default().borders(Borders::ALL).title("events")),
        cols[1],
    );
    let bar = match (&s.prompt, &s.note) {
        (Some(p), _) => Line::from(Span::styled(
            format!("invite (through the relay): {p}_   [Enter] invite  [Esc] cancel"),
            bold,
        )),
        (None, Some(n)) => Line::from(Span::styled(
            n.clone(),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
        (None, None) => Line::from(
            "[a]nswer [r]eject [m]ute audio mute [v]ideo [s]witch source [i]nvite [h]ang up [q]uit",
        ),
    };
    f.render_widget(
        Paragraph::new(bar).block(Block::default().borders(Borders::ALL)),
        rows[3],
    );
}

fn onoff(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "MUTED"
    }
}

/// Runs the terminal UI until `Quit` is pressed or `screen` closes: redraws on every change,
/// turns keys into commands.
///
/// # Errors
/// Terminal I/O errors.
pub async fn run_tui(
    mut screen: watch::Receiver<Screen>,
    commands: mpsc::Sender<Command>,
) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let (key_tx, mut key_rx) = mpsc::channel::<char>(16);
    // crossterm's event reading blocks: give it its own thread.
    std::thread::spawn(move || loop {
        match event::poll(Duration::from_millis(100)) {
            Ok(true) => match event::read() {
                Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => {
                    let c = match k.code {
                        KeyCode::Char(c) => c,
                        KeyCode::Enter => '\n',
                        KeyCode::Esc => '\u{1b}',
                        KeyCode::Backspace => '\u{8}',
                        _ => continue,
                    };
                    if key_tx.blocking_send(c).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            },
            Ok(false) => {
                if key_tx.is_closed() {
                    return;
                }
            }
            Err(_) => return,
        }
    });
    let mut prompt: Option<String> = None;
    let mut note: Option<String> = None;
    let res = async {
        loop {
            let mut snapshot = screen.borrow_and_update().clone();
            snapshot.prompt.clone_from(&prompt);
            snapshot.note.clone_from(&note);
            terminal.draw(|f| draw(f, &snapshot))?;
            tokio::select! {
                changed = screen.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                key = key_rx.recv() => {
                    let Some(c) = key else { return Ok(()) };
                    note = None;
                    if prompt.is_some() {
                        match invite_prompt_key(&mut prompt, c) {
                            Some(Ok(cmd)) => {
                                let _ = commands.send(cmd).await;
                            }
                            Some(Err(n)) => note = Some(n),
                            None => {}
                        }
                        continue;
                    }
                    if c == 'i' {
                        prompt = Some(String::new());
                        continue;
                    }
                    if let Some(cmd) = Command::from_key(c) {
                        let quit = cmd == Command::Quit;
                        let _ = commands.send(cmd).await;
                        if quit {
                            return Ok(());
                        }
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
    .await;
    ratatui::restore();
    let _ = terminal.show_cursor();
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    #[test]
    fn script_lines_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_script_line("answer").unwrap(),
            Some(ScriptStep::Do(Command::Answer))
        );
        assert_eq!(parse_script_line("  # hi").unwrap(), None);
        assert_eq!(
            parse_script_line("wait 250").unwrap(),
            Some(ScriptStep::Wait(Duration::from_millis(250)))
        );
        assert_eq!(
            parse_script_line("wait-state connected").unwrap(),
            Some(ScriptStep::WaitState("connected".into()))
        );
        assert!(parse_script_line("wait soon")
            .unwrap_err()
            .contains("milliseconds"));
        assert!(parse_script_line("dance")
            .unwrap_err()
            .contains("unknown step"));
        assert_eq!(
            parse_script_line("invite carol").unwrap(),
            Some(ScriptStep::Do(Command::Invite("carol".into())))
        );
        assert!(parse_script_line("invite")
            .unwrap_err()
            .contains("account name"));
        for bad in [
            "Carol/1",
            "../x",
            "b\u{1b}[2Jb",
            "b\u{f6}b",
            &"a".repeat(MAX_MEMBER_NAME + 1),
        ] {
            assert!(parse_script_line(&format!("invite {bad}"))
                .unwrap_err()
                .contains("account name"));
        }
        assert!(parse_script_line(&format!("invite {}", "a".repeat(MAX_MEMBER_NAME))).is_ok());
        assert!(parse_script_line("answer now")
            .unwrap_err()
            .contains("too many"));
        let long = "a".repeat(MAX_SCRIPT_LINE + 1);
        assert!(parse_script_line(&long)
            .unwrap_err()
            .contains("MAX_SCRIPT_LINE"));
        assert!(parse_script_line(&"#".repeat(MAX_SCRIPT_LINE))
            .unwrap()
            .is_none());
    }

    #[test]
    fn keys_map_to_commands() {
        assert_eq!(Command::from_key('A'), Some(Command::Answer));
        assert_eq!(Command::from_key('v'), Some(Command::MuteVideo));
        assert_eq!(Command::from_key('x'), None);
    }

    /// Draws `s` and returns the terminal's cells as one string.
    fn rendered(t: &mut Terminal<TestBackend>, s: &Screen) -> String {
        t.draw(|f| draw(f, s)).unwrap();
        t.backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect()
    }

    #[test]
    fn the_screen_shows_prompt_warning_and_stats() {
        let mut s = Screen {
            me: "alice".into(),
            peer: Some("bob".into()),
            state: "incoming from bob".into(),
            safety_number: Some("12345 67890".into()),
            identity_warning: Some("bob's identity key changed".into()),
            source: "pattern".into(),
            ..Screen::default()
        };
        s.stats.push(("frames decrypted".into(), "42".into()));
        let mut t = Terminal::new(TestBackend::new(100, 24)).unwrap();
        let text = rendered(&mut t, &s);
        assert!(text.contains("[a]nswer or [r]eject"), "{text}");
        assert!(text.contains("WARNING: bob's identity key changed"));
        assert!(text.contains("frames decrypted   42"));
        assert!(text.contains("12345 67890"));
        s.state = "connected".into();
        let text = rendered(&mut t, &s);
        assert!(!text.contains("[a]nswer or [r]eject"));
        s.prompt = Some("car".into());
        let text = rendered(&mut t, &s);
        assert!(text.contains("invite (through the relay): car_"), "{text}");
    }

    #[test]
    fn the_invite_prompt_refuses_bad_names_with_a_note() {
        let mut t = Terminal::new(TestBackend::new(120, 24)).unwrap();
        let type_in = |text: &str| {
            let mut prompt = Some(String::new());
            let mut last = None;
            for c in text.chars().chain(['\n']) {
                last = invite_prompt_key(&mut prompt, c);
            }
            assert_eq!(prompt, None);
            last.unwrap()
        };
        assert_eq!(type_in("carol"), Ok(Command::Invite("carol".into())));
        assert_eq!(type_in("carox\u{8}l"), Ok(Command::Invite("carol".into())));
        for bad in ["Carol", "../x", "", "c\u{f6}rol", "a b"] {
            let note = type_in(bad).unwrap_err();
            assert!(note.contains("not an account name"), "{bad:?}: {note}");
            let s = Screen {
                note: Some(note),
                ..Screen::default()
            };
            let text = rendered(&mut t, &s);
            assert!(text.contains("not invited:"), "{text}");
        }
        // control characters are never typed; the prompt stops at MAX_MEMBER_NAME bytes
        assert_eq!(type_in("bo\u{7}b"), Ok(Command::Invite("bob".into())));
        let long = "a".repeat(MAX_MEMBER_NAME + 3);
        assert_eq!(
            type_in(&long),
            Ok(Command::Invite("a".repeat(MAX_MEMBER_NAME)))
        );
        // Esc closes without a command; keys with no prompt open do nothing here
        let mut prompt = Some("bob".to_string());
        assert_eq!(invite_prompt_key(&mut prompt, '\u{1b}'), None);
        assert_eq!(prompt, None);
        assert_eq!(invite_prompt_key(&mut prompt, '\n'), None);
    }

    #[test]
    fn the_log_is_bounded() {
        let mut s = Screen::default();
        for i in 0..(MAX_LOG_LINES + 5) {
            s.push_log(format!("e{i}"));
        }
        assert_eq!(s.log.len(), MAX_LOG_LINES);
        assert_eq!(s.log.front().map(String::as_str), Some("e5"));
    }
}
