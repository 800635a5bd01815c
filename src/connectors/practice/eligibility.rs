//! Eligibility as X12 005010X279A1, pure: an inquiry becomes a 270, a 271 (or the TA1 / 999 a
//! payer sends instead when it refuses the 270 itself) becomes an `Answer` the front desk can
//! act on, with every rejection's reason and follow-up in words.
//!
//! The 270 asks about the subscriber (loop 2000C), the patient being the member the card
//! names, as the guide prefers when the member has their own id. The 271 is read by loop:
//! 2000A/2100A (the payer), 2000B/2100B (the provider), 2000C/2100C (subscriber) with its
//! benefits in 2110C, and 2000D/2100D/2110D when the payer answers about a dependent. An AAA
//! segment in any of them rejects the inquiry; otherwise the EB segments say whether coverage
//! is active and give the co-pay (EB01 `B`) and the deductible left (EB01 `C`, EB06 `29`).

use super::x12::{self, Delimiters, Envelope, Segment, Writer, X12Error};
use thiserror::Error;

/// The guide both transactions follow.
pub const GUIDE: &str = "005010X279A1";

/// Why a 271 could not be read as an answer to our inquiry.
#[derive(Debug, Error, PartialEq)]
pub enum EligibilityError {
    #[error(transparent)]
    X12(#[from] X12Error),
    #[error("the answer is a {0} transaction, not a 271")]
    NotA271(String),
    #[error("the 271 answers inquiry {found}, not {expected}")]
    OtherInquiry { found: String, expected: String },
    #[error("the 271 gives no coverage status (no EB01 of 1–8) and no rejection")]
    NoStatus,
    #[error("{element} '{value}' is not an amount")]
    Amount {
        element: &'static str,
        value: String,
    },
}

/// A member to ask about.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub last_name: String,
    pub first_name: String,
    /// The id on the card (NM109, qualifier `MI`).
    pub member_id: String,
    /// `CCYYMMDD`.
    pub birth_date: String,
    /// `F`, `M` or `U`; sent only when known.
    pub gender: Option<String>,
}

/// One eligibility inquiry.
#[derive(Debug, Clone, PartialEq)]
pub struct Inquiry {
    pub payer_name: String,
    /// NM109 of 2100A with qualifier `PI` (payer id).
    pub payer_id: String,
    pub provider_name: String,
    /// The clinic's NPI (NM109 of 2100B, qualifier `XX`).
    pub provider_npi: String,
    pub member: Member,
    /// `CCYYMMDD`, the date of service (DTP*291).
    pub service_date: String,
    /// EQ01 service type codes (`30` health benefit plan coverage, `98` office visit, …).
    pub service_types: Vec<String>,
    /// TRN02, our reference echoed in the 271 (TRN*2).
    pub trace: String,
    /// TRN03, `1` + EIN or `9` + a 9-character id of the clinic.
    pub originator: String,
}

/// The 270 for `inquiry` in its own interchange.
pub fn request(inquiry: &Inquiry, env: &Envelope) -> Result<String, X12Error> {
    let mut w = Writer::new(Delimiters::default());
    let q = inquiry;
    w.segment(
        "BHT",
        &[
            ("BHT01", "0022"),
            ("BHT02", "13"),
            ("BHT03", &q.trace),
            ("BHT04", &env.date),
            ("BHT05", &env.time),
        ],
    )?;
    w.segment(
        "HL",
        &[("HL01", "1"), ("HL02", ""), ("HL03", "20"), ("HL04", "1")],
    )?;
    w.segment("NM1", &nm1("PR", "2", &q.payer_name, "", "PI", &q.payer_id))?;
    w.segment(
        "HL",
        &[("HL01", "2"), ("HL02", "1"), ("HL03", "21"), ("HL04", "1")],
    )?;
    w.segment(
        "NM1",
        &nm1("1P", "2", &q.provider_name, "", "XX", &q.provider_npi),
    )?;
    w.segment(
        "HL",
        &[("HL01", "3"), ("HL02", "2"), ("HL03", "22"), ("HL04", "0")],
    )?;
    w.segment(
        "TRN",
        &[
            ("TRN01", "1"),
            ("TRN02", &q.trace),
            ("TRN03", &q.originator),
        ],
    )?;
    let m = &q.member;
    w.segment(
        "NM1",
        &nm1("IL", "1", &m.last_name, &m.first_name, "MI", &m.member_id),
    )?;
    w.segment(
        "DMG",
        &[
            ("DMG01", "D8"),
            ("DMG02", &m.birth_date),
            ("DMG03", m.gender.as_deref().unwrap_or("")),
        ],
    )?;
    w.segment(
        "DTP",
        &[
            ("DTP01", "291"),
            ("DTP02", "D8"),
            ("DTP03", &q.service_date),
        ],
    )?;
    let types: Vec<&str> = if q.service_types.is_empty() {
        vec!["30"]
    } else {
        q.service_types.iter().map(String::as_str).collect()
    };
    // Several service types travel as repetitions of EQ01 (the guide's 5010 form).
    w.repeated("EQ", "EQ01", &types)?;
    Ok(w.interchange(env, "HS", "270", GUIDE))
}

fn nm1<'a>(
    entity: &'a str,
    kind: &'a str,
    last: &'a str,
    first: &'a str,
    qualifier: &'a str,
    id: &'a str,
) -> [(&'static str, &'a str); 9] {
    [
        ("NM101", entity),
        ("NM102", kind),
        ("NM103", last),
        ("NM104", first),
        ("NM105", ""),
        ("NM106", ""),
        ("NM107", ""),
        ("NM108", qualifier),
        ("NM109", id),
    ]
}

/// Money in cents.
pub type Cents = i64;

/// What the payer said.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: Status,
    /// 2100A NM103.
    pub payer: Option<String>,
    /// EB05 of the active coverage, when the payer names the plan.
    pub plan: Option<String>,
    /// The co-pay for the service asked about (EB01 `B`, EB07).
    pub copay: Option<Cents>,
    /// The deductible left this period (EB01 `C`, EB06 `29`, EB07).
    pub deductible_remaining: Option<Cents>,
}

/// Whether the patient may be seen on this coverage.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// EB01 `1`–`5`.
    Active,
    /// EB01 `6`–`8`, in words.
    Inactive(String),
    /// The payer refused the inquiry: AAA segments, a TA1 or a 999 rejection.
    Rejected(Vec<Rejection>),
}

/// One reason the payer refused the inquiry, in words the front desk can act on.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Where it was reported: `2100C` (the member), `2100A` (the payer), `interchange`, …
    pub place: String,
    /// The code as sent (AAA03, TA105 or IK5 / AK9).
    pub code: String,
    pub reason: String,
    /// AAA04 in words, when sent.
    pub follow_up: Option<String>,
    /// Whether sending the inquiry again (corrected, or later) may succeed.
    pub retry: bool,
}

/// Reads the payer's answer to the inquiry whose trace is `trace`.
pub fn read(bytes: &[u8], trace: &str) -> Result<Answer, EligibilityError> {
    let x = x12::parse(bytes)?;
    let rejected = |r: Vec<Rejection>| Answer {
        status: Status::Rejected(r),
        payer: None,
        plan: None,
        copay: None,
        deductible_remaining: None,
    };
    let ta1: Vec<Rejection> = x
        .ta1
        .iter()
        .filter(|t| t.get(4) != "A")
        .map(|t| Rejection {
            place: "interchange".into(),
            code: t.get(5).to_string(),
            reason: ta1_note(t.get(5)).to_string(),
            follow_up: None,
            retry: false,
        })
        .collect();
    if !ta1.is_empty() {
        return Ok(rejected(ta1));
    }
    let Some(t) = x.groups.iter().flat_map(|g| &g.transactions).next() else {
        return Err(X12Error::Segment {
            index: 2,
            reason: "the interchange holds no transaction".into(),
        }
        .into());
    };
    match t.set.as_str() {
        "271" => read_271(&t.segments, &x.delimiters, trace),
        "999" => Ok(rejected(ack_999(&t.segments))),
        other => Err(EligibilityError::NotA271(other.to_string())),
    }
}

fn read_271(segments: &[Segment], d: &Delimiters, trace: &str) -> Result<Answer, EligibilityError> {
    let mut answer = Answer {
        status: Status::Active,
        payer: None,
        plan: None,
        copay: None,
        deductible_remaining: None,
    };
    let mut rejections = Vec::new();
    // The loop the reader is in: the level letter (A–D) and whether an NM1 or EB opened a
    // sub-loop, which is what an AAA's place is named after.
    let mut level = 'A';
    let mut place = String::from("2000A");
    let mut benefits: Vec<(char, &Segment)> = Vec::new();
    for seg in segments {
        match seg.id.as_str() {
            "HL" => {
                level = match seg.get(3) {
                    "20" => 'A',
                    "21" => 'B',
                    "22" => 'C',
                    "23" => 'D',
                    _ => level,
                };
                place = format!("2000{level}");
            }
            "NM1" => {
                place = format!("2100{level}");
                if level == 'A' {
                    answer.payer = Some(seg.get(3).to_string()).filter(|s| !s.is_empty());
                }
            }
            "TRN" if matches!(level, 'C' | 'D') && seg.get(1) == "2" && seg.get(2) != trace => {
                return Err(EligibilityError::OtherInquiry {
                    found: seg.get(2).to_string(),
                    expected: trace.to_string(),
                });
            }
            "EB" => {
                place = format!("2110{level}");
                benefits.push((level, seg));
            }
            "AAA" => rejections.push(aaa(seg, &place)),
            _ => {}
        }
    }
    if !rejections.is_empty() {
        answer.status = Status::Rejected(rejections);
        return Ok(answer);
    }
    // A dependent's benefits (2110D) answer for the patient when the payer sends them.
    let who = if benefits.iter().any(|(l, _)| *l == 'D') {
        'D'
    } else {
        'C'
    };
    let benefits: Vec<&Segment> = benefits
        .into_iter()
        .filter(|(l, _)| *l == who)
        .map(|(_, s)| s)
        .collect();
    let active = benefits
        .iter()
        .find(|eb| matches!(eb.get(1), "1" | "2" | "3" | "4" | "5"));
    let inactive = benefits
        .iter()
        .find(|eb| matches!(eb.get(1), "6" | "7" | "8"));
    let cannot = benefits.iter().find(|eb| eb.get(1) == "V");
    answer.status = match (active, inactive, cannot) {
        (Some(eb), _, _) => {
            answer.plan = Some(eb.get(5).to_string()).filter(|s| !s.is_empty());
            Status::Active
        }
        (None, Some(eb), _) => Status::Inactive(eb01(eb.get(1)).to_string()),
        (None, None, Some(_)) => Status::Rejected(vec![Rejection {
            place: format!("2110{who}"),
            code: "V".into(),
            reason: "the payer cannot process this inquiry".into(),
            follow_up: None,
            retry: false,
        }]),
        (None, None, None) => return Err(EligibilityError::NoStatus),
    };
    if answer.status == Status::Active {
        answer.copay = best(&benefits, d, "B", None)?;
        answer.deductible_remaining = best(&benefits, d, "C", Some("29"))?;
    }
    Ok(answer)
}

/// The amount of the EB with code `eb01` (and period `eb06` when given) that fits best: an
/// individual's over a family's, in network over out, a visit's service type (`98`, then
/// `30`) over others.
fn best(
    benefits: &[&Segment],
    d: &Delimiters,
    eb01: &str,
    eb06: Option<&str>,
) -> Result<Option<Cents>, EligibilityError> {
    let score = |eb: &Segment| {
        let types: Vec<String> = eb
            .composite(3, d)
            .into_iter()
            .filter_map(|c| c.first().map(|s| s.to_string()))
            .collect();
        let service = if types.iter().any(|t| t == "98") {
            0
        } else if types.iter().any(|t| t == "30") || types.is_empty() {
            1
        } else {
            2
        };
        let network = if eb.get(12) == "N" { 1 } else { 0 };
        let level = if matches!(eb.get(2), "IND" | "") {
            0
        } else {
            1
        };
        (service, network, level)
    };
    let chosen = benefits
        .iter()
        .filter(|eb| eb.get(1) == eb01 && !eb.get(7).is_empty())
        .filter(|eb| eb06.is_none_or(|p| eb.get(6) == p))
        .min_by_key(|eb| score(eb));
    chosen.map(|eb| cents("EB07", eb.get(7))).transpose()
}

/// An X12 `R` amount (`20`, `20.5`, `-3.25`) in cents; more than two decimals is refused.
fn cents(element: &'static str, value: &str) -> Result<Cents, EligibilityError> {
    let bad = || EligibilityError::Amount {
        element,
        value: value.to_string(),
    };
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 2
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
        || whole.len() > 15
    {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: i64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    let c = whole * 100 + frac;
    Ok(if negative { -c } else { c })
}

fn aaa(seg: &Segment, place: &str) -> Rejection {
    let code = seg.get(3);
    Rejection {
        place: place.to_string(),
        code: code.to_string(),
        reason: aaa_reason(code).to_string(),
        follow_up: Some(seg.get(4))
            .filter(|f| !f.is_empty())
            .map(|f| follow_up(f).to_string()),
        retry: matches!(seg.get(4), "C" | "P" | "R" | "W" | "X") || seg.get(4).is_empty(),
    }
}

/// The rejections of a 999 that refused the 270 (AK9/IK5 not `A`).
fn ack_999(segments: &[Segment]) -> Vec<Rejection> {
    segments
        .iter()
        .filter(|s| matches!(s.id.as_str(), "IK5" | "AK9") && !matches!(s.get(1), "A" | "E"))
        .map(|s| Rejection {
            place: "270".into(),
            code: format!("{} {}", s.id, s.get(1)),
            reason: "the payer found the inquiry malformed (implementation acknowledgment)".into(),
            follow_up: None,
            retry: false,
        })
        .collect()
}

fn eb01(code: &str) -> &'static str {
    match code {
        "6" => "coverage is inactive",
        "7" => "inactive, pending an eligibility update",
        "8" => "inactive, pending the payer's investigation",
        _ => "coverage is not active",
    }
}

/// AAA03 (the guide's reject reason codes).
fn aaa_reason(code: &str) -> &'static str {
    reject_reason(code).unwrap_or("rejected (a reason code this gateway does not know)")
}

/// An X12 reject reason code (AAA03) in words, when it is one.
pub fn reject_reason(code: &str) -> Option<&'static str> {
    Some(match code {
        "15" => "required application data missing",
        "41" => "authorization or access restrictions",
        "42" => "the payer cannot respond now",
        "43" => "invalid or missing provider identification",
        "44" => "invalid or missing provider name",
        "45" => "invalid or missing provider specialty",
        "46" => "invalid or missing provider phone number",
        "47" => "invalid or missing provider state",
        "48" => "invalid or missing referring provider identification",
        "49" => "the provider is not the primary care physician",
        "50" => "the provider may not make inquiries",
        "51" => "the provider is not on file",
        "52" => "service dates not within the provider's plan enrollment",
        "53" => "inquired benefit inconsistent with provider type",
        "54" => "inappropriate product or service id qualifier",
        "55" => "inappropriate product or service id",
        "56" => "inappropriate date",
        "57" => "invalid or missing date of service",
        "58" => "invalid or missing date of birth",
        "60" => "date of birth follows the date of service",
        "61" => "date of death precedes the date of service",
        "62" => "date of service not within the allowed inquiry period",
        "63" => "date of service in the future",
        "64" => "invalid or missing patient id",
        "65" => "invalid or missing patient name",
        "66" => "invalid or missing patient gender",
        "67" => "patient not found",
        "68" => "duplicate patient id",
        "69" => "inconsistent with the patient's age",
        "70" => "inconsistent with the patient's gender",
        "71" => "the date of birth does not match the payer's records",
        "72" => "invalid or missing member id",
        "73" => "invalid or missing subscriber name",
        "74" => "invalid or missing subscriber gender",
        "75" => "subscriber not found",
        "76" => "duplicate subscriber id",
        "77" => "subscriber found, patient not found",
        "78" => "subscriber not in the group or plan named",
        "79" => "invalid participant identification",
        "80" => "no response received; the transaction was ended",
        "97" => "invalid or missing provider address",
        "T4" => "payer name or identifier missing",
        _ => return None,
    })
}

/// AAA04.
fn follow_up(code: &str) -> &'static str {
    match code {
        "C" => "correct and resubmit",
        "N" => "resubmission not allowed",
        "P" => "resubmit the original inquiry",
        "R" => "resubmission allowed",
        "S" => "do not resubmit; the payer asked a third party",
        "W" => "wait 30 days and resubmit",
        "X" => "wait 10 days and resubmit",
        "Y" => "do not resubmit; the payer will answer by hand",
        _ => "an unknown follow-up code",
    }
}

/// TA105 (X12.5 interchange note codes).
fn ta1_note(code: &str) -> &'static str {
    match code {
        "001" => "the interchange control numbers in ISA and IEA differ",
        "002" | "003" | "016" | "017" => "the payer does not support this X12 version",
        "004" => "invalid segment terminator",
        "005" | "006" | "007" => "the payer does not know our sender id",
        "008" | "009" => "the payer does not know the receiver id we sent",
        "010" | "011" | "012" | "013" => {
            "the payer refused our authorization or security information"
        }
        "014" | "015" => "invalid interchange date or time",
        "018" | "025" => "invalid or duplicate interchange control number",
        "020" => "invalid test indicator",
        "021" | "022" | "023" | "024" => "the payer found the interchange's structure invalid",
        "026" | "027" => "invalid delimiters",
        _ => "the payer refused the interchange",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            sender: ("ZZ".into(), "CLINIC01".into()),
            receiver: ("ZZ".into(), "PAYER01".into()),
            application_sender: "CLINIC01".into(),
            application_receiver: "PAYER01".into(),
            control: 17,
            date: "20261202".into(),
            time: "0915".into(),
            production: false,
        }
    }

    fn inquiry() -> Inquiry {
        Inquiry {
            payer_name: "ACME HEALTH".into(),
            payer_id: "60054".into(),
            provider_name: "MAIN STREET CLINIC".into(),
            provider_npi: "1234567893".into(),
            member: Member {
                last_name: "DOE".into(),
                first_name: "JANE".into(),
                member_id: "W123456789".into(),
                birth_date: "19800101".into(),
                gender: Some("F".into()),
            },
            service_date: "20261202".into(),
            service_types: vec!["30".into(), "98".into()],
            trace: "T17".into(),
            originator: "9CLINIC001".into(),
        }
    }

    /// A 271 around `body` (the segments after BHT), numbered as its envelope requires.
    fn answer(body: &str) -> String {
        let segments: Vec<&str> = body.split('~').filter(|s| !s.is_empty()).collect();
        format!(
            "ISA*00*          *00*          *ZZ*PAYER01        *ZZ*CLINIC01       *261202*0915*^*00501*000000099*0*T*:~\
GS*HB*PAYER01*CLINIC01*20261202*0915*99*X*005010X279A1~ST*271*0099*005010X279A1~\
BHT*0022*11*T17*20261202*0915~{}~SE*{}*0099~GE*1*99~IEA*1*000000099~",
            segments.join("~"),
            segments.len() + 3
        )
    }

    const HEAD: &str = "HL*1**20*1~NM1*PR*2*ACME HEALTH*****PI*60054~HL*2*1*21*1~\
NM1*1P*2*MAIN STREET CLINIC*****XX*1234567893~HL*3*2*22*0~TRN*2*T17*9CLINIC001~\
NM1*IL*1*DOE*JANE****MI*W123456789~DMG*D8*19800101*F~";

    fn check(body: &str) -> Answer {
        read(answer(body).as_bytes(), "T17").expect("a value")
    }

    #[test]
    fn the_270_is_the_guides_shape() {
        let text = request(&inquiry(), &env()).expect("a value");
        let body = text.split_once("~ST*").expect("a value").1;
        assert_eq!(
            body,
            "270*0017*005010X279A1~BHT*0022*13*T17*20261202*0915~HL*1**20*1~\
NM1*PR*2*ACME HEALTH*****PI*60054~HL*2*1*21*1~NM1*1P*2*MAIN STREET CLINIC*****XX*1234567893~\
HL*3*2*22*0~TRN*1*T17*9CLINIC001~NM1*IL*1*DOE*JANE****MI*W123456789~DMG*D8*19800101*F~\
DTP*291*D8*20261202~EQ*30^98~SE*13*0017~GE*1*17~IEA*1*000000017~"
        );
        let mut bad = inquiry();
        bad.member.last_name = "O~NEIL".into();
        assert_eq!(
            request(&bad, &env()).expect_err("an error").to_string(),
            "NM103 holds '~', one of the interchange's delimiters"
        );
    }

    #[test]
    fn active_coverage_gives_the_visit_copay_and_the_deductible_left() {
        let a = check(&format!(
            "{HEAD}EB*1*IND*30**GOLD PPO~EB*C*IND*30***23*1500~EB*C*IND*30***29*250.5~\
EB*C*FAM*30***29*900~EB*B*IND*30***27*40~EB*B*IND*98***27*25*****Y~EB*B*IND*98***27*60*****N"
        ));
        assert_eq!(a.status, Status::Active);
        assert_eq!(a.payer.as_deref(), Some("ACME HEALTH"));
        assert_eq!(a.plan.as_deref(), Some("GOLD PPO"));
        assert_eq!(a.copay, Some(2500));
        assert_eq!(a.deductible_remaining, Some(25050));
    }

    #[test]
    fn inactive_coverage_says_so_in_words() {
        let a = check(&format!("{HEAD}EB*6**30"));
        assert_eq!(a.status, Status::Inactive("coverage is inactive".into()));
        assert_eq!(a.copay, None);
    }

    #[test]
    fn rejections_name_the_loop_the_reason_and_what_to_do() {
        let a = check(&HEAD.replace("DMG*D8*19800101*F~", "AAA*Y**72*C~DMG*D8*19800101*F~"));
        assert_eq!(
            a.status,
            Status::Rejected(vec![Rejection {
                place: "2100C".into(),
                code: "72".into(),
                reason: "invalid or missing member id".into(),
                follow_up: Some("correct and resubmit".into()),
                retry: true,
            }])
        );
        let payer_down = check("HL*1**20*0~AAA*Y**42*R~NM1*PR*2*ACME HEALTH*****PI*60054");
        let Status::Rejected(r) = payer_down.status else {
            panic!("not rejected")
        };
        assert_eq!(
            (r[0].place.as_str(), r[0].reason.as_str()),
            ("2000A", "the payer cannot respond now")
        );
    }

    #[test]
    fn a_dependents_benefits_answer_for_the_patient() {
        let a = check(&format!(
            "{HEAD}EB*6**30~HL*4*3*23*0~NM1*03*1*DOE*SAM~EB*1*IND*30~EB*B*IND*98***27*15"
        ));
        assert_eq!(a.status, Status::Active);
        assert_eq!(a.copay, Some(1500));
    }

    #[test]
    fn an_answer_to_another_inquiry_or_without_status_is_an_error() {
        let other = read(
            answer(HEAD).replace("TRN*2*T17", "TRN*2*T99").as_bytes(),
            "T17",
        );
        assert_eq!(
            other.expect_err("an error").to_string(),
            "the 271 answers inquiry T99, not T17"
        );
        assert_eq!(
            read(answer(HEAD).as_bytes(), "T17"),
            Err(EligibilityError::NoStatus)
        );
        let amount = read(
            answer(&format!("{HEAD}EB*1~EB*B**98***27*12.345")).as_bytes(),
            "T17",
        );
        assert_eq!(
            amount.expect_err("an error").to_string(),
            "EB07 '12.345' is not an amount"
        );
    }

    #[test]
    fn a_refused_interchange_or_270_is_a_rejection() {
        let ta1 = "ISA*00*          *00*          *ZZ*PAYER01        *ZZ*CLINIC01       *261202*0915*^*00501*000000100*0*T*:~TA1*000000017*261202*0915*R*006~IEA*0*000000100~";
        let a = read(ta1.as_bytes(), "T17").expect("a value");
        let Status::Rejected(r) = a.status else {
            panic!("not rejected")
        };
        assert_eq!(r[0].reason, "the payer does not know our sender id");
        let ack = "ISA*00*          *00*          *ZZ*PAYER01        *ZZ*CLINIC01       *261202*0915*^*00501*000000101*0*T*:~\
GS*FA*PAYER01*CLINIC01*20261202*0915*101*X*005010X231A1~ST*999*0001*005010X231A1~AK1*HS*17*005010X279A1~\
AK2*270*0017*005010X279A1~IK5*R*5~AK9*R*1*1*0~SE*6*0001~GE*1*101~IEA*1*000000101~";
        let Status::Rejected(r) = read(ack.as_bytes(), "T17").expect("a value").status else {
            panic!("not rejected")
        };
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn amounts_are_read_to_the_cent() {
        for (text, c) in [
            ("20", 2000),
            ("20.5", 2050),
            ("0.05", 5),
            ("-3.25", -325),
            (".5", 50),
        ] {
            assert_eq!(cents("EB07", text), Ok(c), "{text}");
        }
        for text in ["", "-", "1.234", "1e3", "12,00", "."] {
            assert!(cents("EB07", text).is_err(), "{text}");
        }
    }
}
