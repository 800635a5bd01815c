//! FHIR search, pure: the parameters each resource type supports, their parsing (with the
//! `eq`/`gt`/`ge`/`lt`/`le` prefixes of dates), the match of one resource's search values, and
//! the searchset Bundle with its `self`/`next` links. No I/O, no clock.
//!
//! Dates without a zone are read as UTC; a date of day (or month, year) precision is the
//! range it covers (FHIR R4 §3.1.1.5.5).

use serde_json::{Value, json};

/// The search parameters of the API (R4 names); which type supports which is [`supports`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Id,
    Patient,
    Date,
    Status,
    LastUpdated,
}

impl Param {
    pub fn name(self) -> &'static str {
        match self {
            Param::Id => "_id",
            Param::Patient => "patient",
            Param::Date => "date",
            Param::Status => "status",
            Param::LastUpdated => "_lastUpdated",
        }
    }

    /// The R4 search parameter type, for the CapabilityStatement.
    pub fn kind(self) -> &'static str {
        match self {
            Param::Id | Param::Status => "token",
            Param::Patient => "reference",
            Param::Date | Param::LastUpdated => "date",
        }
    }
}

/// The parameters `resource` is searched by here: those R4 defines for it among `_id`,
/// `patient`, `date`, `status` and `_lastUpdated`.
pub fn supports(resource: &str) -> &'static [Param] {
    use Param::*;
    match resource {
        "Encounter" | "Appointment" => &[Id, Patient, Date, Status, LastUpdated],
        // Flag's `date` is its period, which the gateway does not know.
        "Flag" => &[Id, Patient, LastUpdated],
        "Patient" => &[Id, LastUpdated],
        "Task" => &[Id, Status, LastUpdated],
        "AuditEvent" => &[Id, Date],
        _ => &[],
    }
}

/// The largest page; a larger `_count` is lowered to it (R4 §3.1.1.5.7 lets a server).
pub const MAX_COUNT: usize = 100;
pub const DEFAULT_COUNT: usize = 20;

/// A half-open instant range in ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub until: i64,
}

impl Range {
    pub const ALL: Range = Range {
        from: i64::MIN,
        until: i64::MAX,
    };

    fn narrow(self, other: Range) -> Range {
        Range {
            from: self.from.max(other.from),
            until: self.until.min(other.until),
        }
    }

    pub fn contains(self, at: i64) -> bool {
        self.from <= at && at < self.until
    }
}

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    pub id: Option<String>,
    /// The patient's id, without `Patient/`.
    pub patient: Option<String>,
    pub date: Range,
    pub status: Option<String>,
    pub last_updated: Range,
    pub count: usize,
    pub offset: usize,
}

/// Why a search was refused (400 with an `OperationOutcome`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("unknown search parameter {0}")]
    Unknown(String),
    #[error("bad value of search parameter {0}")]
    BadValue(String),
}

/// The search of `query` (already split into decoded pairs) on `resource`.
pub fn parse(resource: &str, query: &[(String, String)]) -> Result<Search, SearchError> {
    let mut s = Search {
        id: None,
        patient: None,
        date: Range::ALL,
        status: None,
        last_updated: Range::ALL,
        count: DEFAULT_COUNT,
        offset: 0,
    };
    let params = supports(resource);
    for (name, value) in query {
        let bad = || SearchError::BadValue(name.clone());
        match name.as_str() {
            "_count" => {
                let n: usize = value.parse().map_err(|_| bad())?;
                s.count = n.min(MAX_COUNT);
            }
            "_offset" => s.offset = value.parse().map_err(|_| bad())?,
            // The client's wish for JSON is what it gets anyway.
            "_format" if matches!(value.as_str(), "json" | "application/fhir+json") => {}
            _ => {
                let Some(p) = params.iter().find(|p| p.name() == name) else {
                    return Err(SearchError::Unknown(name.clone()));
                };
                match p {
                    Param::Id => s.id = Some(token(value).ok_or_else(bad)?),
                    Param::Status => s.status = Some(token(value).ok_or_else(bad)?),
                    Param::Patient => {
                        let id = value.strip_prefix("Patient/").unwrap_or(value);
                        s.patient = Some(token(id).ok_or_else(bad)?);
                    }
                    Param::Date => s.date = s.date.narrow(date_param(value).ok_or_else(bad)?),
                    Param::LastUpdated => {
                        s.last_updated = s.last_updated.narrow(date_param(value).ok_or_else(bad)?)
                    }
                }
            }
        }
    }
    Ok(s)
}

/// A token value: a FHIR id's characters only, so that nothing odd reaches a comparison.
fn token(value: &str) -> Option<String> {
    (!value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.')))
    .then(|| value.to_string())
}

/// A date parameter with its prefix as the range of instants it admits.
fn date_param(value: &str) -> Option<Range> {
    let (prefix, text) = match value.get(..2) {
        Some(p @ ("eq" | "gt" | "ge" | "lt" | "le")) => (p, &value[2..]),
        _ => ("eq", value),
    };
    let span = span(text)?;
    Some(match prefix {
        "eq" => span,
        "gt" => Range {
            from: span.until,
            ..Range::ALL
        },
        "ge" => Range {
            from: span.from,
            ..Range::ALL
        },
        "lt" => Range {
            until: span.from,
            ..Range::ALL
        },
        _ => Range {
            until: span.until,
            ..Range::ALL
        },
    })
}

/// The instants a FHIR date or dateTime of any precision covers.
fn span(text: &str) -> Option<Range> {
    use jiff::civil::Date;
    use jiff::{ToSpan, Unit, tz::TimeZone};
    let day_ms = |d: Date| -> Option<i64> {
        Some(d.to_zoned(TimeZone::UTC).ok()?.timestamp().as_millisecond())
    };
    let (from, until) = match text.len() {
        4 => {
            let d = Date::new(text.parse().ok()?, 1, 1).ok()?;
            (d, d.checked_add(1.year()).ok()?)
        }
        7 => {
            let d: Date = format!("{text}-01").parse().ok()?;
            (d, d.checked_add(1.month()).ok()?)
        }
        10 => {
            let d: Date = text.parse().ok()?;
            (d, d.tomorrow().ok()?)
        }
        _ => {
            let t: jiff::Timestamp = text.parse().ok()?;
            let ms = t.round(Unit::Second).ok()?.as_millisecond();
            return Some(Range {
                from: ms,
                until: ms + 1000,
            });
        }
    };
    Some(Range {
        from: day_ms(from)?,
        until: day_ms(until)?,
    })
}

/// What a resource is searched by.
#[derive(Debug, Clone, PartialEq)]
pub struct Indexed {
    pub id: String,
    /// The patient's id, without `Patient/`.
    pub patient: Option<String>,
    /// ms since the epoch.
    pub date: Option<i64>,
    pub status: Option<String>,
    /// ms since the epoch.
    pub last_updated: i64,
    pub resource: Value,
}

impl Search {
    /// Whether `r` matches every parameter given.
    pub fn matches(&self, r: &Indexed) -> bool {
        self.id.as_ref().is_none_or(|id| *id == r.id)
            && self
                .patient
                .as_ref()
                .is_none_or(|p| r.patient.as_ref() == Some(p))
            && (self.date == Range::ALL || r.date.is_some_and(|d| self.date.contains(d)))
            && self
                .status
                .as_ref()
                .is_none_or(|s| r.status.as_ref() == Some(s))
            && self.last_updated.contains(r.last_updated)
    }
}

/// A searchset Bundle of one page: `total` matches, `entries` as (full URL, resource), the
/// `self` link `url` and, when more follow, a `next` link at `offset + count`. `outcomes`
/// are warnings about resources left out, as `search.mode = outcome` entries.
pub fn bundle(
    url: &Url,
    search: &Search,
    total: usize,
    entries: Vec<(String, Value)>,
    outcomes: Vec<Value>,
) -> Value {
    let mut links = vec![json!({ "relation": "self", "url": url.with_offset(search.offset) })];
    let next = search.offset.saturating_add(search.count);
    if search.count > 0 && next < total {
        links.push(json!({ "relation": "next", "url": url.with_offset(next) }));
    }
    let mut items: Vec<Value> = entries
        .into_iter()
        .map(|(full, resource)| {
            json!({ "fullUrl": full, "resource": resource, "search": { "mode": "match" } })
        })
        .collect();
    items.extend(
        outcomes
            .into_iter()
            .map(|o| json!({ "resource": o, "search": { "mode": "outcome" } })),
    );
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": items,
    })
}

/// A search's URL, rebuilt for its paging links from the decoded pairs (without `_offset`).
#[derive(Debug, Clone)]
pub struct Url {
    /// Scheme, host and path, e.g. `https://gw/fhir/R4/Encounter`.
    pub base: String,
    pub query: Vec<(String, String)>,
}

impl Url {
    fn with_offset(&self, offset: usize) -> String {
        let mut pairs: Vec<String> = self
            .query
            .iter()
            .filter(|(k, _)| k != "_offset")
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        if offset > 0 {
            pairs.push(format!("_offset={offset}"));
        }
        if pairs.is_empty() {
            self.base.clone()
        } else {
            format!("{}?{}", self.base, pairs.join("&"))
        }
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(resource: &str, query: &str) -> Result<Search, SearchError> {
        let pairs: Vec<(String, String)> = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(resource, &pairs)
    }

    const DAY: i64 = 86_400_000;
    /// 2026-12-02T00:00:00Z
    const DEC2: i64 = 1_796_169_600_000;

    #[test]
    fn dates_cover_their_precision_and_prefixes_open_them() {
        let s = check("Encounter", "date=2026-12-02").expect("search");
        assert_eq!(
            s.date,
            Range {
                from: DEC2,
                until: DEC2 + DAY
            }
        );
        let s = check("Encounter", "date=ge2026-12-02&date=lt2026-12-03").expect("search");
        assert_eq!(
            s.date,
            Range {
                from: DEC2,
                until: DEC2 + DAY
            }
        );
        let s = check("Encounter", "date=gt2026-12").expect("search");
        assert_eq!(s.date.from, DEC2 + 30 * DAY);
        let s = check("Encounter", "_lastUpdated=le2026-12-02T10:00:00Z").expect("search");
        assert_eq!(s.last_updated.until, DEC2 + 10 * 3_600_000 + 1000);
        assert_eq!(
            check("Encounter", "date=sa2026"),
            Err(SearchError::BadValue("date".into()))
        );
        assert_eq!(
            check("Encounter", "date=2026-13-01"),
            Err(SearchError::BadValue("date".into()))
        );
    }

    #[test]
    fn only_the_types_own_parameters_are_accepted() {
        assert_eq!(
            check("Patient", "status=arrived"),
            Err(SearchError::Unknown("status".into()))
        );
        assert_eq!(
            check("Encounter", "name=x"),
            Err(SearchError::Unknown("name".into()))
        );
        assert_eq!(
            check("Encounter", "_count=x"),
            Err(SearchError::BadValue("_count".into()))
        );
        let s = check("Encounter", "patient=Patient/p-1&_count=500&status=arrived").expect("ok");
        assert_eq!(
            (s.patient.as_deref(), s.count, s.status.as_deref()),
            (Some("p-1"), MAX_COUNT, Some("arrived"))
        );
        assert_eq!(
            check("Encounter", "patient=a%20b"),
            Err(SearchError::BadValue("patient".into()))
        );
    }

    #[test]
    fn a_page_links_to_itself_and_the_next_while_more_match() {
        let url = Url {
            base: "https://gw/fhir/R4/Encounter".into(),
            query: vec![
                ("patient".into(), "p 1".into()),
                ("_count".into(), "2".into()),
                ("_offset".into(), "2".into()),
            ],
        };
        let s = check("Encounter", "_count=2&_offset=2").expect("search");
        let b = bundle(&url, &s, 5, Vec::new(), Vec::new());
        assert_eq!(
            b["link"],
            json!([
                { "relation": "self", "url": "https://gw/fhir/R4/Encounter?patient=p%201&_count=2&_offset=2" },
                { "relation": "next", "url": "https://gw/fhir/R4/Encounter?patient=p%201&_count=2&_offset=4" },
            ])
        );
        let last = check("Encounter", "_count=2&_offset=4").expect("search");
        let b = bundle(&url, &last, 5, Vec::new(), Vec::new());
        assert_eq!(b["link"].as_array().map(Vec::len), Some(1));
        assert_eq!(b["total"], 5);
    }
}
