//! ASC X12 interchanges, pure: bytes in, segments out, and segments in, bytes out.
//!
//! The delimiters are the sender's, read from the fixed-width ISA header (X12.5): the element
//! separator is ISA's fourth byte, the repetition separator ISA11 (version 00402 and later),
//! the component separator ISA16 and the segment terminator the byte after it. Line breaks
//! after a terminator are tolerated, as most senders add them. The envelope's counts and
//! control numbers (SE, GE, IEA against ST, GS, ISA) are checked, so a truncated or spliced
//! interchange is refused rather than half read. X12 has no escape character: a value that
//! holds a delimiter cannot be sent and is refused when encoding, naming the field.
//!
//! This module knows no transaction set; `eligibility.rs` reads and writes the 270/271.

use thiserror::Error;

/// Why an interchange could not be read or written. Segment numbers count from 1 at ISA.
#[derive(Debug, Error, PartialEq)]
pub enum X12Error {
    #[error("not an X12 interchange: it does not start with ISA")]
    NoIsa,
    #[error("the ISA header is {0} bytes long; it must be 106 with its fixed widths")]
    ShortIsa(usize),
    #[error("ISA{field:02}: {reason}")]
    Isa { field: usize, reason: String },
    #[error("segment {index}: {reason}")]
    Segment { index: usize, reason: String },
    #[error("the interchange ends without IEA")]
    Unterminated,
    #[error("{field} holds '{delimiter}', one of the interchange's delimiters")]
    Delimiter { field: String, delimiter: char },
}

/// The four delimiters of one interchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub element: u8,
    /// None before version 00402, where ISA11 was the standards identifier.
    pub repetition: Option<u8>,
    pub component: u8,
    pub segment: u8,
}

impl Default for Delimiters {
    /// The delimiters most healthcare trading partners use: `*`, `^`, `:` and `~`.
    fn default() -> Self {
        Delimiters {
            element: b'*',
            repetition: Some(b'^'),
            component: b':',
            segment: b'~',
        }
    }
}

impl Delimiters {
    fn all(&self) -> impl Iterator<Item = u8> + '_ {
        [self.element, self.component, self.segment]
            .into_iter()
            .chain(self.repetition)
    }
}

/// One segment: its id and its elements, numbered from 1 as in the guides (`get(1)` is XX01).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub id: String,
    elements: Vec<String>,
}

impl Segment {
    /// Element `n` (from 1), empty when absent.
    pub fn get(&self, n: usize) -> &str {
        n.checked_sub(1)
            .and_then(|i| self.elements.get(i))
            .map_or("", String::as_str)
    }

    /// The repetitions of element `n`, each split into its components.
    pub fn composite(&self, n: usize, d: &Delimiters) -> Vec<Vec<&str>> {
        let value = self.get(n);
        if value.is_empty() {
            return Vec::new();
        }
        let repeats: Vec<&str> = match d.repetition {
            Some(r) => value.split(r as char).collect(),
            None => vec![value],
        };
        repeats
            .into_iter()
            .map(|r| r.split(d.component as char).collect())
            .collect()
    }
}

/// One transaction set (ST … SE), without its ST and SE.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// ST01, e.g. `271`.
    pub set: String,
    /// ST02.
    pub control: String,
    /// ST03, the implementation guide (e.g. `005010X279A1`); empty when not sent.
    pub guide: String,
    pub segments: Vec<Segment>,
}

/// One functional group (GS … GE).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// GS01, e.g. `HB` for eligibility responses.
    pub functional_id: String,
    /// GS08, the version and guide.
    pub version: String,
    pub transactions: Vec<Transaction>,
}

/// A whole interchange as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Interchange {
    pub delimiters: Delimiters,
    /// ISA06 and ISA08, trimmed.
    pub sender: String,
    pub receiver: String,
    /// ISA13.
    pub control: String,
    /// TA1 segments: the receiver's acknowledgement of an interchange we sent, when the
    /// answer is one (a refused envelope comes back as a TA1 and no group).
    pub ta1: Vec<Segment>,
    pub groups: Vec<Group>,
}

/// Widths of ISA01–ISA16 (X12.5); the separators sit between them.
const ISA_WIDTHS: [usize; 16] = [2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1, 1];
const ISA_LEN: usize = 106;

/// Reads an interchange, checking its envelope.
pub fn parse(bytes: &[u8]) -> Result<Interchange, X12Error> {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != 0xEF && *b != 0xBB && *b != 0xBF)
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    if !bytes.starts_with(b"ISA") {
        return Err(X12Error::NoIsa);
    }
    if bytes.len() < ISA_LEN {
        return Err(X12Error::ShortIsa(bytes.len()));
    }
    let d = delimiters(&bytes[..ISA_LEN])?;
    let text = std::str::from_utf8(bytes).map_err(|e| X12Error::Segment {
        index: 0,
        reason: format!("not UTF-8 text at byte {}", e.valid_up_to() + start),
    })?;
    let mut segments = Vec::new();
    let mut rest = text;
    let mut ended = false;
    while !rest.trim_start_matches(['\r', '\n']).is_empty() {
        let trimmed = rest.trim_start_matches(['\r', '\n']);
        let Some(end) = trimmed.find(d.segment as char) else {
            return Err(X12Error::Segment {
                index: segments.len() + 1,
                reason: "not terminated".into(),
            });
        };
        let raw = &trimmed[..end];
        rest = &trimmed[end + 1..];
        let index = segments.len() + 1;
        let mut parts = raw.split(d.element as char);
        let id = parts.next().unwrap_or_default();
        if !(2..=3).contains(&id.len())
            || !id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(X12Error::Segment {
                index,
                reason: "its id is not 2 or 3 capital letters or digits".into(),
            });
        }
        segments.push(Segment {
            id: id.to_string(),
            elements: parts.map(str::to_string).collect(),
        });
        if id == "IEA" {
            ended = true;
            break;
        }
    }
    if !ended {
        return Err(X12Error::Unterminated);
    }
    if !rest.trim().is_empty() {
        return Err(X12Error::Segment {
            index: segments.len() + 1,
            reason: "data after IEA".into(),
        });
    }
    envelope(d, segments)
}

fn delimiters(isa: &[u8]) -> Result<Delimiters, X12Error> {
    let element = isa[3];
    let mut at = 3;
    for (i, width) in ISA_WIDTHS.iter().enumerate() {
        if isa[at] != element {
            return Err(X12Error::Isa {
                field: i + 1,
                reason: format!(
                    "expected the element separator before this {width}-character field"
                ),
            });
        }
        at += 1 + width;
    }
    let version = std::str::from_utf8(&isa[84..89]).unwrap_or("");
    let repetition = (version >= "00402").then_some(isa[82]);
    let d = Delimiters {
        element,
        repetition,
        component: isa[104],
        segment: isa[105],
    };
    let all: Vec<u8> = d.all().collect();
    for (i, a) in all.iter().enumerate() {
        // A delimiter is one character of the text: a byte above ASCII would be half of one.
        if a.is_ascii_alphanumeric() || *a == b' ' || !a.is_ascii() {
            return Err(X12Error::Isa {
                field: 16,
                reason: format!("'{}' cannot be a delimiter", *a as char),
            });
        }
        if all[i + 1..].contains(a) {
            return Err(X12Error::Isa {
                field: 16,
                reason: format!("'{}' is used for two delimiters", *a as char),
            });
        }
    }
    Ok(d)
}

fn envelope(d: Delimiters, segments: Vec<Segment>) -> Result<Interchange, X12Error> {
    let bad = |index: usize, reason: String| X12Error::Segment { index, reason };
    let isa = &segments[0];
    let mut out = Interchange {
        delimiters: d,
        sender: isa.get(6).trim().to_string(),
        receiver: isa.get(8).trim().to_string(),
        control: isa.get(13).to_string(),
        ta1: Vec::new(),
        groups: Vec::new(),
    };
    let mut i = 1;
    let last = segments.len() - 1;
    while i < last {
        let seg = &segments[i];
        match seg.id.as_str() {
            "TA1" => {
                out.ta1.push(seg.clone());
                i += 1;
            }
            "GS" => {
                let (group, next) = group(&segments, i, last)?;
                out.groups.push(group);
                i = next;
            }
            other => return Err(bad(i + 1, format!("{other} where GS or IEA belongs"))),
        }
    }
    let iea = &segments[last];
    if iea.get(2) != out.control {
        return Err(bad(
            last + 1,
            format!("IEA02 {} does not match ISA13 {}", iea.get(2), out.control),
        ));
    }
    if iea.get(1).parse::<usize>().ok() != Some(out.groups.len()) {
        return Err(bad(
            last + 1,
            format!(
                "IEA01 says {} groups; there are {}",
                iea.get(1),
                out.groups.len()
            ),
        ));
    }
    Ok(out)
}

/// Reads the group starting at `segments[start]` (its GS); returns it and the index after GE.
fn group(segments: &[Segment], start: usize, last: usize) -> Result<(Group, usize), X12Error> {
    let bad = |index: usize, reason: String| X12Error::Segment { index, reason };
    let gs = &segments[start];
    let mut group = Group {
        functional_id: gs.get(1).to_string(),
        version: gs.get(8).to_string(),
        transactions: Vec::new(),
    };
    let mut i = start + 1;
    loop {
        if i >= last {
            return Err(bad(i + 1, "the group has no GE".into()));
        }
        let seg = &segments[i];
        match seg.id.as_str() {
            "ST" => {
                let end = (i + 1..last)
                    .find(|&j| segments[j].id == "SE")
                    .ok_or_else(|| bad(i + 1, "the transaction has no SE".into()))?;
                if let Some(j) =
                    (i + 1..end).find(|&j| matches!(segments[j].id.as_str(), "ST" | "GS" | "GE"))
                {
                    return Err(bad(
                        j + 1,
                        format!("{} inside a transaction", segments[j].id),
                    ));
                }
                let se = &segments[end];
                let count = end - i + 1;
                if se.get(1).parse::<usize>().ok() != Some(count) {
                    return Err(bad(
                        end + 1,
                        format!("SE01 says {} segments; there are {count}", se.get(1)),
                    ));
                }
                if se.get(2) != seg.get(2) {
                    return Err(bad(
                        end + 1,
                        format!("SE02 {} does not match ST02 {}", se.get(2), seg.get(2)),
                    ));
                }
                group.transactions.push(Transaction {
                    set: seg.get(1).to_string(),
                    control: seg.get(2).to_string(),
                    guide: seg.get(3).to_string(),
                    segments: segments[i + 1..end].to_vec(),
                });
                i = end + 1;
            }
            "GE" => {
                if seg.get(2) != gs.get(6) {
                    return Err(bad(
                        i + 1,
                        format!("GE02 {} does not match GS06 {}", seg.get(2), gs.get(6)),
                    ));
                }
                if seg.get(1).parse::<usize>().ok() != Some(group.transactions.len()) {
                    return Err(bad(
                        i + 1,
                        format!(
                            "GE01 says {} transactions; there are {}",
                            seg.get(1),
                            group.transactions.len()
                        ),
                    ));
                }
                return Ok((group, i + 1));
            }
            other => return Err(bad(i + 1, format!("{other} where ST or GE belongs"))),
        }
    }
}

/// Who an interchange is from and to, and how it is numbered.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// ISA05/ISA06 and ISA07/ISA08: qualifier (`ZZ` mutually defined, `30` tax id, …) and id.
    pub sender: (String, String),
    pub receiver: (String, String),
    /// GS02 and GS03, the application codes.
    pub application_sender: String,
    pub application_receiver: String,
    /// ISA13 and GS06 (one group per interchange here), 1 to 999 999 999.
    pub control: u32,
    /// `CCYYMMDD` and `HHMM`.
    pub date: String,
    pub time: String,
    /// ISA15: production (`P`) or test (`T`) data.
    pub production: bool,
}

/// Builds the segments of one transaction set, refusing values that hold a delimiter.
#[derive(Debug)]
pub struct Writer {
    d: Delimiters,
    segments: Vec<String>,
}

impl Writer {
    pub fn new(d: Delimiters) -> Writer {
        Writer {
            d,
            segments: Vec::new(),
        }
    }

    /// Adds a segment; trailing empty elements are dropped, as X12 requires. Each value is
    /// named (`"NM103"`) for the error should it hold a delimiter.
    pub fn segment(&mut self, id: &str, elements: &[(&str, &str)]) -> Result<(), X12Error> {
        for (name, value) in elements {
            self.check(name, value)?;
        }
        let used = elements
            .iter()
            .rposition(|(_, v)| !v.is_empty())
            .map_or(0, |p| p + 1);
        let mut s = id.to_string();
        for (_, value) in &elements[..used] {
            s.push(self.d.element as char);
            s.push_str(value);
        }
        self.segments.push(s);
        Ok(())
    }

    /// Adds a segment of one element whose values are repetitions (EQ01's service types),
    /// joined with the interchange's repetition separator.
    pub fn repeated(&mut self, id: &str, name: &str, values: &[&str]) -> Result<(), X12Error> {
        for value in values {
            self.check(name, value)?;
        }
        let rep = (self.d.repetition.unwrap_or(b'^') as char).to_string();
        self.segments.push(format!(
            "{id}{}{}",
            self.d.element as char,
            values.join(&rep)
        ));
        Ok(())
    }

    fn check(&self, name: &str, value: &str) -> Result<(), X12Error> {
        match self.d.all().find(|&b| value.as_bytes().contains(&b)) {
            Some(b) => Err(X12Error::Delimiter {
                field: name.to_string(),
                delimiter: b as char,
            }),
            None => Ok(()),
        }
    }

    /// The interchange holding these segments as one transaction set `set` of guide `guide`
    /// in one functional group `functional_id`.
    pub fn interchange(
        self,
        env: &Envelope,
        functional_id: &str,
        set: &str,
        guide: &str,
    ) -> String {
        let d = self.d;
        let e = d.element as char;
        let t = d.segment as char;
        let control = format!("{:09}", env.control);
        let st = format!("{:04}", env.control % 10_000);
        let mut out = String::new();
        out.push_str(&format!(
            "ISA{e}00{e}{:10}{e}00{e}{:10}{e}{:2.2}{e}{:15.15}{e}{:2.2}{e}{:15.15}{e}{}{e}{}{e}{}{e}00501{e}{control}{e}0{e}{}{e}{}{t}",
            "",
            "",
            env.sender.0,
            env.sender.1,
            env.receiver.0,
            env.receiver.1,
            env.date.get(2..).unwrap_or_default(),
            env.time,
            d.repetition.unwrap_or(b'^') as char,
            if env.production { 'P' } else { 'T' },
            d.component as char,
        ));
        out.push_str(&format!(
            "GS{e}{functional_id}{e}{}{e}{}{e}{}{e}{}{e}{}{e}X{e}{guide}{t}",
            env.application_sender, env.application_receiver, env.date, env.time, env.control
        ));
        out.push_str(&format!("ST{e}{set}{e}{st}{e}{guide}{t}"));
        let count = self.segments.len() + 2;
        for s in self.segments {
            out.push_str(&s);
            out.push(t);
        }
        out.push_str(&format!("SE{e}{count}{e}{st}{t}"));
        out.push_str(&format!("GE{e}1{e}{}{t}", env.control));
        out.push_str(&format!("IEA{e}1{e}{control}{t}"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *261202*1200*^*00501*000000007*0*T*:~\n\
GS*HB*S*R*20261202*1200*7*X*005010X279A1~\n\
ST*271*0007*005010X279A1~\n\
EB*1**30^98~\n\
NM1*IL*1*DOE*JANE****MI*W1:2~\n\
SE*4*0007~\n\
GE*1*7~\n\
IEA*1*000000007~\n";

    fn check_err(text: &str, expected: &str) {
        let err = parse(text.as_bytes()).expect_err("an error");
        assert_eq!(err.to_string(), expected);
    }

    #[test]
    fn reads_the_delimiters_the_sender_chose() {
        let x = parse(SMALL.as_bytes()).expect("a value");
        assert_eq!(x.delimiters, Delimiters::default());
        assert_eq!(x.sender, "SENDER");
        let t = &x.groups[0].transactions[0];
        assert_eq!((t.set.as_str(), t.guide.as_str()), ("271", "005010X279A1"));
        let eb = &t.segments[0];
        assert_eq!(eb.composite(3, &x.delimiters), vec![vec!["30"], vec!["98"]]);
        assert_eq!(
            t.segments[1].composite(9, &x.delimiters),
            vec![vec!["W1", "2"]]
        );
        assert_eq!(eb.get(2), "");
        assert_eq!(eb.get(40), "");

        let other = SMALL
            .replace('*', "|")
            .replace('~', "\u{1c}")
            .replace(':', ">")
            .replace('^', "}");
        let y = parse(other.as_bytes()).expect("a value");
        assert_eq!(y.delimiters.element, b'|');
        assert_eq!(y.delimiters.segment, 0x1c);
        let eb = &y.groups[0].transactions[0].segments[0];
        assert_eq!(eb.composite(3, &y.delimiters), vec![vec!["30"], vec!["98"]]);
    }

    #[test]
    fn refuses_broken_envelopes_naming_the_segment() {
        check_err(
            "hello",
            "not an X12 interchange: it does not start with ISA",
        );
        check_err(
            &SMALL[..50],
            "the ISA header is 50 bytes long; it must be 106 with its fixed widths",
        );
        check_err(
            &SMALL.replacen("*ZZ*SENDER         ", "*ZZ*SENDER  ", 1),
            "ISA07: expected the element separator before this 2-character field",
        );
        check_err(
            &SMALL.replace("SE*4*", "SE*5*"),
            "segment 6: SE01 says 5 segments; there are 4",
        );
        check_err(
            &SMALL.replace("SE*4*0007", "SE*4*0008"),
            "segment 6: SE02 0008 does not match ST02 0007",
        );
        check_err(
            &SMALL.replace("GE*1*7", "GE*1*8"),
            "segment 7: GE02 8 does not match GS06 7",
        );
        check_err(
            &SMALL.replace("IEA*1*000000007", "IEA*1*000000008"),
            "segment 8: IEA02 000000008 does not match ISA13 000000007",
        );
        check_err(
            &SMALL.replace("IEA*1*000000007~\n", ""),
            "the interchange ends without IEA",
        );
        check_err(
            &SMALL.replace("EB*1", "eb*1"),
            "segment 4: its id is not 2 or 3 capital letters or digits",
        );
        check_err(
            &SMALL.replace("SE*4*0007~\n", ""),
            "segment 3: the transaction has no SE",
        );
        check_err(&format!("{SMALL}ST*1~"), "segment 9: data after IEA");
        check_err(
            &SMALL.replace("*:~", "*^~"),
            "ISA16: '^' is used for two delimiters",
        );
    }

    #[test]
    fn writes_what_it_reads_back() {
        let env = Envelope {
            sender: ("ZZ".into(), "CLINIC".into()),
            receiver: ("ZZ".into(), "PAYER".into()),
            application_sender: "CLINIC".into(),
            application_receiver: "PAYER".into(),
            control: 42,
            date: "20261202".into(),
            time: "0930".into(),
            production: false,
        };
        let mut w = Writer::new(Delimiters::default());
        w.segment(
            "BHT",
            &[
                ("BHT01", "0022"),
                ("BHT02", "13"),
                ("BHT03", ""),
                ("BHT04", ""),
            ],
        )
        .expect("a value");
        w.repeated("EQ", "EQ01", &["30", "98"]).expect("a value");
        assert_eq!(
            w.segment("NM1", &[("NM103", "O*BRIEN")]),
            Err(X12Error::Delimiter {
                field: "NM103".into(),
                delimiter: '*'
            })
        );
        let text = w.interchange(&env, "HS", "270", "005010X279A1");
        assert_eq!(&text[..106].len(), &106);
        let x = parse(text.as_bytes()).expect("a value");
        assert_eq!(x.control, "000000042");
        let t = &x.groups[0].transactions[0];
        assert_eq!(t.control, "0042");
        assert_eq!(t.segments.len(), 2);
        assert_eq!(t.segments[0].get(2), "13");
        assert!(text.contains("~BHT*0022*13~EQ*30^98~SE*4*0042~"));
        assert_eq!(
            t.segments[1].composite(1, &x.delimiters),
            vec![vec!["30"], vec!["98"]]
        );
    }

    #[test]
    fn never_panics_on_a_cut_or_damaged_interchange() {
        let bytes = SMALL.as_bytes();
        for cut in 0..bytes.len() {
            let _ = parse(&bytes[..cut]);
            for b in [b'*', b'~', b':', b'^', 0, 0xC3, b'\n', b'9'] {
                let mut damaged = bytes.to_vec();
                damaged[cut] = b;
                let _ = parse(&damaged);
            }
        }
        let mut high = bytes.to_vec();
        high[105] = 0xA7;
        assert_eq!(
            parse(&high).expect_err("an error").to_string(),
            "ISA16: '\u{a7}' cannot be a delimiter"
        );
    }

    #[test]
    fn keeps_an_acknowledgement_that_comes_instead_of_a_group() {
        let ta1 = "ISA*00*          *00*          *ZZ*PAYER          *ZZ*CLINIC         *261202*1200*^*00501*000000009*0*P*:~TA1*000000042*261202*1200*R*006~IEA*0*000000009~";
        let x = parse(ta1.as_bytes()).expect("a value");
        assert!(x.groups.is_empty());
        assert_eq!(x.ta1[0].get(4), "R");
    }
}
