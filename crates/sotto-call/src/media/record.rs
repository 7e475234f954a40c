//! [`Sinks`]: where decrypted frames are written, one IVF/Ogg pair per remote sender.

use std::path::PathBuf;

use super::{consts, IvfSink, MediaError, MediaKind, OggSink};

pub(super) struct Sinks {
    pub(super) ivf: Option<IvfSink>,
    pub(super) ogg: Option<OggSink>,
    /// Where files go; the first remote sender gets `<prefix>.ivf/.ogg`, any further sender
    /// (group calls) `<prefix>-from-<sender id>.ivf/.ogg`, so no file mixes two streams.
    pub(super) prefix: Option<PathBuf>,
    pub(super) first_sender: Option<u64>,
    pub(super) extra: std::collections::HashMap<u64, (IvfSink, OggSink)>,
}

impl Sinks {
    pub(super) fn write(
        &mut self,
        sender: u64,
        kind: MediaKind,
        frame: &[u8],
        rtp_ts: u32,
    ) -> Result<(), MediaError> {
        let first = *self.first_sender.get_or_insert(sender);
        let (ivf, ogg) = if sender == first {
            (self.ivf.as_mut(), self.ogg.as_mut())
        } else {
            let Some(prefix) = self.prefix.clone() else {
                return Ok(());
            };
            if !self.extra.contains_key(&sender) {
                if self.extra.len() >= consts::MAX_EXTRA_SINKS {
                    return Ok(());
                }
                let base = format!(
                    "{}-from-{sender}",
                    prefix
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default()
                );
                let p = prefix.with_file_name(base);
                let pair = (
                    IvfSink::create(&p.with_extension("ivf"), 15)?,
                    OggSink::create(&p.with_extension("ogg"))?,
                );
                self.extra.insert(sender, pair);
            }
            match self.extra.get_mut(&sender) {
                Some((i, o)) => (Some(i), Some(o)),
                None => (None, None),
            }
        };
        match kind {
            MediaKind::Video => {
                if let Some(s) = ivf {
                    s.write_frame(frame)?;
                }
            }
            MediaKind::Audio => {
                if let Some(s) = ogg {
                    s.write_packet(frame, rtp_ts)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn finish(&mut self) -> Result<(), MediaError> {
        if let Some(s) = self.ivf.as_mut() {
            s.finish()?;
        }
        if let Some(s) = self.ogg.as_mut() {
            s.finish()?;
        }
        for (i, o) in self.extra.values_mut() {
            i.finish()?;
            o.finish()?;
        }
        Ok(())
    }
}
