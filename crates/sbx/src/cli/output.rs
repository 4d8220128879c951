//! Human output: aligned tables and short ages, and text made safe for a terminal.
//!
//! Everything printed for people passes [`clean`] (tables cell by cell, lines through
//! [`say!`] and [`say_err!`]): what the daemon returns holds text that other users chose (names,
//! metadata, reasons, audit details), and a control character in it would be obeyed by the
//! reader's terminal — OSC 52 writes their clipboard, cursor movement hides lines. JSON output
//! is for programs, and JSON escapes control characters itself.

use std::borrow::Cow;
use std::time::SystemTime;

/// Prints a line for people, its control characters made visible (see the module).
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", $crate::cli::output::clean(&format!($($arg)*)))
    };
}

/// The same on stderr.
macro_rules! say_err {
    ($($arg:tt)*) => {
        eprintln!("{}", $crate::cli::output::clean(&format!($($arg)*)))
    };
}

pub(crate) use say;
pub(crate) use say_err;

/// `text` with every character a terminal would act on written out instead: C0 and C1
/// controls and DEL (`\x1b`, `\u{9b}`), and the invisible formatting characters that reorder
/// or hide text (bidi overrides and isolates, zero-width spaces and joiners: `\u{202e}`).
pub fn clean(text: &str) -> Cow<'_, str> {
    let acts = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    if !text.chars().any(acts) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            c if !acts(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| clean(cell).into_owned()).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", text.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `3s ago`, `5m ago`, `2h ago`, `4d ago` from an RFC 3339 time.
pub fn age(rfc3339: &str) -> String {
    let Ok(time) = humantime::parse_rfc3339_weak(rfc3339) else {
        return rfc3339.to_owned();
    };
    let seconds = SystemTime::now()
        .duration_since(time)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match seconds {
        0..=59 => format!("{seconds}s ago"),
        60..=3599 => format!("{}m ago", seconds / 60),
        3600..=86399 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86400),
    }
}

/// Writes `bytes`, as they come, to `file` (`-`: standard output).
pub async fn write_stream<E>(
    file: &str,
    bytes: impl futures::Stream<Item = Result<bytes::Bytes, E>>,
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    use anyhow::Context as _;
    use futures::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = if file == "-" {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(
            tokio::fs::File::create(file)
                .await
                .with_context(|| format!("cannot create {file}"))?,
        )
    };
    let mut bytes = std::pin::pin!(bytes);
    while let Some(chunk) = bytes.next().await {
        out.write_all(&chunk?).await?;
    }
    out.flush().await?;
    Ok(())
}

pub fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("API values serialise")
    );
}

/// `59m12s` until the sandbox's deadline, or `expired`.
pub fn remaining(sandbox: &sbx_protocol::Sandbox) -> String {
    match sandbox.expires_in_seconds {
        Some(0) | None => "expired".into(),
        Some(seconds) => {
            humantime::format_duration(std::time::Duration::from_secs(seconds)).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_written_out() {
        assert_eq!(clean("web-1"), "web-1");
        assert_eq!(clean("é ✓"), "é ✓");
        assert_eq!(
            clean("a\x1b]52;c;ZXZpbA==\x07b"),
            "a\\x1b]52;c;ZXZpbA==\\x07b"
        );
        assert_eq!(clean("x\ry\n"), "x\\x0dy\\x0a");
        assert_eq!(clean("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(clean("abc\u{202e}fed"), "abc\\u{202e}fed");
    }
}
