//! Escapes untrusted text (serials, names, status payloads) before the CLI prints it, so a
//! recorder or account cannot move the cursor, recolour or reorder what an admin reads.

use std::borrow::Cow;
use std::fmt::Write;

/// True for characters that act on a terminal or on text layout instead of showing a glyph:
/// controls (C0, DEL, C1, so ESC sequences), the Unicode format characters (bidi embeddings,
/// overrides and isolates, zero-width characters, BOM, tags…) and line/paragraph separators.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Unicode general category Cf (format), Unicode 15.
            '\u{00AD}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
                // Zl and Zp: they break lines like a newline does.
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// Text safe to print: unsafe characters become a visible `\u{202e}` and a backslash becomes
/// `\\`, so the escaped form cannot be confused with text that spells it. Borrows when
/// nothing needs escaping, which is almost always.
pub fn safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || is_unsafe(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if is_unsafe(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Serialized JSON made safe to print while staying the same JSON: unsafe characters, which
/// serde_json leaves raw inside strings except for C0 controls, become `\uXXXX` escapes. The
/// newlines of pretty-printing (never inside a string, where serde escapes them) are kept.
pub fn safe_json(json: &str) -> Cow<'_, str> {
    let needs = |c: char| c != '\n' && is_unsafe(c);
    if !json.chars().any(needs) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if needs(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_escapes_controls_and_format_characters_and_keeps_the_rest() {
        let table: &[(&str, &str)] = &[
            ("SN-12345", "SN-12345"),
            ("Caméra 日本 📷", "Caméra 日本 📷"),
            ("abc\u{202e}gpj.exe", "abc\\u{202e}gpj.exe"),
            ("\u{1b}[31mred\u{1b}[0m", "\\u{1b}[31mred\\u{1b}[0m"),
            ("line\nbreak\rtab\t", "line\\u{a}break\\u{d}tab\\u{9}"),
            ("nul\0del\u{7f}", "nul\\u{0}del\\u{7f}"),
            ("c1 \u{85}\u{9b}", "c1 \\u{85}\\u{9b}"),
            ("zero\u{200b}width\u{200f}", "zero\\u{200b}width\\u{200f}"),
            ("sep\u{2028}\u{2029}", "sep\\u{2028}\\u{2029}"),
            ("embed\u{202a}\u{202d}", "embed\\u{202a}\\u{202d}"),
            ("isolate\u{2066}\u{2069}", "isolate\\u{2066}\\u{2069}"),
            ("\u{feff}bom", "\\u{feff}bom"),
            ("soft\u{ad}hyphen", "soft\\u{ad}hyphen"),
            ("tag\u{e0041}", "tag\\u{e0041}"),
            ("back\\slash", "back\\\\slash"),
            ("spelled \\u{202e}", "spelled \\\\u{202e}"),
            ("", ""),
        ];
        for (input, expected) in table {
            assert_eq!(safe(input), *expected, "input {input:?}");
        }
        assert!(matches!(safe("SN-12345"), Cow::Borrowed(_)));
    }

    #[test]
    fn safe_json_stays_the_same_json() {
        let value = serde_json::json!({
            "disk": "ok\u{202e}\u{85}\u{2028}\u{e0041}",
            "note": "quote \" backslash \\ newline \n",
        });
        let text = format!("{value:#}");
        let escaped = safe_json(&text);
        assert!(
            !escaped.chars().any(|c| c != '\n' && is_unsafe(c)),
            "{escaped}"
        );
        assert!(
            escaped.contains("\\u202e\\u0085\\u2028\\udb40\\udc41"),
            "{escaped}"
        );
        assert_eq!(escaped.lines().count(), text.lines().count());
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back, value);
        assert!(matches!(safe_json("{\n  \"a\": 1\n}"), Cow::Borrowed(_)));
    }
}
