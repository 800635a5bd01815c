//! Text made safe inside HTML and XML: the staff pages, the login page and the SOAP envelopes
//! sent to payers escape through here.

/// `s` safe inside HTML or XML text and quoted attributes. An apostrophe becomes `&#39;`,
/// which both read (HTML 4 has no `&apos;`).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_character_markup_would_misread_is_escaped_and_nothing_else() {
        assert_eq!(
            super::escape(r#"O'Brien & <Co> "ré""#),
            "O&#39;Brien &amp; &lt;Co&gt; &quot;ré&quot;"
        );
    }
}
