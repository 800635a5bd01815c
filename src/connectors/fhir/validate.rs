//! Conformance of a resource to the FHIR R4 (4.0.1) base definitions. A resource is checked
//! before it is sent to the EHR and when it is read from it, so that one that does not conform
//! is refused whole, with every reason, and never half applied. Pure: no I/O, no logging.
//!
//! The definitions are data: a table of elements ([`Elem`]: name, cardinality, type) per
//! datatype, backbone element and resource, walked by one recursive checker. It checks the JSON
//! shape and cardinality, primitive formats, datatypes, choice types, unknown elements, required
//! bindings (the codes are inlined from the R4 value sets) and the invariant app-3. It does not
//! check other invariants, extensible or preferred bindings, what a Reference points to, the
//! inside of contained resources, or the content of the open datatypes the gateway does not
//! exchange (Timing, Money, ...: any object is accepted there). A primitive's id and extensions
//! (`_birthDate`) are checked as such.

use Kind::{Code, Complex, Opaque, Resource};
use serde_json::{Map, Value};

/// Why a resource does not conform; every problem found, each naming its element path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{resource_type} is not valid FHIR R4: {}", .issues.join("; "))]
pub struct Invalid {
    /// The resource's `resourceType`, or `Resource` when it has none.
    pub resource_type: String,
    /// One line per problem, starting with the element's path: `Patient.name[0].given[1]: ...`.
    pub issues: Vec<String>,
}

/// Checks a Patient, Encounter, Appointment, Flag, Observation, Specimen, ServiceRequest, Task,
/// Communication, PaymentNotice, ChargeItem, CoverageEligibilityRequest,
/// CoverageEligibilityResponse, MedicationRequest, MedicationDispense, DetectedIssue,
/// AllergyIntolerance or DiagnosticReport against R4: `Ok` when
/// it conforms, else every problem found (checking goes on past the first).
pub fn validate(resource: &Value) -> Result<(), Invalid> {
    let mut check = Check::default();
    let resource_type = match resource.get("resourceType") {
        Some(given @ Value::String(name)) => {
            match RESOURCES.iter().find(|r| r.name == name) {
                Some(def) => check.object(name, resource, def),
                None => check.issue(
                    "resourceType",
                    format_args!("{given} is not a resource the gateway exchanges"),
                ),
            }
            if name == "Appointment"
                && let Some(map) = resource.as_object()
            {
                check.app_3(map);
            }
            name.clone()
        }
        found => {
            match (found, resource.is_object()) {
                (Some(v), _) => check.issue("resourceType", expected("a string", v)),
                (None, true) => check.issue("resourceType", "required (min 1)"),
                (None, false) => check.issue("Resource", expected("a resource object", resource)),
            }
            "Resource".into()
        }
    };
    match check.issues.is_empty() {
        true => Ok(()),
        false => Err(Invalid {
            resource_type,
            issues: check.issues,
        }),
    }
}

/// An element of a definition: its JSON name (without `[x]`), cardinality and type(s).
struct Elem {
    name: &'static str,
    min: usize,
    /// `max` is `*`: the element is a JSON array (else `max` is 1: a single value).
    many: bool,
    types: Types,
}

#[derive(Clone, Copy)]
enum Types {
    One(Kind),
    /// A choice (`value[x]`): the JSON name is the element's followed by the type's
    /// (`valueString`, `valueCodeableConcept`).
    Choice(&'static [Kind]),
}

/// What a value must be.
#[derive(Clone, Copy)]
enum Kind {
    Prim(&'static Prim),
    /// A `code` with a required binding: the value set's name and all its codes (`a | b`).
    Code(&'static str, &'static str),
    /// A datatype or backbone element, checked against its own table.
    Complex(&'static Def),
    /// A resource inside another (`contained`): an object with a `resourceType`, not looked into.
    Resource,
    /// Open datatypes the gateway does not exchange (`Money | Timing`): any non-empty object.
    Opaque(&'static str),
}

/// A primitive type: its R4 name and JSON form.
struct Prim {
    name: &'static str,
    form: Form,
}

#[derive(Clone, Copy)]
enum Form {
    Boolean,
    /// A JSON integer from this minimum to `i32::MAX` (integer, unsignedInt, positiveInt).
    Integer(i64),
    Decimal,
    /// A JSON string matching the type's lexical rule.
    Text(fn(&str) -> bool),
}

/// A datatype, backbone element or resource: the elements it inherits and its own.
struct Def {
    name: &'static str,
    base: &'static [Elem],
    elems: &'static [Elem],
}

// Elements by cardinality: `opt` 0..1, `req` 1..1, `list` 0..*, `choice` 0..1 or 1..1.
const fn opt(name: &'static str, kind: Kind) -> Elem {
    elem(name, 0, false, Types::One(kind))
}
const fn req(name: &'static str, kind: Kind) -> Elem {
    elem(name, 1, false, Types::One(kind))
}
const fn list(name: &'static str, kind: Kind) -> Elem {
    elem(name, 0, true, Types::One(kind))
}
const fn choice(name: &'static str, min: usize, kinds: &'static [Kind]) -> Elem {
    elem(name, min, false, Types::Choice(kinds))
}
const fn elem(name: &'static str, min: usize, many: bool, types: Types) -> Elem {
    Elem {
        name,
        min,
        many,
        types,
    }
}
const fn datatype(name: &'static str, elems: &'static [Elem]) -> Def {
    Def {
        name,
        base: &ELEMENT,
        elems,
    }
}
const fn resource(name: &'static str, elems: &'static [Elem]) -> Def {
    Def {
        name,
        base: &DOMAIN_RESOURCE,
        elems,
    }
}

/// A backbone element, defined inline in its resource.
macro_rules! backbone {
    ($($elem:expr),* $(,)?) => {
        Complex(&Def { name: "BackboneElement", base: &BACKBONE, elems: &[$($elem),*] })
    };
}

/// A primitive type.
macro_rules! prim {
    ($name:literal, $form:expr) => {
        Kind::Prim(&Prim {
            name: $name,
            form: $form,
        })
    };
}

const BASE64_BINARY: Kind = prim!("base64Binary", Form::Text(is_base64));
const BOOLEAN: Kind = prim!("boolean", Form::Boolean);
const CANONICAL: Kind = prim!("canonical", Form::Text(is_uri));
/// A code's lexical form, checked before its required binding if it has one.
const CODE_PRIM: &Prim = &Prim {
    name: "code",
    form: Form::Text(is_code),
};
const CODE: Kind = Kind::Prim(CODE_PRIM);
const DATE: Kind = prim!("date", Form::Text(is_date));
const DATE_TIME: Kind = prim!("dateTime", Form::Text(is_date_time));
const DECIMAL: Kind = prim!("decimal", Form::Decimal);
const ID: Kind = prim!("id", Form::Text(is_id));
const INSTANT: Kind = prim!("instant", Form::Text(is_instant));
const INTEGER: Kind = prim!("integer", Form::Integer(i32::MIN as i64));
const MARKDOWN: Kind = prim!("markdown", Form::Text(is_string));
const OID: Kind = prim!("oid", Form::Text(is_oid));
const POSITIVE_INT: Kind = prim!("positiveInt", Form::Integer(1));
const STRING: Kind = prim!("string", Form::Text(is_string));
const TIME: Kind = prim!("time", Form::Text(is_time));
const UNSIGNED_INT: Kind = prim!("unsignedInt", Form::Integer(0));
const URI: Kind = prim!("uri", Form::Text(is_uri));
const URL: Kind = prim!("url", Form::Text(is_uri));
const UUID: Kind = prim!("uuid", Form::Text(is_uuid));
const XHTML: Kind = prim!("xhtml", Form::Text(is_string));

// Required bindings: the R4 value set and all its codes, written as the R4 pages list them.
const ADDRESS_TYPE: Kind = Code("address-type", "postal | physical | both");
const ADDRESS_USE: Kind = Code("address-use", "home | work | temp | old | billing");
const APPOINTMENT_STATUS: Kind = Code(
    "appointmentstatus",
    "proposed | pending | booked | arrived | fulfilled | cancelled | noshow | entered-in-error \
     | checked-in | waitlist",
);
const CONTACT_POINT_SYSTEM: Kind = Code(
    "contact-point-system",
    "phone | fax | email | pager | url | sms | other",
);
const CONTACT_POINT_USE: Kind = Code("contact-point-use", "home | work | temp | old | mobile");
const ENCOUNTER_LOCATION_STATUS: Kind = Code(
    "encounter-location-status",
    "planned | active | reserved | completed",
);
const ENCOUNTER_STATUS: Kind = Code(
    "encounter-status",
    "planned | arrived | triaged | in-progress | onleave | finished | cancelled \
     | entered-in-error | unknown",
);
const EVENT_STATUS: Kind = Code(
    "event-status",
    "preparation | in-progress | not-done | on-hold | stopped | completed | entered-in-error \
     | unknown",
);
const FLAG_STATUS: Kind = Code("flag-status", "active | inactive | entered-in-error");
const OBSERVATION_STATUS: Kind = Code(
    "observation-status",
    "registered | preliminary | final | amended | corrected | cancelled | entered-in-error | unknown",
);
const GENDER: Kind = Code("administrative-gender", "male | female | other | unknown");
const IDENTIFIER_USE: Kind = Code(
    "identifier-use",
    "usual | official | temp | secondary | old",
);
const LINK_TYPE: Kind = Code("link-type", "replaced-by | replaces | refer | seealso");
const NAME_USE: Kind = Code(
    "name-use",
    "usual | official | temp | nickname | anonymous | old | maiden",
);
const NARRATIVE_STATUS: Kind = Code(
    "narrative-status",
    "generated | extensions | additional | empty",
);
const PARTICIPANT_REQUIRED: Kind = Code(
    "participantrequired",
    "required | optional | information-only",
);
const PARTICIPATION_STATUS: Kind = Code(
    "participationstatus",
    "accepted | declined | tentative | needs-action",
);
const QUANTITY_COMPARATOR: Kind = Code("quantity-comparator", "< | <= | >= | >");
const REQUEST_PRIORITY: Kind = Code("request-priority", "routine | urgent | asap | stat");
const TASK_INTENT: Kind = Code(
    "task-intent",
    "unknown | proposal | plan | order | original-order | reflex-order | filler-order \
     | instance-order | option",
);
const REQUEST_STATUS: Kind = Code(
    "request-status",
    "draft | active | on-hold | revoked | completed | entered-in-error | unknown",
);
const REQUEST_INTENT: Kind = Code(
    "request-intent",
    "proposal | plan | directive | order | original-order | reflex-order | filler-order \
     | instance-order | option",
);
const SPECIMEN_STATUS: Kind = Code(
    "specimen-status",
    "available | unavailable | unsatisfactory | entered-in-error",
);
const TASK_STATUS: Kind = Code(
    "task-status",
    "draft | requested | received | accepted | rejected | ready | cancelled | in-progress \
     | on-hold | failed | completed | entered-in-error",
);

static ELEMENT: [Elem; 2] = [opt("id", STRING), list("extension", Complex(&EXTENSION))];
static BACKBONE: [Elem; 3] = [
    opt("id", STRING),
    list("extension", Complex(&EXTENSION)),
    list("modifierExtension", Complex(&EXTENSION)),
];
/// Resource and DomainResource, with the JSON-only `resourceType` (already known to be a string).
static DOMAIN_RESOURCE: [Elem; 9] = [
    req("resourceType", STRING),
    opt("id", ID),
    opt("meta", Complex(&META)),
    opt("implicitRules", URI),
    opt("language", CODE),
    opt("text", Complex(&NARRATIVE)),
    list("contained", Resource),
    list("extension", Complex(&EXTENSION)),
    list("modifierExtension", Complex(&EXTENSION)),
];

/// What `_birthDate` and the like hold: the id and extensions of a primitive value.
static PRIMITIVE_EXTENSION: Def = datatype("Element", &[]);

/// The R4 open types, all that `Extension.value[x]` and the `*` of `Task.input.value[x]` and
/// `Task.output.value[x]` may be.
static OPEN_TYPES: [Kind; 36] = [
    BASE64_BINARY,
    BOOLEAN,
    CANONICAL,
    CODE,
    DATE,
    DATE_TIME,
    DECIMAL,
    ID,
    INSTANT,
    INTEGER,
    MARKDOWN,
    OID,
    POSITIVE_INT,
    STRING,
    TIME,
    UNSIGNED_INT,
    URI,
    URL,
    UUID,
    Complex(&ADDRESS),
    Complex(&AGE),
    Complex(&ANNOTATION),
    Complex(&ATTACHMENT),
    Complex(&CODEABLE_CONCEPT),
    Complex(&CODING),
    Complex(&CONTACT_POINT),
    Complex(&COUNT),
    Complex(&DISTANCE),
    Complex(&DURATION),
    Complex(&HUMAN_NAME),
    Complex(&IDENTIFIER),
    Complex(&META),
    Complex(&PERIOD),
    Complex(&QUANTITY),
    Complex(&REFERENCE),
    Opaque(
        "Money | Range | Ratio | SampledData | Signature | Timing | ContactDetail | Contributor \
         | DataRequirement | Expression | ParameterDefinition | RelatedArtifact \
         | TriggerDefinition | UsageContext | Dosage",
    ),
];

static EXTENSION: Def = datatype(
    "Extension",
    &[req("url", URI), choice("value", 0, &OPEN_TYPES)],
);
static META: Def = datatype(
    "Meta",
    &[
        opt("versionId", ID),
        opt("lastUpdated", INSTANT),
        opt("source", URI),
        list("profile", CANONICAL),
        list("security", Complex(&CODING)),
        list("tag", Complex(&CODING)),
    ],
);
static NARRATIVE: Def = datatype(
    "Narrative",
    &[req("status", NARRATIVE_STATUS), req("div", XHTML)],
);
static IDENTIFIER: Def = datatype(
    "Identifier",
    &[
        opt("use", IDENTIFIER_USE),
        opt("type", Complex(&CODEABLE_CONCEPT)),
        opt("system", URI),
        opt("value", STRING),
        opt("period", Complex(&PERIOD)),
        opt("assigner", Complex(&REFERENCE)),
    ],
);
static HUMAN_NAME: Def = datatype(
    "HumanName",
    &[
        opt("use", NAME_USE),
        opt("text", STRING),
        opt("family", STRING),
        list("given", STRING),
        list("prefix", STRING),
        list("suffix", STRING),
        opt("period", Complex(&PERIOD)),
    ],
);
static CONTACT_POINT: Def = datatype(
    "ContactPoint",
    &[
        opt("system", CONTACT_POINT_SYSTEM),
        opt("value", STRING),
        opt("use", CONTACT_POINT_USE),
        opt("rank", POSITIVE_INT),
        opt("period", Complex(&PERIOD)),
    ],
);
static ADDRESS: Def = datatype(
    "Address",
    &[
        opt("use", ADDRESS_USE),
        opt("type", ADDRESS_TYPE),
        opt("text", STRING),
        list("line", STRING),
        opt("city", STRING),
        opt("district", STRING),
        opt("state", STRING),
        opt("postalCode", STRING),
        opt("country", STRING),
        opt("period", Complex(&PERIOD)),
    ],
);
static CODEABLE_CONCEPT: Def = datatype(
    "CodeableConcept",
    &[list("coding", Complex(&CODING)), opt("text", STRING)],
);
static CODING: Def = datatype(
    "Coding",
    &[
        opt("system", URI),
        opt("version", STRING),
        opt("code", CODE),
        opt("display", STRING),
        opt("userSelected", BOOLEAN),
    ],
);
static REFERENCE: Def = datatype(
    "Reference",
    &[
        opt("reference", STRING),
        opt("type", URI),
        opt("identifier", Complex(&IDENTIFIER)),
        opt("display", STRING),
    ],
);
static PERIOD: Def = datatype("Period", &[opt("start", DATE_TIME), opt("end", DATE_TIME)]);
/// Quantity and its specialisations (Age, Count, Distance, Duration) share the elements.
static QUANTITY_ELEMS: [Elem; 5] = [
    opt("value", DECIMAL),
    opt("comparator", QUANTITY_COMPARATOR),
    opt("unit", STRING),
    opt("system", URI),
    opt("code", CODE),
];
static QUANTITY: Def = datatype("Quantity", &QUANTITY_ELEMS);
static AGE: Def = datatype("Age", &QUANTITY_ELEMS);
static COUNT: Def = datatype("Count", &QUANTITY_ELEMS);
static DISTANCE: Def = datatype("Distance", &QUANTITY_ELEMS);
static DURATION: Def = datatype("Duration", &QUANTITY_ELEMS);
static ATTACHMENT: Def = datatype(
    "Attachment",
    &[
        // Bound (required) to all BCP 13 mime types, which cannot be listed: the format only.
        opt("contentType", CODE),
        opt("language", CODE),
        opt("data", BASE64_BINARY),
        opt("url", URL),
        opt("size", UNSIGNED_INT),
        opt("hash", BASE64_BINARY),
        opt("title", STRING),
        opt("creation", DATE_TIME),
    ],
);
static ANNOTATION: Def = datatype(
    "Annotation",
    &[
        choice("author", 0, &[Complex(&REFERENCE), STRING]),
        opt("time", DATE_TIME),
        req("text", MARKDOWN),
    ],
);

/// The resources the gateway exchanges with the EHR, and the audit it serves on its FHIR API.
static RESOURCES: [&Def; 19] = [
    &PATIENT,
    &ENCOUNTER,
    &APPOINTMENT,
    &FLAG,
    &OBSERVATION,
    &SPECIMEN,
    &SERVICE_REQUEST,
    &TASK,
    &COMMUNICATION,
    &AUDIT_EVENT,
    &PAYMENT_NOTICE,
    &COVERAGE_ELIGIBILITY_REQUEST,
    &COVERAGE_ELIGIBILITY_RESPONSE,
    &CHARGE_ITEM,
    &MEDICATION_REQUEST,
    &MEDICATION_DISPENSE,
    &DETECTED_ISSUE,
    &ALLERGY_INTOLERANCE,
    &DIAGNOSTIC_REPORT,
];

const AUDIT_EVENT_ACTION: Kind = Code("audit-event-action", "C | R | U | D | E");
const AUDIT_EVENT_OUTCOME: Kind = Code("audit-event-outcome", "0 | 4 | 8 | 12");

static AUDIT_EVENT: Def = resource(
    "AuditEvent",
    &[
        req("type", Complex(&CODING)),
        list("subtype", Complex(&CODING)),
        opt("action", AUDIT_EVENT_ACTION),
        opt("period", Complex(&PERIOD)),
        req("recorded", INSTANT),
        opt("outcome", AUDIT_EVENT_OUTCOME),
        opt("outcomeDesc", STRING),
        list("purposeOfEvent", Complex(&CODEABLE_CONCEPT)),
        elem(
            "agent",
            1,
            true,
            Types::One(backbone![
                opt("type", Complex(&CODEABLE_CONCEPT)),
                list("role", Complex(&CODEABLE_CONCEPT)),
                opt("who", Complex(&REFERENCE)),
                opt("altId", STRING),
                opt("name", STRING),
                req("requestor", BOOLEAN),
                opt("location", Complex(&REFERENCE)),
                list("policy", URI),
                opt("media", Complex(&CODING)),
                opt(
                    "network",
                    backbone![opt("address", STRING), opt("type", CODE)]
                ),
                list("purposeOfUse", Complex(&CODEABLE_CONCEPT)),
            ]),
        ),
        req(
            "source",
            backbone![
                opt("site", STRING),
                req("observer", Complex(&REFERENCE)),
                list("type", Complex(&CODING)),
            ],
        ),
        list(
            "entity",
            backbone![
                opt("what", Complex(&REFERENCE)),
                opt("type", Complex(&CODING)),
                opt("role", Complex(&CODING)),
                opt("lifecycle", Complex(&CODING)),
                list("securityLabel", Complex(&CODING)),
                opt("name", STRING),
                opt("description", STRING),
                list(
                    "detail",
                    backbone![
                        req("type", STRING),
                        choice("value", 1, &[STRING, BASE64_BINARY]),
                    ],
                ),
            ],
        ),
    ],
);

static PATIENT: Def = resource(
    "Patient",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        opt("active", BOOLEAN),
        list("name", Complex(&HUMAN_NAME)),
        list("telecom", Complex(&CONTACT_POINT)),
        opt("gender", GENDER),
        opt("birthDate", DATE),
        choice("deceased", 0, &[BOOLEAN, DATE_TIME]),
        list("address", Complex(&ADDRESS)),
        opt("maritalStatus", Complex(&CODEABLE_CONCEPT)),
        choice("multipleBirth", 0, &[BOOLEAN, INTEGER]),
        list("photo", Complex(&ATTACHMENT)),
        list(
            "contact",
            backbone![
                list("relationship", Complex(&CODEABLE_CONCEPT)),
                opt("name", Complex(&HUMAN_NAME)),
                list("telecom", Complex(&CONTACT_POINT)),
                opt("address", Complex(&ADDRESS)),
                opt("gender", GENDER),
                opt("organization", Complex(&REFERENCE)),
                opt("period", Complex(&PERIOD)),
            ],
        ),
        list(
            "communication",
            backbone![
                req("language", Complex(&CODEABLE_CONCEPT)),
                opt("preferred", BOOLEAN)
            ],
        ),
        list("generalPractitioner", Complex(&REFERENCE)),
        opt("managingOrganization", Complex(&REFERENCE)),
        list(
            "link",
            backbone![req("other", Complex(&REFERENCE)), req("type", LINK_TYPE)],
        ),
    ],
);

static ENCOUNTER: Def = resource(
    "Encounter",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        req("status", ENCOUNTER_STATUS),
        list(
            "statusHistory",
            backbone![
                req("status", ENCOUNTER_STATUS),
                req("period", Complex(&PERIOD))
            ],
        ),
        // Bound (extensible) to v3 ActEncounterCode: the type only.
        req("class", Complex(&CODING)),
        list(
            "classHistory",
            backbone![
                req("class", Complex(&CODING)),
                req("period", Complex(&PERIOD))
            ],
        ),
        list("type", Complex(&CODEABLE_CONCEPT)),
        opt("serviceType", Complex(&CODEABLE_CONCEPT)),
        opt("priority", Complex(&CODEABLE_CONCEPT)),
        opt("subject", Complex(&REFERENCE)),
        list("episodeOfCare", Complex(&REFERENCE)),
        list("basedOn", Complex(&REFERENCE)),
        list(
            "participant",
            backbone![
                list("type", Complex(&CODEABLE_CONCEPT)),
                opt("period", Complex(&PERIOD)),
                opt("individual", Complex(&REFERENCE)),
            ],
        ),
        list("appointment", Complex(&REFERENCE)),
        opt("period", Complex(&PERIOD)),
        opt("length", Complex(&DURATION)),
        list("reasonCode", Complex(&CODEABLE_CONCEPT)),
        list("reasonReference", Complex(&REFERENCE)),
        list(
            "diagnosis",
            backbone![
                req("condition", Complex(&REFERENCE)),
                opt("use", Complex(&CODEABLE_CONCEPT)),
                opt("rank", POSITIVE_INT),
            ],
        ),
        list("account", Complex(&REFERENCE)),
        opt(
            "hospitalization",
            backbone![
                opt("preAdmissionIdentifier", Complex(&IDENTIFIER)),
                opt("origin", Complex(&REFERENCE)),
                opt("admitSource", Complex(&CODEABLE_CONCEPT)),
                opt("reAdmission", Complex(&CODEABLE_CONCEPT)),
                list("dietPreference", Complex(&CODEABLE_CONCEPT)),
                list("specialCourtesy", Complex(&CODEABLE_CONCEPT)),
                list("specialArrangement", Complex(&CODEABLE_CONCEPT)),
                opt("destination", Complex(&REFERENCE)),
                opt("dischargeDisposition", Complex(&CODEABLE_CONCEPT)),
            ],
        ),
        list(
            "location",
            backbone![
                req("location", Complex(&REFERENCE)),
                opt("status", ENCOUNTER_LOCATION_STATUS),
                opt("physicalType", Complex(&CODEABLE_CONCEPT)),
                opt("period", Complex(&PERIOD)),
            ],
        ),
        opt("serviceProvider", Complex(&REFERENCE)),
        opt("partOf", Complex(&REFERENCE)),
    ],
);

static APPOINTMENT: Def = resource(
    "Appointment",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        req("status", APPOINTMENT_STATUS),
        opt("cancelationReason", Complex(&CODEABLE_CONCEPT)),
        list("serviceCategory", Complex(&CODEABLE_CONCEPT)),
        list("serviceType", Complex(&CODEABLE_CONCEPT)),
        list("specialty", Complex(&CODEABLE_CONCEPT)),
        opt("appointmentType", Complex(&CODEABLE_CONCEPT)),
        list("reasonCode", Complex(&CODEABLE_CONCEPT)),
        list("reasonReference", Complex(&REFERENCE)),
        opt("priority", UNSIGNED_INT),
        opt("description", STRING),
        list("supportingInformation", Complex(&REFERENCE)),
        opt("start", INSTANT),
        opt("end", INSTANT),
        opt("minutesDuration", POSITIVE_INT),
        list("slot", Complex(&REFERENCE)),
        opt("created", DATE_TIME),
        opt("comment", STRING),
        opt("patientInstruction", STRING),
        list("basedOn", Complex(&REFERENCE)),
        elem(
            "participant",
            1,
            true,
            Types::One(backbone![
                list("type", Complex(&CODEABLE_CONCEPT)),
                opt("actor", Complex(&REFERENCE)),
                opt("required", PARTICIPANT_REQUIRED),
                req("status", PARTICIPATION_STATUS),
                opt("period", Complex(&PERIOD)),
            ]),
        ),
        list("requestedPeriod", Complex(&PERIOD)),
    ],
);

static FLAG: Def = resource(
    "Flag",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        req("status", FLAG_STATUS),
        list("category", Complex(&CODEABLE_CONCEPT)),
        req("code", Complex(&CODEABLE_CONCEPT)),
        req("subject", Complex(&REFERENCE)),
        opt("period", Complex(&PERIOD)),
        opt("encounter", Complex(&REFERENCE)),
        opt("author", Complex(&REFERENCE)),
    ],
);

/// The value types R4 allows an Observation's `value[x]`. A titer (Ratio), a range or sampled
/// data is a result like any other: it is kept, and only a Quantity is held against the
/// configured critical limits (the flags and interpretation still count for every type).
const OBSERVATION_VALUES: &[Kind] = &[
    Complex(&QUANTITY),
    Complex(&CODEABLE_CONCEPT),
    STRING,
    BOOLEAN,
    INTEGER,
    Opaque("Range"),
    Opaque("Ratio"),
    Opaque("SampledData"),
    TIME,
    DATE_TIME,
    Complex(&PERIOD),
];

static OBSERVATION: Def = resource(
    "Observation",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        list("basedOn", Complex(&REFERENCE)),
        list("partOf", Complex(&REFERENCE)),
        req("status", OBSERVATION_STATUS),
        list("category", Complex(&CODEABLE_CONCEPT)),
        req("code", Complex(&CODEABLE_CONCEPT)),
        opt("subject", Complex(&REFERENCE)),
        list("focus", Complex(&REFERENCE)),
        opt("encounter", Complex(&REFERENCE)),
        choice("effective", 0, &[DATE_TIME, Complex(&PERIOD), INSTANT]),
        opt("issued", INSTANT),
        list("performer", Complex(&REFERENCE)),
        choice("value", 0, OBSERVATION_VALUES),
        opt("dataAbsentReason", Complex(&CODEABLE_CONCEPT)),
        list("interpretation", Complex(&CODEABLE_CONCEPT)),
        list("note", Complex(&ANNOTATION)),
        opt("bodySite", Complex(&CODEABLE_CONCEPT)),
        opt("method", Complex(&CODEABLE_CONCEPT)),
        opt("specimen", Complex(&REFERENCE)),
        opt("device", Complex(&REFERENCE)),
        elem(
            "referenceRange",
            0,
            true,
            Types::One(backbone![
                opt("low", Complex(&QUANTITY)),
                opt("high", Complex(&QUANTITY)),
                opt("type", Complex(&CODEABLE_CONCEPT)),
                list("appliesTo", Complex(&CODEABLE_CONCEPT)),
                opt("text", STRING),
            ]),
        ),
        list("hasMember", Complex(&REFERENCE)),
        list("derivedFrom", Complex(&REFERENCE)),
        elem(
            "component",
            0,
            true,
            Types::One(backbone![
                req("code", Complex(&CODEABLE_CONCEPT)),
                choice("value", 0, OBSERVATION_VALUES),
                opt("dataAbsentReason", Complex(&CODEABLE_CONCEPT)),
                list("interpretation", Complex(&CODEABLE_CONCEPT)),
            ]),
        ),
    ],
);

const DIAGNOSTIC_REPORT_STATUS: Kind = Code(
    "diagnostic-report-status",
    "registered | partial | preliminary | final | amended | corrected | appended | cancelled \
     | entered-in-error | unknown",
);

static DIAGNOSTIC_REPORT: Def = resource(
    "DiagnosticReport",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        list("basedOn", Complex(&REFERENCE)),
        req("status", DIAGNOSTIC_REPORT_STATUS),
        list("category", Complex(&CODEABLE_CONCEPT)),
        req("code", Complex(&CODEABLE_CONCEPT)),
        opt("subject", Complex(&REFERENCE)),
        opt("encounter", Complex(&REFERENCE)),
        choice("effective", 0, &[DATE_TIME, Complex(&PERIOD)]),
        opt("issued", INSTANT),
        list("performer", Complex(&REFERENCE)),
        list("resultsInterpreter", Complex(&REFERENCE)),
        list("specimen", Complex(&REFERENCE)),
        list("result", Complex(&REFERENCE)),
        list("imagingStudy", Complex(&REFERENCE)),
        list(
            "media",
            backbone![opt("comment", STRING), req("link", Complex(&REFERENCE))],
        ),
        opt("conclusion", STRING),
        list("conclusionCode", Complex(&CODEABLE_CONCEPT)),
        list("presentedForm", Complex(&ATTACHMENT)),
    ],
);

static SPECIMEN: Def = resource(
    "Specimen",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        opt("accessionIdentifier", Complex(&IDENTIFIER)),
        opt("status", SPECIMEN_STATUS),
        opt("type", Complex(&CODEABLE_CONCEPT)),
        opt("subject", Complex(&REFERENCE)),
        opt("receivedTime", DATE_TIME),
        list("parent", Complex(&REFERENCE)),
        list("request", Complex(&REFERENCE)),
        elem(
            "collection",
            0,
            false,
            Types::One(backbone![
                opt("collector", Complex(&REFERENCE)),
                choice("collected", 0, &[DATE_TIME, Complex(&PERIOD)]),
                opt("duration", Complex(&DURATION)),
                opt("quantity", Complex(&QUANTITY)),
                opt("method", Complex(&CODEABLE_CONCEPT)),
                opt("bodySite", Complex(&CODEABLE_CONCEPT)),
                choice(
                    "fastingStatus",
                    0,
                    &[Complex(&CODEABLE_CONCEPT), Complex(&DURATION)]
                ),
            ]),
        ),
        elem(
            "processing",
            0,
            true,
            Types::One(backbone![
                opt("description", STRING),
                opt("procedure", Complex(&CODEABLE_CONCEPT)),
                list("additive", Complex(&REFERENCE)),
                choice("time", 0, &[DATE_TIME, Complex(&PERIOD)]),
            ]),
        ),
        elem(
            "container",
            0,
            true,
            Types::One(backbone![
                list("identifier", Complex(&IDENTIFIER)),
                opt("description", STRING),
                opt("type", Complex(&CODEABLE_CONCEPT)),
                opt("capacity", Complex(&QUANTITY)),
                opt("specimenQuantity", Complex(&QUANTITY)),
                choice(
                    "additive",
                    0,
                    &[Complex(&CODEABLE_CONCEPT), Complex(&REFERENCE)]
                ),
            ]),
        ),
        list("condition", Complex(&CODEABLE_CONCEPT)),
        list("note", Complex(&ANNOTATION)),
    ],
);

static SERVICE_REQUEST: Def = resource(
    "ServiceRequest",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        list("instantiatesCanonical", CANONICAL),
        list("instantiatesUri", URI),
        list("basedOn", Complex(&REFERENCE)),
        list("replaces", Complex(&REFERENCE)),
        opt("requisition", Complex(&IDENTIFIER)),
        req("status", REQUEST_STATUS),
        req("intent", REQUEST_INTENT),
        list("category", Complex(&CODEABLE_CONCEPT)),
        opt("priority", REQUEST_PRIORITY),
        opt("doNotPerform", BOOLEAN),
        opt("code", Complex(&CODEABLE_CONCEPT)),
        list("orderDetail", Complex(&CODEABLE_CONCEPT)),
        choice(
            "quantity",
            0,
            &[Complex(&QUANTITY), Opaque("Ratio"), Opaque("Range")],
        ),
        req("subject", Complex(&REFERENCE)),
        opt("encounter", Complex(&REFERENCE)),
        choice(
            "occurrence",
            0,
            &[DATE_TIME, Complex(&PERIOD), Opaque("Timing")],
        ),
        choice("asNeeded", 0, &[BOOLEAN, Complex(&CODEABLE_CONCEPT)]),
        opt("authoredOn", DATE_TIME),
        opt("requester", Complex(&REFERENCE)),
        opt("performerType", Complex(&CODEABLE_CONCEPT)),
        list("performer", Complex(&REFERENCE)),
        list("locationCode", Complex(&CODEABLE_CONCEPT)),
        list("locationReference", Complex(&REFERENCE)),
        list("reasonCode", Complex(&CODEABLE_CONCEPT)),
        list("reasonReference", Complex(&REFERENCE)),
        list("insurance", Complex(&REFERENCE)),
        list("supportingInfo", Complex(&REFERENCE)),
        list("specimen", Complex(&REFERENCE)),
        list("bodySite", Complex(&CODEABLE_CONCEPT)),
        list("note", Complex(&ANNOTATION)),
        opt("patientInstruction", STRING),
        list("relevantHistory", Complex(&REFERENCE)),
    ],
);

const FM_STATUS: Kind = Code("fm-status", "active | cancelled | draft | entered-in-error");

static PAYMENT_NOTICE: Def = resource(
    "PaymentNotice",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        req("status", FM_STATUS),
        opt("request", Complex(&REFERENCE)),
        opt("response", Complex(&REFERENCE)),
        req("created", DATE_TIME),
        opt("provider", Complex(&REFERENCE)),
        req("payment", Complex(&REFERENCE)),
        opt("paymentDate", DATE),
        opt("payee", Complex(&REFERENCE)),
        req("recipient", Complex(&REFERENCE)),
        req("amount", Complex(&MONEY)),
        opt("paymentStatus", Complex(&CODEABLE_CONCEPT)),
    ],
);

// Its currency is bound (required) to ISO 4217, too long a list to inline: the format only.
static MONEY: Def = datatype("Money", &[opt("value", DECIMAL), opt("currency", CODE)]);

const ELIGIBILITY_PURPOSE: Kind = Code(
    "eligibilityrequest-purpose",
    "auth-requirements | benefits | discovery | validation",
);
const REMITTANCE_OUTCOME: Kind = Code("remittance-outcome", "queued | complete | error | partial");

static COVERAGE_ELIGIBILITY_REQUEST: Def = resource(
    "CoverageEligibilityRequest",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        req("status", FM_STATUS),
        opt("priority", Complex(&CODEABLE_CONCEPT)),
        elem("purpose", 1, true, Types::One(ELIGIBILITY_PURPOSE)),
        req("patient", Complex(&REFERENCE)),
        choice("serviced", 0, &[DATE, Complex(&PERIOD)]),
        req("created", DATE_TIME),
        opt("enterer", Complex(&REFERENCE)),
        opt("provider", Complex(&REFERENCE)),
        req("insurer", Complex(&REFERENCE)),
        opt("facility", Complex(&REFERENCE)),
        list(
            "supportingInfo",
            backbone![
                req("sequence", POSITIVE_INT),
                req("information", Complex(&REFERENCE)),
                opt("appliesToAll", BOOLEAN),
            ],
        ),
        list(
            "insurance",
            backbone![
                opt("focal", BOOLEAN),
                req("coverage", Complex(&REFERENCE)),
                opt("businessArrangement", STRING),
            ],
        ),
        list(
            "item",
            backbone![
                list("supportingInfoSequence", POSITIVE_INT),
                opt("category", Complex(&CODEABLE_CONCEPT)),
                opt("productOrService", Complex(&CODEABLE_CONCEPT)),
                list("modifier", Complex(&CODEABLE_CONCEPT)),
                opt("provider", Complex(&REFERENCE)),
                opt("quantity", Complex(&QUANTITY)),
                opt("unitPrice", Complex(&MONEY)),
                opt("facility", Complex(&REFERENCE)),
                list(
                    "diagnosis",
                    backbone![choice(
                        "diagnosis",
                        0,
                        &[Complex(&CODEABLE_CONCEPT), Complex(&REFERENCE)]
                    )],
                ),
                list("detail", Complex(&REFERENCE)),
            ],
        ),
    ],
);

static COVERAGE_ELIGIBILITY_RESPONSE: Def = resource(
    "CoverageEligibilityResponse",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        req("status", FM_STATUS),
        elem("purpose", 1, true, Types::One(ELIGIBILITY_PURPOSE)),
        req("patient", Complex(&REFERENCE)),
        choice("serviced", 0, &[DATE, Complex(&PERIOD)]),
        req("created", DATE_TIME),
        opt("requestor", Complex(&REFERENCE)),
        req("request", Complex(&REFERENCE)),
        req("outcome", REMITTANCE_OUTCOME),
        opt("disposition", STRING),
        req("insurer", Complex(&REFERENCE)),
        list(
            "insurance",
            backbone![
                req("coverage", Complex(&REFERENCE)),
                opt("inforce", BOOLEAN),
                opt("benefitPeriod", Complex(&PERIOD)),
                list(
                    "item",
                    backbone![
                        opt("category", Complex(&CODEABLE_CONCEPT)),
                        opt("productOrService", Complex(&CODEABLE_CONCEPT)),
                        list("modifier", Complex(&CODEABLE_CONCEPT)),
                        opt("provider", Complex(&REFERENCE)),
                        opt("excluded", BOOLEAN),
                        opt("name", STRING),
                        opt("description", STRING),
                        opt("network", Complex(&CODEABLE_CONCEPT)),
                        opt("unit", Complex(&CODEABLE_CONCEPT)),
                        opt("term", Complex(&CODEABLE_CONCEPT)),
                        list(
                            "benefit",
                            backbone![
                                req("type", Complex(&CODEABLE_CONCEPT)),
                                choice("allowed", 0, &[UNSIGNED_INT, STRING, Complex(&MONEY)]),
                                choice("used", 0, &[UNSIGNED_INT, STRING, Complex(&MONEY)]),
                            ],
                        ),
                        opt("authorizationRequired", BOOLEAN),
                        list("authorizationSupporting", Complex(&CODEABLE_CONCEPT)),
                        opt("authorizationUrl", URI),
                    ],
                ),
            ],
        ),
        opt("preAuthRef", STRING),
        opt("form", Complex(&CODEABLE_CONCEPT)),
        list("error", backbone![req("code", Complex(&CODEABLE_CONCEPT))]),
    ],
);

const CHARGE_ITEM_STATUS: Kind = Code(
    "chargeitem-status",
    "planned | billable | not-billable | aborted | billed | entered-in-error | unknown",
);

static CHARGE_ITEM: Def = resource(
    "ChargeItem",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        list("definitionUri", URI),
        list("definitionCanonical", CANONICAL),
        req("status", CHARGE_ITEM_STATUS),
        list("partOf", Complex(&REFERENCE)),
        req("code", Complex(&CODEABLE_CONCEPT)),
        req("subject", Complex(&REFERENCE)),
        opt("context", Complex(&REFERENCE)),
        choice(
            "occurrence",
            0,
            &[DATE_TIME, Complex(&PERIOD), Opaque("Timing")],
        ),
        list("performer", Opaque("ChargeItem.performer")),
        opt("performingOrganization", Complex(&REFERENCE)),
        opt("requestingOrganization", Complex(&REFERENCE)),
        opt("costCenter", Complex(&REFERENCE)),
        opt("quantity", Complex(&QUANTITY)),
        list("bodysite", Complex(&CODEABLE_CONCEPT)),
        opt("factorOverride", DECIMAL),
        opt("priceOverride", Complex(&MONEY)),
        opt("overrideReason", STRING),
        opt("enterer", Complex(&REFERENCE)),
        opt("enteredDate", DATE_TIME),
        list("reason", Complex(&CODEABLE_CONCEPT)),
        list("service", Complex(&REFERENCE)),
        choice(
            "product",
            0,
            &[Complex(&REFERENCE), Complex(&CODEABLE_CONCEPT)],
        ),
        list("account", Complex(&REFERENCE)),
        list("note", Complex(&ANNOTATION)),
        list("supportingInformation", Complex(&REFERENCE)),
    ],
);

// The pharmacy's resources. Their dosage (Dosage) and the dispense request's details are open:
// the gateway reads only ids, statuses, subjects and codes from them.
const MEDICATION_REQUEST_STATUS: Kind = Code(
    "medicationrequest-status",
    "active | on-hold | cancelled | completed | entered-in-error | stopped | draft | unknown",
);
const MEDICATION_REQUEST_INTENT: Kind = Code(
    "medicationrequest-intent",
    "proposal | plan | order | original-order | reflex-order | filler-order | instance-order \
     | option",
);
const MEDICATION_DISPENSE_STATUS: Kind = Code(
    "medicationdispense-status",
    "preparation | in-progress | cancelled | on-hold | completed | entered-in-error | stopped \
     | declined | unknown",
);
const DETECTED_ISSUE_SEVERITY: Kind = Code("detectedissue-severity", "high | moderate | low");
const ALLERGY_TYPE: Kind = Code("allergy-intolerance-type", "allergy | intolerance");
const ALLERGY_CATEGORY: Kind = Code(
    "allergy-intolerance-category",
    "food | medication | environment | biologic",
);
const ALLERGY_CRITICALITY: Kind = Code(
    "allergy-intolerance-criticality",
    "low | high | unable-to-assess",
);
const REACTION_SEVERITY: Kind = Code("reaction-event-severity", "mild | moderate | severe");
const MEDICATION: &[Kind] = &[Complex(&CODEABLE_CONCEPT), Complex(&REFERENCE)];

static MEDICATION_REQUEST: Def = resource(
    "MedicationRequest",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        req("status", MEDICATION_REQUEST_STATUS),
        opt("statusReason", Complex(&CODEABLE_CONCEPT)),
        req("intent", MEDICATION_REQUEST_INTENT),
        list("category", Complex(&CODEABLE_CONCEPT)),
        opt("priority", REQUEST_PRIORITY),
        opt("doNotPerform", BOOLEAN),
        choice("reported", 0, &[BOOLEAN, Complex(&REFERENCE)]),
        choice("medication", 1, MEDICATION),
        req("subject", Complex(&REFERENCE)),
        opt("encounter", Complex(&REFERENCE)),
        list("supportingInformation", Complex(&REFERENCE)),
        opt("authoredOn", DATE_TIME),
        opt("requester", Complex(&REFERENCE)),
        opt("performer", Complex(&REFERENCE)),
        opt("performerType", Complex(&CODEABLE_CONCEPT)),
        opt("recorder", Complex(&REFERENCE)),
        list("reasonCode", Complex(&CODEABLE_CONCEPT)),
        list("reasonReference", Complex(&REFERENCE)),
        list("instantiatesCanonical", CANONICAL),
        list("instantiatesUri", URI),
        list("basedOn", Complex(&REFERENCE)),
        opt("groupIdentifier", Complex(&IDENTIFIER)),
        opt("courseOfTherapyType", Complex(&CODEABLE_CONCEPT)),
        list("insurance", Complex(&REFERENCE)),
        list("note", Complex(&ANNOTATION)),
        list("dosageInstruction", Opaque("Dosage")),
        opt("dispenseRequest", Opaque("BackboneElement")),
        opt(
            "substitution",
            backbone![
                choice("allowed", 1, &[BOOLEAN, Complex(&CODEABLE_CONCEPT)]),
                opt("reason", Complex(&CODEABLE_CONCEPT)),
            ],
        ),
        opt("priorPrescription", Complex(&REFERENCE)),
        list("detectedIssue", Complex(&REFERENCE)),
        list("eventHistory", Complex(&REFERENCE)),
    ],
);

static MEDICATION_DISPENSE: Def = resource(
    "MedicationDispense",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        list("partOf", Complex(&REFERENCE)),
        req("status", MEDICATION_DISPENSE_STATUS),
        choice(
            "statusReason",
            0,
            &[Complex(&CODEABLE_CONCEPT), Complex(&REFERENCE)],
        ),
        opt("category", Complex(&CODEABLE_CONCEPT)),
        choice("medication", 1, MEDICATION),
        opt("subject", Complex(&REFERENCE)),
        opt("context", Complex(&REFERENCE)),
        list("supportingInformation", Complex(&REFERENCE)),
        list(
            "performer",
            backbone![
                opt("function", Complex(&CODEABLE_CONCEPT)),
                req("actor", Complex(&REFERENCE)),
            ],
        ),
        opt("location", Complex(&REFERENCE)),
        list("authorizingPrescription", Complex(&REFERENCE)),
        opt("type", Complex(&CODEABLE_CONCEPT)),
        opt("quantity", Complex(&QUANTITY)),
        opt("daysSupply", Complex(&QUANTITY)),
        opt("whenPrepared", DATE_TIME),
        opt("whenHandedOver", DATE_TIME),
        opt("destination", Complex(&REFERENCE)),
        list("receiver", Complex(&REFERENCE)),
        list("note", Complex(&ANNOTATION)),
        list("dosageInstruction", Opaque("Dosage")),
        opt(
            "substitution",
            backbone![
                req("wasSubstituted", BOOLEAN),
                opt("type", Complex(&CODEABLE_CONCEPT)),
                list("reason", Complex(&CODEABLE_CONCEPT)),
                list("responsibleParty", Complex(&REFERENCE)),
            ],
        ),
        list("detectedIssue", Complex(&REFERENCE)),
        list("eventHistory", Complex(&REFERENCE)),
    ],
);

static DETECTED_ISSUE: Def = resource(
    "DetectedIssue",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        req("status", OBSERVATION_STATUS),
        opt("code", Complex(&CODEABLE_CONCEPT)),
        opt("severity", DETECTED_ISSUE_SEVERITY),
        opt("patient", Complex(&REFERENCE)),
        choice("identified", 0, &[DATE_TIME, Complex(&PERIOD)]),
        opt("author", Complex(&REFERENCE)),
        list("implicated", Complex(&REFERENCE)),
        list(
            "evidence",
            backbone![
                list("code", Complex(&CODEABLE_CONCEPT)),
                list("detail", Complex(&REFERENCE)),
            ],
        ),
        opt("detail", STRING),
        opt("reference", URI),
        list(
            "mitigation",
            backbone![
                req("action", Complex(&CODEABLE_CONCEPT)),
                opt("date", DATE_TIME),
                opt("author", Complex(&REFERENCE)),
            ],
        ),
    ],
);

static ALLERGY_INTOLERANCE: Def = resource(
    "AllergyIntolerance",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        opt("clinicalStatus", Complex(&CODEABLE_CONCEPT)),
        opt("verificationStatus", Complex(&CODEABLE_CONCEPT)),
        opt("type", ALLERGY_TYPE),
        list("category", ALLERGY_CATEGORY),
        opt("criticality", ALLERGY_CRITICALITY),
        opt("code", Complex(&CODEABLE_CONCEPT)),
        req("patient", Complex(&REFERENCE)),
        opt("encounter", Complex(&REFERENCE)),
        choice(
            "onset",
            0,
            &[
                DATE_TIME,
                Complex(&AGE),
                Complex(&PERIOD),
                Opaque("Range"),
                STRING,
            ],
        ),
        opt("recordedDate", DATE_TIME),
        opt("recorder", Complex(&REFERENCE)),
        opt("asserter", Complex(&REFERENCE)),
        opt("lastOccurrence", DATE_TIME),
        list("note", Complex(&ANNOTATION)),
        list(
            "reaction",
            backbone![
                opt("substance", Complex(&CODEABLE_CONCEPT)),
                elem(
                    "manifestation",
                    1,
                    true,
                    Types::One(Complex(&CODEABLE_CONCEPT))
                ),
                opt("description", STRING),
                opt("onset", DATE_TIME),
                opt("severity", REACTION_SEVERITY),
                opt("exposureRoute", Complex(&CODEABLE_CONCEPT)),
                list("note", Complex(&ANNOTATION)),
            ],
        ),
    ],
);

static TASK: Def = resource(
    "Task",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        opt("instantiatesCanonical", CANONICAL),
        opt("instantiatesUri", URI),
        list("basedOn", Complex(&REFERENCE)),
        opt("groupIdentifier", Complex(&IDENTIFIER)),
        list("partOf", Complex(&REFERENCE)),
        req("status", TASK_STATUS),
        opt("statusReason", Complex(&CODEABLE_CONCEPT)),
        opt("businessStatus", Complex(&CODEABLE_CONCEPT)),
        req("intent", TASK_INTENT),
        opt("priority", REQUEST_PRIORITY),
        opt("code", Complex(&CODEABLE_CONCEPT)),
        opt("description", STRING),
        opt("focus", Complex(&REFERENCE)),
        opt("for", Complex(&REFERENCE)),
        opt("encounter", Complex(&REFERENCE)),
        opt("executionPeriod", Complex(&PERIOD)),
        opt("authoredOn", DATE_TIME),
        opt("lastModified", DATE_TIME),
        opt("requester", Complex(&REFERENCE)),
        list("performerType", Complex(&CODEABLE_CONCEPT)),
        opt("owner", Complex(&REFERENCE)),
        opt("location", Complex(&REFERENCE)),
        opt("reasonCode", Complex(&CODEABLE_CONCEPT)),
        opt("reasonReference", Complex(&REFERENCE)),
        list("insurance", Complex(&REFERENCE)),
        list("note", Complex(&ANNOTATION)),
        list("relevantHistory", Complex(&REFERENCE)),
        opt(
            "restriction",
            backbone![
                opt("repetitions", POSITIVE_INT),
                opt("period", Complex(&PERIOD)),
                list("recipient", Complex(&REFERENCE)),
            ],
        ),
        list(
            "input",
            backbone![
                req("type", Complex(&CODEABLE_CONCEPT)),
                choice("value", 1, &OPEN_TYPES)
            ],
        ),
        list(
            "output",
            backbone![
                req("type", Complex(&CODEABLE_CONCEPT)),
                choice("value", 1, &OPEN_TYPES)
            ],
        ),
    ],
);

static COMMUNICATION: Def = resource(
    "Communication",
    &[
        list("identifier", Complex(&IDENTIFIER)),
        list("instantiatesCanonical", CANONICAL),
        list("instantiatesUri", URI),
        list("basedOn", Complex(&REFERENCE)),
        list("partOf", Complex(&REFERENCE)),
        list("inResponseTo", Complex(&REFERENCE)),
        req("status", EVENT_STATUS),
        opt("statusReason", Complex(&CODEABLE_CONCEPT)),
        list("category", Complex(&CODEABLE_CONCEPT)),
        opt("priority", REQUEST_PRIORITY),
        list("medium", Complex(&CODEABLE_CONCEPT)),
        opt("subject", Complex(&REFERENCE)),
        opt("topic", Complex(&CODEABLE_CONCEPT)),
        list("about", Complex(&REFERENCE)),
        opt("encounter", Complex(&REFERENCE)),
        opt("sent", DATE_TIME),
        opt("received", DATE_TIME),
        list("recipient", Complex(&REFERENCE)),
        opt("sender", Complex(&REFERENCE)),
        list("reasonCode", Complex(&CODEABLE_CONCEPT)),
        list("reasonReference", Complex(&REFERENCE)),
        list(
            "payload",
            backbone![choice(
                "content",
                1,
                &[STRING, Complex(&ATTACHMENT), Complex(&REFERENCE)]
            )],
        ),
        list("note", Complex(&ANNOTATION)),
    ],
);

impl Kind {
    /// Whether a choice's suffix (`DateTime` in `valueDateTime`) names this type (`dateTime`).
    fn is_named(self, suffix: &str) -> bool {
        let names = |name: &str| {
            let (mut s, mut n) = (suffix.chars(), name.chars());
            s.next() == n.next().map(|c| c.to_ascii_uppercase()) && s.as_str() == n.as_str()
        };
        match self {
            Kind::Prim(p) => names(p.name),
            Code(..) => names("code"),
            Complex(def) => names(def.name),
            Resource => names("Resource"),
            Opaque(types) => types.split(" | ").any(names),
        }
    }

    /// Primitives may carry an id and extensions in a `_name` sibling.
    fn is_primitive(self) -> bool {
        matches!(self, Kind::Prim(_) | Code(..))
    }
}

impl Def {
    /// The element a JSON key names and the type it gives: `None` for a choice element named
    /// with a type it does not allow (`valueFoo`).
    fn find(&'static self, key: &str) -> Option<(&'static Elem, Option<Kind>)> {
        let elems = || self.base.iter().chain(self.elems);
        let exact = elems().find_map(|e| match e.types {
            Types::One(kind) if e.name == key => Some((e, Some(kind))),
            _ => None,
        });
        exact.or_else(|| {
            elems().find_map(|e| {
                let Types::Choice(kinds) = e.types else {
                    return None;
                };
                let suffix = key
                    .strip_prefix(e.name)
                    .filter(|s| s.starts_with(|c: char| c.is_ascii_uppercase()))?;
                Some((e, kinds.iter().copied().find(|k| k.is_named(suffix))))
            })
        })
    }
}

/// The problems found so far.
#[derive(Default)]
struct Check {
    issues: Vec<String>,
}

impl Check {
    fn issue(&mut self, path: &str, what: impl std::fmt::Display) {
        self.issues.push(format!("{path}: {what}"));
    }

    /// Checks an object against a definition: every key, then required and choice elements.
    fn object(&mut self, path: &str, v: &Value, def: &'static Def) {
        let Some(map) = v.as_object() else {
            return self.issue(
                path,
                expected(&format!("{} {} object", article(def.name), def.name), v),
            );
        };
        if map.is_empty() {
            // ele-1: every element has a value or children.
            return self.issue(
                path,
                "an empty object (an element needs a value or children)",
            );
        }
        // The elements given, each with the JSON name it was given under (without `_`).
        let mut given: Vec<(&Elem, &str)> = Vec::new();
        for (key, value) in map {
            let at = format!("{path}.{key}");
            let (name, primitive_extension) = match key.strip_prefix('_') {
                Some(name) => (name, true),
                None => (key.as_str(), false),
            };
            let Some((e, kind)) = def.find(name) else {
                self.issue(&at, "unknown element");
                continue;
            };
            let Some(kind) = kind else {
                let (element, ty) = name.split_at(e.name.len());
                self.issue(
                    &at,
                    format_args!("{ty} is not a type allowed for {element}[x]"),
                );
                continue;
            };
            if primitive_extension && !kind.is_primitive() {
                self.issue(&at, "unknown element");
                continue;
            }
            if !given.iter().any(|&(g, n)| std::ptr::eq(g, e) && n == name) {
                given.push((e, name));
            }
            match primitive_extension {
                true => self.primitive_extension(&at, value, e.many),
                false => {
                    let extended = map.contains_key(&format!("_{key}"));
                    self.element(&at, value, e, kind, extended);
                }
            }
        }
        for e in def.base.iter().chain(def.elems) {
            let names: Vec<&str> = given
                .iter()
                .filter(|(g, _)| std::ptr::eq(*g, e))
                .map(|(_, name)| *name)
                .collect();
            let at = match e.types {
                Types::One(_) => format!("{path}.{}", e.name),
                Types::Choice(_) => format!("{path}.{}[x]", e.name),
            };
            if names.len() < e.min {
                self.issue(&at, format_args!("required (min {})", e.min));
            }
            if names.len() > 1 {
                let names = names.join(", ");
                self.issue(
                    &at,
                    format_args!("only one type may be given, found {names}"),
                );
            }
        }
    }

    /// Checks an element's cardinality, then each of its values.
    fn element(&mut self, path: &str, v: &Value, e: &Elem, kind: Kind, extended: bool) {
        match (e.many, v) {
            (false, Value::Array(_)) => {
                self.issue(path, "expected a single value (max 1), found an array")
            }
            (false, v) => self.value(path, v, kind),
            (true, Value::Array(items)) if items.is_empty() => {
                self.issue(path, "an empty array (arrays are never empty in FHIR JSON)")
            }
            (true, Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    // A null keeps the place of a value that has only an id or extensions.
                    if !(item.is_null() && extended && kind.is_primitive()) {
                        self.value(&format!("{path}[{i}]"), item, kind);
                    }
                }
            }
            (true, v) => self.issue(path, expected("an array (max *)", v)),
        }
    }

    fn value(&mut self, path: &str, v: &Value, kind: Kind) {
        match kind {
            Kind::Prim(p) => {
                self.primitive(path, v, p);
            }
            Code(set, codes) => {
                if self.primitive(path, v, CODE_PRIM)
                    && let Some(code) = v.as_str()
                    && !codes.split(" | ").any(|c| c == code)
                {
                    self.issue(
                        path,
                        format_args!("{v} is not in the required value set {set}"),
                    );
                }
            }
            Complex(def) => self.object(path, v, def),
            Resource => match v.as_object() {
                Some(m) if m.get("resourceType").is_some_and(Value::is_string) => {}
                _ => self.issue(
                    path,
                    expected("a resource (an object with a resourceType)", v),
                ),
            },
            Opaque(_) => match v.as_object() {
                Some(m) if !m.is_empty() => {}
                _ => self.issue(path, expected("a non-empty object", v)),
            },
        }
    }

    /// Checks a primitive value; true if it conforms.
    fn primitive(&mut self, path: &str, v: &Value, p: &Prim) -> bool {
        let name = p.name;
        let lexical = match (p.form, v) {
            (Form::Boolean, Value::Bool(_)) | (Form::Decimal, Value::Number(_)) => true,
            (Form::Integer(min), Value::Number(n)) => n
                .as_i64()
                .is_some_and(|i| (min..=i32::MAX.into()).contains(&i)),
            (Form::Text(rule), Value::String(s)) => rule(s),
            (Form::Text(_), _) if name == "string" => return self.wrong(path, "a string", v),
            (Form::Text(_), _) => {
                return self.wrong(path, &format!("{} {name} string", article(name)), v);
            }
            (Form::Boolean, _) => return self.wrong(path, "a boolean", v),
            (_, _) => return self.wrong(path, &format!("{} {name} number", article(name)), v),
        };
        if !lexical {
            self.issue(path, format_args!("{v} is not a FHIR {name}"));
        }
        lexical
    }

    fn wrong(&mut self, path: &str, what: &str, v: &Value) -> bool {
        self.issue(path, expected(what, v));
        false
    }

    /// `_name`: the id and extensions of a primitive (an array of them, null where a value has
    /// none, for a repeating one).
    fn primitive_extension(&mut self, path: &str, v: &Value, many: bool) {
        match (many, v) {
            (false, v) => self.object(path, v, &PRIMITIVE_EXTENSION),
            (true, Value::Array(items)) => {
                for (i, item) in items.iter().enumerate().filter(|(_, item)| !item.is_null()) {
                    self.object(&format!("{path}[{i}]"), item, &PRIMITIVE_EXTENSION);
                }
            }
            (true, v) => self.issue(path, expected("an array (max *)", v)),
        }
    }

    /// R4 4.0.1 Appointment invariant app-3, "Only proposed or cancelled appointments can be
    /// missing start/end dates", whose expression also admits waitlist:
    /// `(start.exists() and end.exists()) or (status in ('proposed' | 'cancelled' | 'waitlist'))`.
    fn app_3(&mut self, map: &Map<String, Value>) {
        let exists = |name: &str| map.contains_key(name) || map.contains_key(&format!("_{name}"));
        let status = map.get("status").and_then(Value::as_str);
        let exempt = matches!(status, Some("proposed" | "cancelled" | "waitlist"));
        if !(exists("start") && exists("end") || exempt) {
            self.issue(
                "Appointment",
                "start and end are required unless status is proposed, cancelled or waitlist \
                 (app-3)",
            );
        }
    }
}

fn expected(what: &str, found: &Value) -> String {
    let found = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    format!("expected {what}, found {found}")
}

fn article(name: &str) -> &'static str {
    match name.starts_with(['a', 'e', 'i', 'o', 'A', 'E', 'I', 'O']) || name.starts_with("un") {
        true => "an",
        false => "a",
    }
}

// Lexical rules of the R4 primitives (the regexes of the R4 datatypes page, written out).

/// string, markdown, xhtml: JSON forbids empty values.
fn is_string(s: &str) -> bool {
    !s.is_empty()
}

/// `[^\s]+(\s[^\s]+)*`
fn is_code(s: &str) -> bool {
    s.split(char::is_whitespace).all(|word| !word.is_empty())
}

/// `[A-Za-z0-9\-\.]{1,64}`
fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// uri, url, canonical: `\S*`, and not empty.
fn is_uri(s: &str) -> bool {
    !s.is_empty() && !s.contains(char::is_whitespace)
}

/// `urn:oid:[0-2](\.(0|[1-9][0-9]*))+`
fn is_oid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:oid:") else {
        return false;
    };
    let mut arcs = rest.split('.');
    let first_ok = matches!(arcs.next(), Some("0" | "1" | "2"));
    let mut others = arcs.peekable();
    first_ok
        && others.peek().is_some()
        && others.all(|a| {
            !a.is_empty()
                && a.bytes().all(|b| b.is_ascii_digit())
                && (a == "0" || !a.starts_with('0'))
        })
}

/// `urn:uuid:` and a lower-case 8-4-4-4-12 hex UUID.
fn is_uuid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:uuid:") else {
        return false;
    };
    let groups: Vec<&str> = rest.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| {
            g.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// Base64 (RFC 4648, whitespace allowed); R4's own regex leaves out `/`, a known slip.
fn is_base64(s: &str) -> bool {
    let b: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let body = b
        .strip_suffix(b"==")
        .or_else(|| b.strip_suffix(b"="))
        .unwrap_or(&b);
    !b.is_empty()
        && b.len().is_multiple_of(4)
        && body
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, a real day of a year from 0001.
fn is_date(s: &str) -> bool {
    let mut scan = Scan(s.as_bytes());
    date(&mut scan).is_some() && scan.0.is_empty()
}

/// A date, or a full date and a time with its timezone: `YYYY-MM-DDThh:mm:ss(.s+)?(Z|±hh:mm)`.
fn is_date_time(s: &str) -> bool {
    let mut scan = Scan(s.as_bytes());
    match date(&mut scan) {
        Some(3) if scan.eat(b'T') => {
            time(&mut scan).and_then(|()| zone(&mut scan)).is_some() && scan.0.is_empty()
        }
        Some(_) => scan.0.is_empty(),
        None => false,
    }
}

/// A full date and a time with seconds and timezone.
fn is_instant(s: &str) -> bool {
    let mut scan = Scan(s.as_bytes());
    date(&mut scan) == Some(3)
        && scan.eat(b'T')
        && time(&mut scan).and_then(|()| zone(&mut scan)).is_some()
        && scan.0.is_empty()
}

/// `hh:mm:ss(.s+)?`
fn is_time(s: &str) -> bool {
    let mut scan = Scan(s.as_bytes());
    time(&mut scan).is_some() && scan.0.is_empty()
}

/// What is left of a date or time being read.
struct Scan<'a>(&'a [u8]);

impl Scan<'_> {
    /// The number in the next `n` digits.
    fn num(&mut self, n: usize) -> Option<u32> {
        let (digits, rest) = self.0.split_at_checked(n)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = rest;
        Some(digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    }

    fn eat(&mut self, c: u8) -> bool {
        match self.0.split_first() {
            Some((&first, rest)) if first == c => {
                self.0 = rest;
                true
            }
            _ => false,
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.eat(c).then_some(())
    }
}

/// Reads a date; how many of year, month, day it has.
fn date(scan: &mut Scan) -> Option<u8> {
    let year = scan.num(4).filter(|&y| y > 0)?;
    if !scan.eat(b'-') {
        return Some(1);
    }
    let month = scan.num(2).filter(|m| (1..=12).contains(m))?;
    if !scan.eat(b'-') {
        return Some(2);
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    scan.num(2).filter(|d| (1..=days).contains(d)).map(|_| 3)
}

/// `hh:mm:ss(.s+)?`, a leap second (60) allowed as in R4.
fn time(scan: &mut Scan) -> Option<()> {
    let hour = scan.num(2)?;
    scan.expect(b':')?;
    let minute = scan.num(2)?;
    scan.expect(b':')?;
    let second = scan.num(2)?;
    if scan.eat(b'.') {
        scan.num(1)?;
        while scan.num(1).is_some() {}
    }
    (hour <= 23 && minute <= 59 && second <= 60).then_some(())
}

/// `Z` or `+hh:mm` / `-hh:mm` up to 14:00.
fn zone(scan: &mut Scan) -> Option<()> {
    if scan.eat(b'Z') {
        return Some(());
    }
    (scan.eat(b'+') || scan.eat(b'-')).then_some(())?;
    let hour = scan.num(2)?;
    scan.expect(b':')?;
    let minute = scan.num(2)?;
    (hour <= 13 && minute <= 59 || hour == 14 && minute == 0).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The issues found in a resource; none when it conforms.
    fn check(resource: Value) -> Vec<String> {
        validate(&resource)
            .err()
            .map(|e| e.issues)
            .unwrap_or_default()
    }

    fn patient() -> Value {
        json!({
            "resourceType": "Patient", "id": "p-1",
            "meta": {
                "versionId": "3", "lastUpdated": "2026-03-02T09:15:27.113+01:00",
                "tag": [{ "system": "urn:clinic-gateway:tag", "code": "gateway" }]
            },
            "text": { "status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Jane Doe</div>" },
            "extension": [{
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
                "valueAddress": { "city": "Basel", "country": "CH" }
            }],
            "identifier": [{
                "use": "usual",
                "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR" }] },
                "system": "urn:oid:2.16.756.5.30.1.1", "value": "M-1042"
            }],
            "active": true,
            "name": [{ "use": "official", "family": "Doe", "given": ["Jane", "Q"] }],
            "telecom": [{ "system": "phone", "value": "+41 61 555 01 02", "use": "mobile", "rank": 1 }],
            "gender": "female",
            "birthDate": "1980-02-29",
            "_birthDate": { "extension": [{
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                "valueDateTime": "1980-02-29T06:30:00+01:00"
            }] },
            "deceasedBoolean": false,
            "address": [{
                "use": "home", "type": "both", "line": ["Rheinweg 4"], "city": "Basel",
                "postalCode": "4058", "country": "CH", "period": { "start": "2019-06" }
            }],
            "maritalStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M" }] },
            "multipleBirthBoolean": false,
            "contact": [{
                "relationship": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N" }] }],
                "name": { "family": "Doe", "given": ["John"] },
                "telecom": [{ "system": "phone", "value": "+41 61 555 09 09" }],
                "gender": "male"
            }],
            "communication": [{ "language": { "coding": [{ "system": "urn:ietf:bcp:47", "code": "de-CH" }] }, "preferred": true }],
            "generalPractitioner": [{ "reference": "Practitioner/pr-7", "display": "Dr. A. Meier" }],
            "managingOrganization": { "reference": "Organization/clinic-1" },
            "link": [{ "other": { "reference": "Patient/p-0" }, "type": "replaces" }]
        })
    }

    fn encounter() -> Value {
        json!({
            "resourceType": "Encounter", "id": "e-1", "status": "arrived",
            "statusHistory": [{
                "status": "planned",
                "period": { "start": "2026-03-02T08:00:00+01:00", "end": "2026-03-02T09:02:00+01:00" }
            }],
            "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory" },
            "type": [{ "text": "Follow-up" }],
            "subject": { "reference": "Patient/p-1" },
            "participant": [{
                "type": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PPRF" }] }],
                "individual": { "reference": "Practitioner/pr-7" }
            }],
            "appointment": [{ "reference": "Appointment/a-1" }],
            "period": { "start": "2026-03-02T09:02:00+01:00" },
            "length": { "value": 20, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min" },
            "reasonCode": [{ "text": "Blood pressure check" }],
            "location": [{
                "location": { "reference": "Location/room-3" }, "status": "active",
                "period": { "start": "2026-03-02T09:05:00+01:00" }
            }],
            "serviceProvider": { "reference": "Organization/clinic-1" }
        })
    }

    fn appointment() -> Value {
        json!({
            "resourceType": "Appointment", "id": "a-1", "status": "booked",
            "serviceType": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/service-type", "code": "124" }] }],
            "appointmentType": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0276", "code": "FOLLOWUP" }] },
            "priority": 0, "description": "Blood pressure check",
            "start": "2026-03-02T09:00:00+01:00", "end": "2026-03-02T09:20:00+01:00", "minutesDuration": 20,
            "created": "2026-02-20", "comment": "Bring the measurement diary.",
            "participant": [
                { "actor": { "reference": "Patient/p-1", "display": "Jane Doe" }, "required": "required", "status": "accepted" },
                {
                    "type": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "ATND" }] }],
                    "actor": { "reference": "Practitioner/pr-7" }, "status": "accepted"
                }
            ],
            "requestedPeriod": [{ "start": "2026-03-02", "end": "2026-03-06" }]
        })
    }

    fn flag() -> Value {
        json!({
            "resourceType": "Flag", "id": "f-1", "status": "active",
            "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/flag-category", "code": "safety" }] }],
            "code": { "text": "Needs a wheelchair at check-in" },
            "subject": { "reference": "Patient/p-1" },
            "period": { "start": "2026-01-10" },
            "author": { "reference": "Practitioner/pr-7" }
        })
    }

    fn task() -> Value {
        json!({
            "resourceType": "Task", "id": "t-1", "status": "requested", "intent": "proposal", "priority": "routine",
            "code": { "coding": [{ "system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill" }] },
            "description": "Call the patient to room 3",
            "focus": { "reference": "Appointment/a-1" },
            "for": { "reference": "Patient/p-1" },
            "encounter": { "reference": "Encounter/e-1" },
            "authoredOn": "2026-03-02T09:03:11+01:00",
            "lastModified": "2026-03-02T09:03:11+01:00",
            "requester": { "reference": "Device/gateway-1" },
            "owner": { "reference": "Practitioner/pr-7" },
            "note": [{ "authorString": "front desk", "time": "2026-03-02T09:03:00+01:00", "text": "Uses a wheelchair." }],
            "restriction": { "repetitions": 1, "period": { "end": "2026-03-02T12:00:00+01:00" } },
            "input": [
                { "type": { "text": "room" }, "valueString": "3" },
                { "type": { "text": "ticket" }, "valueIdentifier": { "system": "urn:clinic-gateway:ticket", "value": "A-017" } }
            ],
            "output": [{ "type": { "text": "called at" }, "valueDateTime": "2026-03-02T09:04:00+01:00" }]
        })
    }

    fn communication() -> Value {
        json!({
            "resourceType": "Communication", "id": "c-1", "status": "completed",
            "contained": [{ "resourceType": "Device", "id": "kiosk" }],
            "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/communication-category", "code": "notification" }] }],
            "priority": "routine",
            "medium": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode", "code": "SMSWRIT" }] }],
            "subject": { "reference": "Patient/p-1" },
            "encounter": { "reference": "Encounter/e-1" },
            "sent": "2026-03-02T09:04:05+01:00",
            "recipient": [{ "reference": "Patient/p-1" }],
            "sender": { "reference": "#kiosk" },
            "payload": [
                { "contentString": "Please come to room 3." },
                { "contentReference": { "reference": "Task/t-1" } },
                { "contentAttachment": { "contentType": "text/plain", "data": "UGxlYXNlIGNvbWUu", "size": 12 } }
            ]
        })
    }

    /// A copy of `resource` with `pointer` (a JSON pointer to an object member) set or removed.
    fn with(mut resource: Value, pointer: &str, value: Option<Value>) -> Value {
        let (parent, key) = pointer.rsplit_once('/').expect("a pointer with a member");
        let object = resource
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .expect("an object at the pointer");
        match value {
            Some(v) => object.insert(key.into(), v),
            None => object.remove(key),
        };
        resource
    }

    #[test]
    fn realistic_resources_of_each_type_conform() {
        for resource in [
            patient(),
            encounter(),
            appointment(),
            flag(),
            task(),
            communication(),
        ] {
            assert_eq!(check(resource.clone()), Vec::<String>::new(), "{resource}");
        }
    }

    #[test]
    fn the_pharmacys_resources_and_reports_conform_and_their_codes_are_checked() {
        let subject = json!({ "reference": "Patient/p-1" });
        let request = json!({
            "resourceType": "MedicationRequest", "id": "m-1", "status": "active",
            "intent": "order", "subject": subject,
            "medicationCodeableConcept": { "coding": [{ "system": "rx", "code": "7980" }] },
            "dosageInstruction": [{ "text": "once a day", "timing": { "code": { "text": "QD" } } }],
            "substitution": { "allowedBoolean": true }
        });
        let dispense = json!({
            "resourceType": "MedicationDispense", "status": "in-progress",
            "medicationReference": { "reference": "Medication/x" }, "subject": subject,
            "authorizingPrescription": [{ "reference": "MedicationRequest/m-1" }],
            "whenPrepared": "2026-11-24T15:00:00+01:00",
            "performer": [{ "actor": { "reference": "Practitioner/ph" } }]
        });
        let issue = json!({
            "resourceType": "DetectedIssue", "status": "final", "severity": "high",
            "code": { "coding": [{ "code": "DRG" }] }, "patient": subject,
            "implicated": [{ "reference": "MedicationRequest/m-1" }],
            "mitigation": [{ "action": { "text": "stopped" } }]
        });
        let allergy = json!({
            "resourceType": "AllergyIntolerance", "patient": subject,
            "clinicalStatus": { "coding": [{ "code": "active" }] },
            "category": ["medication"], "criticality": "high",
            "code": { "coding": [{ "code": "7980" }] },
            "onsetString": "childhood",
            "reaction": [{ "manifestation": [{ "text": "hives" }], "severity": "mild" }]
        });
        let report = json!({
            "resourceType": "DiagnosticReport", "status": "final",
            "code": { "coding": [{ "system": "http://loinc.org", "code": "24323-8" }] },
            "subject": subject, "issued": "2026-11-24T09:00:00.000+01:00",
            "result": [{ "reference": "Observation/o-1" }],
            "media": [{ "link": { "reference": "Media/m-1" } }]
        });
        for r in [&request, &dispense, &issue, &allergy, &report] {
            assert_eq!(check(r.clone()), Vec::<String>::new(), "{r}");
        }
        assert_eq!(
            check(with(request, "/intent", Some(json!("wish")))).len(),
            1,
            "an intent outside its value set"
        );
        assert_eq!(
            check(with(dispense, "/medicationReference", None)),
            ["MedicationDispense.medication[x]: required (min 1)"]
        );
        assert_eq!(
            check(with(issue, "/severity", Some(json!("grave")))).len(),
            1
        );
        assert_eq!(check(with(allergy, "/patient", None)).len(), 1);
    }

    #[test]
    fn a_missing_required_element_is_named() {
        let e = with(with(encounter(), "/class", None), "/status", None);
        assert_eq!(
            check(e),
            [
                "Encounter.status: required (min 1)",
                "Encounter.class: required (min 1)"
            ]
        );
        let a = with(appointment(), "/participant", None);
        assert_eq!(check(a), ["Appointment.participant: required (min 1)"]);
        let t = with(task(), "/input/0/valueString", None);
        assert_eq!(check(t), ["Task.input[0].value[x]: required (min 1)"]);
        let p = with(patient(), "/text/div", None);
        assert_eq!(check(p), ["Patient.text.div: required (min 1)"]);
        let f = with(flag(), "/subject", None);
        assert_eq!(check(f), ["Flag.subject: required (min 1)"]);
    }

    #[test]
    fn an_array_where_one_value_goes_and_a_value_where_an_array_goes_are_refused() {
        let p = with(patient(), "/gender", Some(json!(["female"])));
        assert_eq!(
            check(p),
            ["Patient.gender: expected a single value (max 1), found an array"]
        );
        let p = with(patient(), "/name", Some(json!({ "family": "Doe" })));
        assert_eq!(
            check(p),
            ["Patient.name: expected an array (max *), found an object"]
        );
        let p = with(patient(), "/name/0/given", Some(json!("Jane")));
        assert_eq!(
            check(p),
            ["Patient.name[0].given: expected an array (max *), found a string"]
        );
        let p = with(patient(), "/telecom", Some(json!([])));
        assert_eq!(
            check(p),
            ["Patient.telecom: an empty array (arrays are never empty in FHIR JSON)"]
        );
        let p = with(patient(), "/managingOrganization", Some(json!({})));
        assert_eq!(
            check(p),
            [
                "Patient.managingOrganization: an empty object (an element needs a value or children)"
            ]
        );
    }

    #[test]
    fn a_value_of_the_wrong_json_type_is_refused() {
        let t = with(task(), "/intent", Some(json!(3)));
        assert_eq!(
            check(t),
            ["Task.intent: expected a code string, found a number"]
        );
        let p = with(patient(), "/active", Some(json!("yes")));
        assert_eq!(
            check(p),
            ["Patient.active: expected a boolean, found a string"]
        );
        let p = with(patient(), "/name/0/given", Some(json!(["Jane", 7])));
        assert_eq!(
            check(p),
            ["Patient.name[0].given[1]: expected a string, found a number"]
        );
        let e = with(encounter(), "/class", Some(json!("AMB")));
        assert_eq!(
            check(e),
            ["Encounter.class: expected a Coding object, found a string"]
        );
        let a = with(appointment(), "/minutesDuration", Some(json!(0)));
        assert_eq!(
            check(a),
            ["Appointment.minutesDuration: 0 is not a FHIR positiveInt"]
        );
        let a = with(appointment(), "/priority", Some(json!("0")));
        assert_eq!(
            check(a),
            ["Appointment.priority: expected an unsignedInt number, found a string"]
        );
        let p = with(patient(), "/multipleBirthBoolean", None);
        let p = with(p, "/multipleBirthInteger", Some(json!(1.5)));
        assert_eq!(
            check(p),
            ["Patient.multipleBirthInteger: 1.5 is not a FHIR integer"]
        );
        let p = with(patient(), "/id", Some(json!("p_1")));
        assert_eq!(check(p), ["Patient.id: \"p_1\" is not a FHIR id"]);
        let p = with(patient(), "/gender", Some(Value::Null));
        assert_eq!(
            check(p),
            ["Patient.gender: expected a code string, found null"]
        );
    }

    #[test]
    fn impossible_or_incomplete_dates_and_times_are_refused() {
        let p = with(patient(), "/birthDate", Some(json!("1980-13-01")));
        assert_eq!(
            check(p),
            ["Patient.birthDate: \"1980-13-01\" is not a FHIR date"]
        );
        let p = with(patient(), "/birthDate", Some(json!("1981-02-29")));
        assert_eq!(
            check(p),
            ["Patient.birthDate: \"1981-02-29\" is not a FHIR date"]
        );
        let t = with(task(), "/authoredOn", Some(json!("2026-03-02T09:03:11")));
        assert_eq!(
            check(t),
            ["Task.authoredOn: \"2026-03-02T09:03:11\" is not a FHIR dateTime"]
        );
        let p = with(patient(), "/meta/lastUpdated", Some(json!("2026-03-02")));
        assert_eq!(
            check(p),
            ["Patient.meta.lastUpdated: \"2026-03-02\" is not a FHIR instant"]
        );
    }

    /// A lexical rule of a primitive.
    type Rule = fn(&str) -> bool;

    #[test]
    fn primitive_formats_follow_r4() {
        let good: &[(Rule, &str)] = &[
            (is_date, "2026"),
            (is_date, "2026-02"),
            (is_date, "2000-02-29"),
            (is_date_time, "2026-03-02T09:00:00Z"),
            (is_date_time, "2026-03-02T23:59:60.123-05:30"),
            (is_date_time, "2026-03-02T09:00:00+14:00"),
            (is_instant, "2026-03-02T09:00:00.5Z"),
            (is_time, "23:59:59"),
            (is_code, "a b"),
            (is_id, "a.B-9"),
            (is_uri, "urn:x"),
            (is_oid, "urn:oid:1.2.840"),
            (is_uuid, "urn:uuid:c757873d-ec9a-4326-a141-556f43239520"),
            (is_base64, "YWJj/+8="),
            (is_base64, "YW Jj"),
        ];
        let bad: &[(Rule, &str)] = &[
            (is_date, "0000"),
            (is_date, "2026-2"),
            (is_date, "2100-02-29"),
            (is_date, "2026-04-31"),
            (is_date, "2026-01-01T10:00:00Z"),
            (is_date_time, "2026-03-02T09:00Z"),
            (is_date_time, "2026-03T09:00:00Z"),
            (is_date_time, "2026-03-02T24:00:00Z"),
            (is_date_time, "2026-03-02T09:00:00+14:30"),
            (is_date_time, "2026-03-02T09:00:00."),
            (is_instant, "2026-03-02T09:00:00"),
            (is_time, "09:00"),
            (is_code, " a"),
            (is_code, "a  b"),
            (is_code, ""),
            (is_id, ""),
            (is_id, &"a".repeat(65)),
            (is_uri, "a b"),
            (is_uri, ""),
            (is_oid, "urn:oid:3.1"),
            (is_oid, "urn:oid:1.02"),
            (is_oid, "urn:oid:1"),
            (is_uuid, "urn:uuid:C757873D-ec9a-4326-a141-556f43239520"),
            (is_base64, "YWJ"),
            (is_base64, "Y=Jj"),
            (is_string, ""),
        ];
        for (rule, s) in good {
            assert!(rule(s), "{s:?} should be accepted");
        }
        for (rule, s) in bad {
            assert!(!rule(s), "{s:?} should be refused");
        }
    }

    #[test]
    fn a_code_outside_its_required_value_set_is_refused() {
        let p = with(patient(), "/gender", Some(json!("unknown-x")));
        assert_eq!(
            check(p),
            [
                "Patient.gender: \"unknown-x\" is not in the required value set administrative-gender"
            ]
        );
        let p = with(patient(), "/contact/0/gender", Some(json!("M")));
        assert_eq!(
            check(p),
            [
                "Patient.contact[0].gender: \"M\" is not in the required value set administrative-gender"
            ]
        );
        let p = with(patient(), "/contact/0/telecom/0/use", Some(json!("cell")));
        assert_eq!(
            check(p),
            [
                "Patient.contact[0].telecom[0].use: \"cell\" is not in the required value set contact-point-use"
            ]
        );
        let e = with(encounter(), "/length/comparator", Some(json!("~")));
        assert_eq!(
            check(e),
            [
                "Encounter.length.comparator: \"~\" is not in the required value set quantity-comparator"
            ]
        );
        let c = with(communication(), "/status", Some(json!("sent")));
        assert_eq!(
            check(c),
            ["Communication.status: \"sent\" is not in the required value set event-status"]
        );
        // Encounter.class is bound (extensible) to ActEncounterCode: any code of the right type.
        let e = with(encounter(), "/class/code", Some(json!("TELE")));
        assert_eq!(check(e), Vec::<String>::new());
    }

    #[test]
    fn an_unknown_element_is_refused_wherever_it_is() {
        let p = with(patient(), "/foo", Some(json!(1)));
        assert_eq!(check(p), ["Patient.foo: unknown element"]);
        let p = with(patient(), "/contact/0/nickname", Some(json!("Jo")));
        assert_eq!(check(p), ["Patient.contact[0].nickname: unknown element"]);
        let p = with(patient(), "/name/0/middle", Some(json!("Q")));
        assert_eq!(check(p), ["Patient.name[0].middle: unknown element"]);
        let a = with(appointment(), "/participant/1/actor/ref", Some(json!("x")));
        assert_eq!(
            check(a),
            ["Appointment.participant[1].actor.ref: unknown element"]
        );
        // `_name` exists only for primitives.
        let p = with(patient(), "/_name", Some(json!([{ "id": "n" }])));
        assert_eq!(check(p), ["Patient._name: unknown element"]);
    }

    #[test]
    fn choice_types_are_named_by_an_allowed_type_and_given_once() {
        let p = with(patient(), "/extension/0/valueFoo", Some(json!("x")));
        let p = with(p, "/extension/0/valueAddress", None);
        assert_eq!(
            check(p),
            ["Patient.extension[0].valueFoo: Foo is not a type allowed for value[x]"]
        );
        let p = with(patient(), "/deceasedString", Some(json!("yes")));
        let p = with(p, "/deceasedBoolean", None);
        assert_eq!(
            check(p),
            ["Patient.deceasedString: String is not a type allowed for deceased[x]"]
        );
        let p = with(patient(), "/deceasedDateTime", Some(json!("2026-01-01")));
        assert_eq!(
            check(p),
            [
                "Patient.deceased[x]: only one type may be given, found deceasedBoolean, deceasedDateTime"
            ]
        );
        let c = with(
            communication(),
            "/payload/0/contentString",
            Some(json!({ "text": "x" })),
        );
        assert_eq!(
            check(c),
            ["Communication.payload[0].contentString: expected a string, found an object"]
        );
        // An open type the gateway does not model is taken as any object.
        let t = with(
            task(),
            "/input/0/valueTiming",
            Some(json!({ "code": { "text": "BID" } })),
        );
        let t = with(t, "/input/0/valueString", None);
        assert_eq!(check(t), Vec::<String>::new());
    }

    #[test]
    fn primitive_extensions_carry_only_ids_and_extensions() {
        let p = with(patient(), "/name/0/given", Some(json!(["Jane", null])));
        let p = with(
            p,
            "/name/0/_given",
            Some(json!([null, { "extension": [{ "url": "urn:x", "valueCode": "masked" }] }])),
        );
        assert_eq!(check(p), Vec::<String>::new());
        let p = with(patient(), "/name/0/given", Some(json!(["Jane", null])));
        assert_eq!(
            check(p),
            ["Patient.name[0].given[1]: expected a string, found null"]
        );
        let p = with(patient(), "/_birthDate", Some(json!({ "value": "1980" })));
        assert_eq!(check(p), ["Patient._birthDate.value: unknown element"]);
        let p = with(patient(), "/_birthDate/extension/0/url", None);
        assert_eq!(
            check(p),
            ["Patient._birthDate.extension[0].url: required (min 1)"]
        );
    }

    #[test]
    fn a_booked_appointment_needs_start_and_end() {
        let a = with(appointment(), "/end", None);
        assert_eq!(
            check(a.clone()),
            [
                "Appointment: start and end are required unless status is proposed, cancelled or waitlist (app-3)"
            ]
        );
        for status in ["proposed", "cancelled", "waitlist"] {
            assert_eq!(
                check(with(a.clone(), "/status", Some(json!(status)))),
                Vec::<String>::new(),
                "{status}"
            );
        }
    }

    #[test]
    fn contained_resources_need_a_resource_type() {
        let c = with(communication(), "/contained/0/resourceType", None);
        assert_eq!(
            check(c),
            [
                "Communication.contained[0]: expected a resource (an object with a resourceType), found an object"
            ]
        );
    }

    #[test]
    fn only_the_exchanged_resource_types_are_accepted() {
        let device = json!({ "resourceType": "Device", "status": "active" });
        assert_eq!(
            validate(&device),
            Err(Invalid {
                resource_type: "Device".into(),
                issues: vec![
                    "resourceType: \"Device\" is not a resource the gateway exchanges".into()
                ],
            })
        );
        let specimen = json!({
            "resourceType": "Specimen", "status": "unsatisfactory",
            "identifier": [{"value": "S-1"}],
            "type": {"coding": [{"code": "BLD"}]},
            "subject": {"reference": "Patient/p-1"},
            "request": [{"reference": "ServiceRequest/o-1"}],
            "collection": {"collectedDateTime": "2026-11-24T09:00:00+01:00"},
            "extension": [{
                "url": "http://hl7.org/fhir/StructureDefinition/specimen-rejectReason",
                "valueCodeableConcept": {"coding": [{"code": "RH"}]}
            }]
        });
        assert_eq!(validate(&specimen), Ok(()));
        assert_eq!(
            check(with(specimen, "/status", Some(json!("collected")))),
            ["Specimen.status: \"collected\" is not in the required value set specimen-status"]
        );
        let order = json!({
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "subject": {"reference": "Patient/p-1"}
        });
        assert_eq!(validate(&order), Ok(()));
        assert_eq!(
            check(with(order, "/intent", None)),
            ["ServiceRequest.intent: required (min 1)"]
        );
        let observation = json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
            "subject": {"reference": "Patient/p-1"},
            "valueQuantity": {"value": 7.1, "unit": "mmol/L"},
            "interpretation": [{"coding": [{"code": "HH"}]}],
            "referenceRange": [{"text": "3.5-5.1"}]
        });
        assert_eq!(validate(&observation), Ok(()));
        let titer = json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"code": "x"}]},
            "valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 64}}
        });
        assert_eq!(validate(&titer), Ok(()));
        let timed = json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"code": "x"}]}, "valueTiming": {"event": ["2026-12-01"]}
        });
        assert!(
            validate(&timed).is_err(),
            "Timing is no Observation value in R4"
        );
        assert_eq!(
            check(json!({ "id": "x" })),
            ["resourceType: required (min 1)"]
        );
        assert_eq!(
            check(json!({ "resourceType": 1 })),
            ["resourceType: expected a string, found a number"]
        );
        assert_eq!(
            check(json!("Patient")),
            ["Resource: expected a resource object, found a string"]
        );
    }

    #[test]
    fn every_fault_is_reported_at_once() {
        let p = with(patient(), "/gender", Some(json!("x")));
        let p = with(p, "/birthDate", Some(json!("1980-02-30")));
        let p = with(p, "/link/0/type", None);
        let p = with(p, "/address/0/zip", Some(json!("4058")));
        let err = validate(&p).expect_err("four faults");
        let mut issues = err.issues.clone();
        issues.sort();
        assert_eq!(
            issues,
            [
                "Patient.address[0].zip: unknown element",
                "Patient.birthDate: \"1980-02-30\" is not a FHIR date",
                "Patient.gender: \"x\" is not in the required value set administrative-gender",
                "Patient.link[0].type: required (min 1)",
            ]
        );
        assert!(
            err.to_string()
                .starts_with("Patient is not valid FHIR R4: "),
            "{err}"
        );
        assert_eq!(err.to_string().matches("; ").count(), 3, "{err}");
    }
    #[test]
    fn eligibility_responses_are_checked_down_to_their_benefits() {
        let answer = json!({
            "resourceType": "CoverageEligibilityResponse", "status": "active",
            "purpose": ["validation", "benefits"], "patient": {"reference": "Patient/p-1"},
            "created": "2026-12-02T09:15:00Z", "request": {"reference": "CoverageEligibilityRequest/r-1"},
            "outcome": "complete", "insurer": {"display": "ACME HEALTH"},
            "insurance": [{
                "coverage": {"reference": "Coverage/c-1"}, "inforce": true,
                "item": [{
                    "category": {"coding": [{"code": "98"}]},
                    "benefit": [
                        {"type": {"coding": [{"code": "copay"}]}, "allowedMoney": {"value": 25, "currency": "USD"}},
                        {"type": {"coding": [{"code": "visit"}]}, "allowedUnsignedInt": 20, "usedString": "some"}
                    ]
                }]
            }]
        });
        assert_eq!(check(answer.clone()), Vec::<String>::new());
        let bad = with(answer, "/outcome", Some(json!("done")));
        let bad = with(
            bad,
            "/insurance/0/item/0/benefit/0/allowedMoney/value",
            Some(json!("25")),
        );
        assert_eq!(
            check(with(bad, "/purpose", Some(json!(["check"])))),
            [
                "CoverageEligibilityResponse.insurance[0].item[0].benefit[0].allowedMoney.value: expected a decimal number, found a string",
                "CoverageEligibilityResponse.outcome: \"done\" is not in the required value set remittance-outcome",
                "CoverageEligibilityResponse.purpose[0]: \"check\" is not in the required value set eligibilityrequest-purpose",
            ]
        );
    }
}
