//! HL7 v2 → FHIR R4, following the HL7 V2-to-FHIR mapping guidance (PID → Patient, PV1 →
//! Encounter, SCH/TQ1/AIL/AIP → Appointment, PV1-3/AIL-3 → Location, OBR → DiagnosticReport and
//! each OBX → Observation, ORC/OBR → ServiceRequest, SPM → Specimen). The mapping is data: one
//! table of (v2 path, FHIR path, conversion) rows per resource, plus the vocabulary tables the
//! guidance names. Code here only walks the tables, so a field is added by adding a row.

use crate::queue::schedule;
use serde_json::{Map, Value};

/// HL7 table 0203 (identifier type): the placer's (`PLAC`) and the filler's (`FILL`)
/// appointment ids are typed so that the filler's can be found when the other is absent.
const IDENTIFIER_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// How a v2 value becomes a FHIR value.
#[derive(Debug, Clone, Copy)]
enum Conv {
    Text,
    /// DTM (`YYYY[MM[DD]]`) → FHIR date.
    Date,
    /// DTM (`YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]`) → FHIR dateTime.
    DateTime,
    /// A non-negative integer.
    Integer,
    /// NM: a decimal number (FHIR `decimal`).
    Decimal,
    /// A code looked up in a vocabulary table; unmapped codes are left out, not guessed.
    Code(&'static [(&'static str, &'static str)]),
}

/// One row: the value at `v2` goes to `fhir`; when it does, each `also` (FHIR path, constant)
/// is set too (e.g. the code system of a mapped code). With `when` (v2 path, value), the row
/// applies only when that field holds that value (OBX-5 is read by the type OBX-2 names).
struct Row {
    v2: &'static str,
    fhir: &'static str,
    conv: Conv,
    also: &'static [(&'static str, &'static str)],
    when: Option<(&'static str, &'static str)>,
}

const fn row(v2: &'static str, fhir: &'static str, conv: Conv) -> Row {
    Row {
        v2,
        fhir,
        conv,
        also: &[],
        when: None,
    }
}

const fn when(
    guard: (&'static str, &'static str),
    v2: &'static str,
    fhir: &'static str,
    conv: Conv,
) -> Row {
    Row {
        v2,
        fhir,
        conv,
        also: &[],
        when: Some(guard),
    }
}

const fn with(
    v2: &'static str,
    fhir: &'static str,
    conv: Conv,
    also: &'static [(&'static str, &'static str)],
) -> Row {
    Row {
        v2,
        fhir,
        conv,
        also,
        when: None,
    }
}

/// HL7 table 0001 (administrative sex) → FHIR administrative-gender.
const ADMINISTRATIVE_SEX: &[(&str, &str)] = &[
    ("F", "female"),
    ("M", "male"),
    ("O", "other"),
    ("A", "other"),
    ("U", "unknown"),
    ("N", "unknown"),
];

/// HL7 table 0004 (patient class) → v3 ActCode encounter class.
const PATIENT_CLASS: &[(&str, &str)] = &[
    ("E", "EMER"),
    ("I", "IMP"),
    ("O", "AMB"),
    ("P", "PRENC"),
    ("R", "AMB"),
    ("B", "OBSENC"),
];

/// HL7 table 0278 (filler status code) → FHIR appointmentstatus.
const FILLER_STATUS: &[(&str, &str)] = &[
    ("Pending", "pending"),
    ("Waitlist", "waitlist"),
    ("Booked", "booked"),
    ("Started", "arrived"),
    ("Complete", "fulfilled"),
    ("Cancelled", "cancelled"),
    ("Dc", "cancelled"),
    ("Deleted", "entered-in-error"),
    ("Blocked", "cancelled"),
    ("Overbook", "booked"),
    ("Noshow", "noshow"),
];

/// HL7 table 0136 (yes/no) → FHIR boolean.
const YES_NO: &[(&str, &str)] = &[("Y", "true"), ("N", "false")];

/// HL7 tables 0027 / 0485 (priority: TQ-6, TQ1-9) → v3 ActPriority, which uses the same codes;
/// `C` (callback) could be either of ActPriority's callbacks, so it is left out.
const PRIORITY: &[(&str, &str)] = &[
    ("S", "S"),
    ("A", "A"),
    ("R", "R"),
    ("P", "P"),
    ("T", "T"),
    ("PRN", "PRN"),
];

/// Where an appointment's priority goes: R4's `Appointment.priority` is a number, so the code
/// is carried as R5's coded priority (`queue::schedule::PRIORITY_EXTENSION`) on `_priority`.
const APPOINTMENT_PRIORITY: &str = "_priority.extension[0].valueCodeableConcept.coding[0].code";
const APPOINTMENT_PRIORITY_ALSO: &[(&str, &str)] = &[
    ("_priority.extension[0].url", schedule::PRIORITY_EXTENSION),
    (
        "_priority.extension[0].valueCodeableConcept.coding[0].system",
        schedule::ACT_PRIORITY,
    ),
];

const PATIENT: &[Row] = &[
    row("PID-3[1].1", "identifier[0].value", Conv::Text),
    row("PID-3[1].4.1", "identifier[0].system", Conv::Text),
    row(
        "PID-3[1].5",
        "identifier[0].type.coding[0].code",
        Conv::Text,
    ),
    row("PID-3[2].1", "identifier[1].value", Conv::Text),
    row("PID-3[2].4.1", "identifier[1].system", Conv::Text),
    row(
        "PID-3[2].5",
        "identifier[1].type.coding[0].code",
        Conv::Text,
    ),
    row("PID-5[1].1.1", "name[0].family", Conv::Text),
    row("PID-5[1].2", "name[0].given[0]", Conv::Text),
    row("PID-5[1].3", "name[0].given[1]", Conv::Text),
    row("PID-5[1].4", "name[0].suffix[0]", Conv::Text),
    row("PID-5[1].5", "name[0].prefix[0]", Conv::Text),
    row("PID-7.1", "birthDate", Conv::Date),
    row("PID-8", "gender", Conv::Code(ADMINISTRATIVE_SEX)),
    row("PID-11[1].1.1", "address[0].line[0]", Conv::Text),
    row("PID-11[1].2", "address[0].line[1]", Conv::Text),
    row("PID-11[1].3", "address[0].city", Conv::Text),
    row("PID-11[1].4", "address[0].state", Conv::Text),
    row("PID-11[1].5", "address[0].postalCode", Conv::Text),
    row("PID-11[1].6", "address[0].country", Conv::Text),
    with(
        "PID-13[1].1",
        "telecom[0].value",
        Conv::Text,
        &[("telecom[0].system", "phone"), ("telecom[0].use", "home")],
    ),
    with(
        "PID-14[1].1",
        "telecom[1].value",
        Conv::Text,
        &[("telecom[1].system", "phone"), ("telecom[1].use", "work")],
    ),
    row("PID-29.1", "deceasedDateTime", Conv::DateTime),
    row("PID-30", "deceasedBoolean", Conv::Code(YES_NO)),
    // A40: the record MRG-1 names is merged into this one.
    with(
        "MRG-1[1].1",
        "link[0].other.identifier.value",
        Conv::Text,
        &[("link[0].type", "replaces")],
    ),
];

const ENCOUNTER: &[Row] = &[
    row("PV1-19.1", "identifier[0].value", Conv::Text),
    with(
        "PV1-2",
        "class.code",
        Conv::Code(PATIENT_CLASS),
        &[(
            "class.system",
            "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        )],
    ),
    row("PV1-3.2", "location[0].location.display", Conv::Text),
    row(
        "PV1-7[1].1",
        "participant[0].individual.identifier.value",
        Conv::Text,
    ),
    row(
        "PV1-7[1].2.1",
        "participant[0].individual.display",
        Conv::Text,
    ),
    row("PV1-10", "serviceType.coding[0].code", Conv::Text),
    row("PV1-44.1", "period.start", Conv::DateTime),
    row("PV1-45[1].1", "period.end", Conv::DateTime),
];

const APPOINTMENT: &[Row] = &[
    with(
        "SCH-1.1",
        "identifier[0].value",
        Conv::Text,
        &[
            ("identifier[0].type.coding[0].system", IDENTIFIER_TYPE),
            ("identifier[0].type.coding[0].code", "PLAC"),
        ],
    ),
    with(
        "SCH-2.1",
        "identifier[1].value",
        Conv::Text,
        &[
            ("identifier[1].type.coding[0].system", IDENTIFIER_TYPE),
            ("identifier[1].type.coding[0].code", "FILL"),
        ],
    ),
    row("SCH-7.1", "reasonCode[0].coding[0].code", Conv::Text),
    row("SCH-7.2", "reasonCode[0].text", Conv::Text),
    row("SCH-8.1", "appointmentType.coding[0].code", Conv::Text),
    row("SCH-9", "minutesDuration", Conv::Integer),
    // Before v2.6 the start is in SCH-11 (TQ); from v2.6 on in TQ1.
    row("SCH-11.4.1", "start", Conv::DateTime),
    row("SCH-11.5.1", "end", Conv::DateTime),
    with(
        "SCH-11.6",
        APPOINTMENT_PRIORITY,
        Conv::Code(PRIORITY),
        APPOINTMENT_PRIORITY_ALSO,
    ),
    row("TQ1-7.1", "start", Conv::DateTime),
    row("TQ1-8.1", "end", Conv::DateTime),
    with(
        "TQ1-9.1",
        APPOINTMENT_PRIORITY,
        Conv::Code(PRIORITY),
        APPOINTMENT_PRIORITY_ALSO,
    ),
    row("SCH-25", "status", Conv::Code(FILLER_STATUS)),
    row(
        "PID-3[1].1",
        "participant[0].actor.identifier.value",
        Conv::Text,
    ),
    row(
        "AIP-3[1].1",
        "participant[1].actor.identifier.value",
        Conv::Text,
    ),
    row("AIP-3[1].2.1", "participant[1].actor.display", Conv::Text),
    row("AIL-3.2", "participant[2].actor.display", Conv::Text),
];

const LOCATION: &[Row] = &[
    row("PV1-3.1", "partOf.display", Conv::Text),
    row("PV1-3.2", "name", Conv::Text),
    row("AIL-3.1", "partOf.display", Conv::Text),
    row("AIL-3.2", "name", Conv::Text),
];

/// HL7 table 0396 (coding system) → FHIR system URI, for the systems a lab names; codes of
/// other systems keep their code without a system.
const CODING_SYSTEM: &[(&str, &str)] = &[
    ("LN", "http://loinc.org"),
    ("SCT", "http://snomed.info/sct"),
    ("SNM", "http://snomed.info/sct"),
    ("UCUM", "http://unitsofmeasure.org"),
    ("RXN", "http://www.nlm.nih.gov/research/umls/rxnorm"),
];

/// HL7 table 0085 (observation result status, OBX-11) → FHIR observation-status, as the
/// V2-to-FHIR concept map gives it.
const RESULT_STATUS: &[(&str, &str)] = &[
    ("C", "corrected"),
    ("D", "entered-in-error"),
    ("F", "final"),
    ("I", "registered"),
    ("O", "registered"),
    ("P", "preliminary"),
    ("R", "preliminary"),
    ("S", "preliminary"),
    ("U", "final"),
    ("W", "entered-in-error"),
    ("X", "cancelled"),
];

/// HL7 table 0123 (result status, OBR-25) → FHIR diagnostic-report-status.
const REPORT_STATUS: &[(&str, &str)] = &[
    ("O", "registered"),
    ("I", "registered"),
    ("S", "registered"),
    ("A", "partial"),
    ("P", "preliminary"),
    ("C", "corrected"),
    ("R", "partial"),
    ("F", "final"),
    ("X", "cancelled"),
];

/// HL7 table 0078 (abnormal flags, OBX-8) → v3 ObservationInterpretation, which kept the v2
/// codes; codes outside it are left out.
const INTERPRETATION: &[(&str, &str)] = &[
    ("L", "L"),
    ("H", "H"),
    ("LL", "LL"),
    ("HH", "HH"),
    ("LU", "LU"),
    ("HU", "HU"),
    ("N", "N"),
    ("A", "A"),
    ("AA", "AA"),
    ("S", "S"),
    ("R", "R"),
    ("I", "I"),
    ("POS", "POS"),
    ("NEG", "NEG"),
    ("IND", "IND"),
    ("DET", "DET"),
    ("ND", "ND"),
];

const INTERPRETATION_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";

/// OBX → Observation, one per OBX segment (`OBX-` is read from the segment at hand).
const OBSERVATION: &[Row] = &[
    row("OBX-3.1", "code.coding[0].code", Conv::Text),
    row("OBX-3.2", "code.coding[0].display", Conv::Text),
    row(
        "OBX-3.3",
        "code.coding[0].system",
        Conv::Code(CODING_SYSTEM),
    ),
    when(
        ("OBX-2", "NM"),
        "OBX-5.1",
        "valueQuantity.value",
        Conv::Decimal,
    ),
    when(("OBX-2", "NM"), "OBX-6.1", "valueQuantity.unit", Conv::Text),
    when(
        ("OBX-2", "SN"),
        "OBX-5.2",
        "valueQuantity.value",
        Conv::Decimal,
    ),
    when(("OBX-2", "SN"), "OBX-6.1", "valueQuantity.unit", Conv::Text),
    when(("OBX-2", "ST"), "OBX-5", "valueString", Conv::Text),
    when(("OBX-2", "TX"), "OBX-5", "valueString", Conv::Text),
    when(("OBX-2", "FT"), "OBX-5", "valueString", Conv::Text),
    when(
        ("OBX-2", "CWE"),
        "OBX-5.1",
        "valueCodeableConcept.coding[0].code",
        Conv::Text,
    ),
    when(
        ("OBX-2", "CWE"),
        "OBX-5.2",
        "valueCodeableConcept.coding[0].display",
        Conv::Text,
    ),
    when(
        ("OBX-2", "CE"),
        "OBX-5.1",
        "valueCodeableConcept.coding[0].code",
        Conv::Text,
    ),
    when(
        ("OBX-2", "CE"),
        "OBX-5.2",
        "valueCodeableConcept.coding[0].display",
        Conv::Text,
    ),
    row("OBX-7", "referenceRange[0].text", Conv::Text),
    with(
        "OBX-8[1].1",
        "interpretation[0].coding[0].code",
        Conv::Code(INTERPRETATION),
        &[("interpretation[0].coding[0].system", INTERPRETATION_SYSTEM)],
    ),
    with(
        "OBX-8[2].1",
        "interpretation[1].coding[0].code",
        Conv::Code(INTERPRETATION),
        &[("interpretation[1].coding[0].system", INTERPRETATION_SYSTEM)],
    ),
    row("OBX-11", "status", Conv::Code(RESULT_STATUS)),
    row("OBX-14.1", "effectiveDateTime", Conv::DateTime),
    row("PID-3[1].1", "subject.identifier.value", Conv::Text),
];

/// OBR → DiagnosticReport, one per OBR segment.
const DIAGNOSTIC_REPORT: &[Row] = &[
    with(
        "OBR-2.1",
        "identifier[0].value",
        Conv::Text,
        &[
            ("identifier[0].type.coding[0].system", IDENTIFIER_TYPE),
            ("identifier[0].type.coding[0].code", "PLAC"),
        ],
    ),
    with(
        "OBR-3.1",
        "identifier[1].value",
        Conv::Text,
        &[
            ("identifier[1].type.coding[0].system", IDENTIFIER_TYPE),
            ("identifier[1].type.coding[0].code", "FILL"),
        ],
    ),
    row("OBR-4.1", "code.coding[0].code", Conv::Text),
    row("OBR-4.2", "code.coding[0].display", Conv::Text),
    row(
        "OBR-4.3",
        "code.coding[0].system",
        Conv::Code(CODING_SYSTEM),
    ),
    row("OBR-7.1", "effectiveDateTime", Conv::DateTime),
    row("OBR-22.1", "issued", Conv::DateTime),
    row("OBR-25", "status", Conv::Code(REPORT_STATUS)),
    row("PID-3[1].1", "subject.identifier.value", Conv::Text),
];

/// HL7 table 0119 (order control, ORC-1) → FHIR medicationrequest-status.
const ORDER_CONTROL: &[(&str, &str)] = &[
    ("NW", "active"),
    ("XO", "active"),
    ("RP", "active"),
    ("OK", "active"),
    ("HD", "on-hold"),
    ("CA", "cancelled"),
    ("OC", "cancelled"),
    ("DC", "stopped"),
    ("OD", "stopped"),
];

/// HL7 table 0038 (order status, ORC-5) of a dispense → FHIR medicationdispense-status, whose
/// `in-progress` is "ready for pickup" and `completed` "picked up".
const DISPENSE_STATUS: &[(&str, &str)] = &[
    ("IP", "preparation"),
    ("SC", "preparation"),
    ("A", "preparation"),
    ("CM", "completed"),
    ("CA", "cancelled"),
    ("DC", "stopped"),
    ("HD", "on-hold"),
];

/// The order ids of a pharmacy order or dispense: ORC-2 the placer's, ORC-3 the filler's.
const ORDER_IDS: &[Row] = &[
    with(
        "ORC-2.1",
        "identifier[0].value",
        Conv::Text,
        &[
            ("identifier[0].type.coding[0].system", IDENTIFIER_TYPE),
            ("identifier[0].type.coding[0].code", "PLAC"),
        ],
    ),
    with(
        "ORC-3.1",
        "identifier[1].value",
        Conv::Text,
        &[
            ("identifier[1].type.coding[0].system", IDENTIFIER_TYPE),
            ("identifier[1].type.coding[0].code", "FILL"),
        ],
    ),
];

/// RDE (ORC/RXE) → MedicationRequest: the order, its status and the give code; the drug's name
/// (RXE-2.2) is not carried, as nothing downstream may show it.
const MEDICATION_REQUEST: &[Row] = &[
    row("ORC-1", "status", Conv::Code(ORDER_CONTROL)),
    row(
        "RXE-2.1",
        "medicationCodeableConcept.coding[0].code",
        Conv::Text,
    ),
    row(
        "RXE-2.3",
        "medicationCodeableConcept.coding[0].system",
        Conv::Code(CODING_SYSTEM),
    ),
    row("PID-3[1].1", "subject.identifier.value", Conv::Text),
];

/// AL1 → AllergyIntolerance, one per AL1: the allergen's code (never its text or the
/// reaction), its type and severity. The AL1s of a message are the patient's whole list, so each
/// is active; the patient is named by PID-3 as on the other mapped resources.
const ALLERGY: &[Row] = &[
    row("AL1-3.1", "code.coding[0].code", Conv::Text),
    row(
        "AL1-3.3",
        "code.coding[0].system",
        Conv::Code(CODING_SYSTEM),
    ),
    row("AL1-2.1", "category[0]", Conv::Code(ALLERGEN_TYPE)),
    row("AL1-4.1", "criticality", Conv::Code(ALLERGY_SEVERITY)),
    with(
        "PID-3[1].1",
        "patient.identifier.value",
        Conv::Text,
        &[("clinicalStatus.coding[0].code", "active")],
    ),
];

/// The `identifier.system` of an AllergyIntolerance read from an IAM segment: IAM-7 (the
/// allergy's unique identifier) its value when the sender gives one.
pub const IAM_SYSTEM: &str = "urn:clinic-gateway:hl7v2:IAM";

/// IAM → AllergyIntolerance, one per IAM (ADT^A60): as AL1, the allergen's code (never its
/// text or the reaction), its type and severity. Unlike AL1s, IAMs are changes to the list,
/// each with its action (IAM-6): added, updated or unchanged is active, deleted is not. Its
/// clinical status (IAM-17) gives the verification status, and "confirmed but inactive" makes
/// it inactive whatever the action.
const ALLERGY_IAM: &[Row] = &[
    row("IAM-3.1", "code.coding[0].code", Conv::Text),
    row(
        "IAM-3.3",
        "code.coding[0].system",
        Conv::Code(CODING_SYSTEM),
    ),
    row("IAM-2.1", "category[0]", Conv::Code(ALLERGEN_TYPE)),
    row("IAM-4.1", "criticality", Conv::Code(ALLERGY_SEVERITY)),
    row(
        "IAM-6.1",
        "clinicalStatus.coding[0].code",
        Conv::Code(ALLERGY_ACTION),
    ),
    row(
        "IAM-17.1",
        "verificationStatus.coding[0].code",
        Conv::Code(ALLERGY_VERIFICATION),
    ),
    row(
        "IAM-17.1",
        "clinicalStatus.coding[0].code",
        Conv::Code(&[("I", "inactive")]),
    ),
    row("IAM-7.1", "identifier[0].value", Conv::Text),
    with(
        "PID-3[1].1",
        "patient.identifier.value",
        Conv::Text,
        &[("identifier[0].system", IAM_SYSTEM)],
    ),
];

/// HL7 table 0206 (segment action code, IAM-6) → FHIR allergyintolerance-clinical.
const ALLERGY_ACTION: &[(&str, &str)] = &[
    ("A", "active"),
    ("U", "active"),
    ("X", "active"),
    ("D", "inactive"),
];

/// HL7 table 0438 (allergy clinical status, IAM-17) → FHIR R4
/// allergyintolerance-verification: unconfirmed, pending and suspected are all unconfirmed
/// (R4 has no "presumed"), and still meet prescriptions.
const ALLERGY_VERIFICATION: &[(&str, &str)] = &[
    ("U", "unconfirmed"),
    ("P", "unconfirmed"),
    ("S", "unconfirmed"),
    ("C", "confirmed"),
    ("I", "confirmed"),
    ("E", "entered-in-error"),
];

/// HL7 table 0127 (allergen type, AL1-2) → FHIR allergy-intolerance-category; the
/// miscellaneous types (MA, MC) have none.
const ALLERGEN_TYPE: &[(&str, &str)] = &[
    ("DA", "medication"),
    ("FA", "food"),
    ("EA", "environment"),
    ("AA", "biologic"),
    ("PA", "environment"),
    ("LA", "environment"),
];

/// HL7 table 0128 (allergy severity, AL1-4) → FHIR allergy-intolerance-criticality.
const ALLERGY_SEVERITY: &[(&str, &str)] = &[
    ("SV", "high"),
    ("MO", "low"),
    ("MI", "low"),
    ("U", "unable-to-assess"),
];

/// RDS (ORC/RXD) → MedicationDispense: its status from ORC-5 and, while it is being prepared,
/// the pharmacy's estimate of when it will be ready (RXD-3).
const MEDICATION_DISPENSE: &[Row] = &[
    row("ORC-5", "status", Conv::Code(DISPENSE_STATUS)),
    row(
        "RXD-2.1",
        "medicationCodeableConcept.coding[0].code",
        Conv::Text,
    ),
    row("RXD-3.1", "whenPrepared", Conv::DateTime),
    row("PID-3[1].1", "subject.identifier.value", Conv::Text),
];

/// HL7 table 0038 (order status, ORC-5) of a lab order → FHIR request-status.
const LAB_ORDER_STATUS: &[(&str, &str)] = &[
    ("SC", "active"),
    ("IP", "active"),
    ("A", "active"),
    ("CM", "completed"),
    ("CA", "revoked"),
    ("DC", "revoked"),
    ("HD", "on-hold"),
    ("ER", "entered-in-error"),
];

/// HL7 table 0119 (order control, ORC-1) of a lab order → FHIR request-status; ORC-5, when
/// sent, says more and is read after it.
const LAB_ORDER_CONTROL: &[(&str, &str)] = &[
    ("NW", "active"),
    ("XO", "active"),
    ("RP", "active"),
    ("OK", "active"),
    ("SC", "active"),
    ("HD", "on-hold"),
    ("CA", "revoked"),
    ("OC", "revoked"),
    ("DC", "revoked"),
    ("OD", "revoked"),
];

/// ORC/OBR → ServiceRequest, one per ORC (with the OBR beside it): the order ids, its status,
/// the test ordered and the patient.
const SERVICE_REQUEST: &[Row] = &[
    with(
        "OBR-2.1",
        "identifier[0].value",
        Conv::Text,
        &[
            ("identifier[0].type.coding[0].system", IDENTIFIER_TYPE),
            ("identifier[0].type.coding[0].code", "PLAC"),
            ("intent", "order"),
        ],
    ),
    with(
        "ORC-2.1",
        "identifier[0].value",
        Conv::Text,
        &[
            ("identifier[0].type.coding[0].system", IDENTIFIER_TYPE),
            ("identifier[0].type.coding[0].code", "PLAC"),
            ("intent", "order"),
        ],
    ),
    with(
        "OBR-3.1",
        "identifier[1].value",
        Conv::Text,
        &[
            ("identifier[1].type.coding[0].system", IDENTIFIER_TYPE),
            ("identifier[1].type.coding[0].code", "FILL"),
        ],
    ),
    with(
        "ORC-3.1",
        "identifier[1].value",
        Conv::Text,
        &[
            ("identifier[1].type.coding[0].system", IDENTIFIER_TYPE),
            ("identifier[1].type.coding[0].code", "FILL"),
        ],
    ),
    row("ORC-1", "status", Conv::Code(LAB_ORDER_CONTROL)),
    row("ORC-5", "status", Conv::Code(LAB_ORDER_STATUS)),
    row("OBR-4.1", "code.coding[0].code", Conv::Text),
    row(
        "OBR-4.3",
        "code.coding[0].system",
        Conv::Code(CODING_SYSTEM),
    ),
    row("ORC-9.1", "authoredOn", Conv::DateTime),
    row("PID-3[1].1", "subject.identifier.value", Conv::Text),
];

/// HL7 table 0493 (specimen condition, SPM-24).
const SPECIMEN_CONDITION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v2-0493";
/// HL7 table 0490 (specimen reject reason, SPM-21).
const SPECIMEN_REJECT_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v2-0490";
/// The FHIR extension a specimen's reject reason travels in.
pub const SPECIMEN_REJECT_EXTENSION: &str =
    "http://hl7.org/fhir/StructureDefinition/specimen-rejectReason";

/// HL7 table 0136 on SPM-20 (specimen availability) → FHIR specimen-status.
const SPECIMEN_AVAILABILITY: &[(&str, &str)] = &[("Y", "available"), ("N", "unavailable")];

/// SPM → Specimen, one per SPM (with the ORC/OBR beside it, else the message's first, as the
/// order it was taken for): its ids, type, collection and receipt times, availability; a
/// reject reason (SPM-21) makes it `unsatisfactory`, read after SPM-20 so that it wins.
const SPECIMEN: &[Row] = &[
    with(
        "SPM-2.1",
        "identifier[0].value",
        Conv::Text,
        &[
            ("identifier[0].type.coding[0].system", IDENTIFIER_TYPE),
            ("identifier[0].type.coding[0].code", "PLAC"),
        ],
    ),
    with(
        "SPM-2.2",
        "identifier[1].value",
        Conv::Text,
        &[
            ("identifier[1].type.coding[0].system", IDENTIFIER_TYPE),
            ("identifier[1].type.coding[0].code", "FILL"),
        ],
    ),
    row("SPM-4.1", "type.coding[0].code", Conv::Text),
    row("SPM-4.2", "type.coding[0].display", Conv::Text),
    row(
        "SPM-4.3",
        "type.coding[0].system",
        Conv::Code(CODING_SYSTEM),
    ),
    row("SPM-17.1", "collection.collectedDateTime", Conv::DateTime),
    row("SPM-18.1", "receivedTime", Conv::DateTime),
    row("SPM-20", "status", Conv::Code(SPECIMEN_AVAILABILITY)),
    with(
        "SPM-21.1",
        "extension[0].valueCodeableConcept.coding[0].code",
        Conv::Text,
        &[
            ("extension[0].url", SPECIMEN_REJECT_EXTENSION),
            (
                "extension[0].valueCodeableConcept.coding[0].system",
                SPECIMEN_REJECT_SYSTEM,
            ),
            ("status", "unsatisfactory"),
        ],
    ),
    with(
        "SPM-24[1].1",
        "condition[0].coding[0].code",
        Conv::Text,
        &[("condition[0].coding[0].system", SPECIMEN_CONDITION_SYSTEM)],
    ),
    row("OBR-2.1", "request[0].identifier.value", Conv::Text),
    row("ORC-2.1", "request[0].identifier.value", Conv::Text),
    row("PID-3[1].1", "subject.identifier.value", Conv::Text),
];

/// What an SPM must carry to be tracked, and the fields that must be readable when sent:
/// (field, conversion or `None` for "must be present", what the refusal says).
const SPECIMEN_CONFORMANCE: &[(&str, Option<Conv>, &str)] = &[
    ("SPM-2.1", None, "SPM-2 (specimen id) is empty"),
    ("SPM-4.1", None, "SPM-4 (specimen type) is empty"),
    (
        "SPM-17.1",
        Some(Conv::DateTime),
        "SPM-17 (collection time) is not a date and time",
    ),
    (
        "SPM-18.1",
        Some(Conv::DateTime),
        "SPM-18 (received time) is not a date and time",
    ),
];

/// A status the trigger event implies, whatever the message's own status fields say.
const TRIGGER_STATUS: &[(&str, &str, &str, &str)] = &[
    ("ADT", "A01", "Encounter", "in-progress"),
    ("ADT", "A04", "Encounter", "arrived"),
    ("ADT", "A03", "Encounter", "finished"),
    ("ADT", "A11", "Encounter", "cancelled"),
    ("SIU", "S15", "Appointment", "cancelled"),
    ("SIU", "S26", "Appointment", "noshow"),
];

/// (message code, resource type, its row tables, the segments mapped once per occurrence).
type Resource = (
    &'static str,
    &'static str,
    &'static [&'static [Row]],
    &'static [&'static str],
);

/// Which resources each message type carries (their row tables), in the order they are
/// mapped; with segment names, one resource per occurrence of the first, reading the same
/// occurrence of the others (their first when they occur fewer times).
const RESOURCES: &[Resource] = &[
    ("ADT", "Patient", &[PATIENT], &[]),
    ("ADT", "Encounter", &[ENCOUNTER], &[]),
    ("ADT", "Location", &[LOCATION], &[]),
    ("ADT", "AllergyIntolerance", &[ALLERGY], &["AL1"]),
    ("ADT", "AllergyIntolerance", &[ALLERGY_IAM], &["IAM"]),
    ("SIU", "Patient", &[PATIENT], &[]),
    ("SIU", "Appointment", &[APPOINTMENT], &[]),
    ("SIU", "Location", &[LOCATION], &[]),
    ("ORU", "Patient", &[PATIENT], &[]),
    ("ORU", "DiagnosticReport", &[DIAGNOSTIC_REPORT], &["OBR"]),
    ("ORU", "Observation", &[OBSERVATION], &["OBX"]),
    ("RDE", "Patient", &[PATIENT], &[]),
    (
        "RDE",
        "MedicationRequest",
        &[ORDER_IDS, MEDICATION_REQUEST],
        &[],
    ),
    ("RDE", "AllergyIntolerance", &[ALLERGY], &["AL1"]),
    ("RDS", "Patient", &[PATIENT], &[]),
    (
        "RDS",
        "MedicationDispense",
        &[ORDER_IDS, MEDICATION_DISPENSE],
        &[],
    ),
    ("ORM", "Patient", &[PATIENT], &[]),
    ("ORM", "ServiceRequest", &[SERVICE_REQUEST], &["ORC", "OBR"]),
    ("OML", "Patient", &[PATIENT], &[]),
    ("OML", "ServiceRequest", &[SERVICE_REQUEST], &["ORC", "OBR"]),
    ("OML", "Specimen", &[SPECIMEN], &["SPM", "ORC", "OBR"]),
    ("OUL", "Patient", &[PATIENT], &[]),
    ("OUL", "Specimen", &[SPECIMEN], &["SPM", "ORC", "OBR"]),
    ("OUL", "DiagnosticReport", &[DIAGNOSTIC_REPORT], &["OBR"]),
    ("OUL", "Observation", &[OBSERVATION], &["OBX"]),
];

/// The FHIR resources one message maps to; a resource none of whose fields are present is left
/// out.
pub fn map(message: &hl7_2::Message) -> Vec<Value> {
    let field = |path: &str| message.get(path).ok().flatten().unwrap_or_default();
    let (code, trigger) = (field("MSH-9.1"), field("MSH-9.2"));
    let mut out = Vec::new();
    let count = |segment: &str| message.segments().filter(|s| s.name == segment).count();
    for (_, resource_type, rows, per) in RESOURCES.iter().filter(|(c, ..)| *c == code) {
        let occurrences = per.first().map_or(1, |segment| count(segment));
        for n in 1..=occurrences {
            // `OBX-5` of the n-th OBX is `OBX[n]-5`; a companion segment occurring fewer times
            // is read at its first; other segments' paths stay as they are.
            let at = |path: &str| match per
                .iter()
                .find(|segment| path.starts_with(&format!("{segment}-")))
            {
                Some(segment) => {
                    let k = if count(segment) >= n { n } else { 1 };
                    field(&format!("{segment}[{k}]{}", &path[segment.len()..]))
                }
                None => field(path),
            };
            if let Some(resource) = map_one(&at, rows, resource_type, &code, &trigger) {
                out.push(resource);
            }
        }
    }
    out
}

/// One resource from its rows, reading fields through `field`; `None` when no row applied.
fn map_one(
    field: &dyn Fn(&str) -> String,
    rows: &[&[Row]],
    resource_type: &str,
    code: &str,
    trigger: &str,
) -> Option<Value> {
    let mut resource = Value::Object(Map::new());
    for r in rows.iter().copied().flatten() {
        if r.when.is_some_and(|(path, want)| field(path) != want) {
            continue;
        }
        let Some(value) = convert(&field(r.v2), r.conv) else {
            continue;
        };
        set(&mut resource, r.fhir, value);
        for (path, constant) in r.also {
            set(&mut resource, path, Value::String((*constant).into()));
        }
    }
    if resource.as_object().is_some_and(Map::is_empty) {
        return None;
    }
    // R4 ait-2: an allergy entered in error has no clinical status.
    if resource.pointer("/verificationStatus/coding/0/code")
        == Some(&Value::String("entered-in-error".into()))
        && let Some(fields) = resource.as_object_mut()
    {
        fields.remove("clinicalStatus");
    }
    if let Some((_, _, _, status)) = TRIGGER_STATUS
        .iter()
        .find(|(c, t, r, _)| *c == code && *t == trigger && *r == resource_type)
    {
        set(&mut resource, "status", Value::String((*status).into()));
    }
    set(
        &mut resource,
        "resourceType",
        Value::String(resource_type.into()),
    );
    Some(resource)
}

/// Why a message cannot be tracked as sent (an SPM without its id or type, or with a time
/// that is not one), if it cannot: the message is then refused with this reason.
pub fn nonconforming(message: &hl7_2::Message) -> Option<String> {
    let field = |path: &str| message.get(path).ok().flatten().unwrap_or_default();
    let specimens = message.segments().filter(|s| s.name == "SPM").count();
    (1..=specimens).find_map(|n| {
        SPECIMEN_CONFORMANCE.iter().find_map(|(path, conv, why)| {
            let value = field(&format!("SPM[{n}]{}", &path[3..]));
            let bad = match conv {
                None => convert(&value, Conv::Text).is_none(),
                Some(conv) => !value.trim().is_empty() && convert(&value, *conv).is_none(),
            };
            bad.then(|| format!("SPM {n}: {why}"))
        })
    })
}

fn convert(v2: &str, conv: Conv) -> Option<Value> {
    let v = v2.trim();
    if v.is_empty() || v == "\"\"" {
        return None;
    }
    match conv {
        Conv::Text => Some(Value::String(v.into())),
        Conv::Date => date(v).map(Value::String),
        Conv::DateTime => date_time(v).map(Value::String),
        Conv::Integer => v.parse::<u32>().ok().map(Value::from),
        Conv::Decimal => v
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        Conv::Code(table) => table
            .iter()
            .find(|(code, _)| code.eq_ignore_ascii_case(v))
            .map(|(_, fhir)| match *fhir {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                other => Value::String(other.into()),
            }),
    }
}

/// `YYYY[MM[DD]]…` → `YYYY[-MM[-DD]]`, refusing what is not digits of a real date.
fn date(v: &str) -> Option<String> {
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    let part = |from: usize, to: usize| digits.get(from..to);
    let year = part(0, 4)?;
    let Some(month) = part(4, 6) else {
        return Some(year.into());
    };
    if !(1..=12).contains(&month.parse::<u8>().ok()?) {
        return None;
    }
    let Some(day) = part(6, 8) else {
        return Some(format!("{year}-{month}"));
    };
    if !(1..=31).contains(&day.parse::<u8>().ok()?) {
        return None;
    }
    Some(format!("{year}-{month}-{day}"))
}

/// DTM → FHIR dateTime. FHIR requires a zone once there is a time; a v2 time without one is the
/// sender's local time, which is unknown here, so it is given to the minute as a date only when
/// no zone is present — never with an invented offset.
fn date_time(v: &str) -> Option<String> {
    let (stamp, zone) = match v.find(['+', '-']) {
        Some(i) => (&v[..i], Some(&v[i..])),
        None => (v, None),
    };
    let day = date(stamp)?;
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    let (Some(zone), Some(hh), Some(mm)) = (zone, digits.get(8..10), digits.get(10..12)) else {
        return Some(day);
    };
    let ss = digits.get(12..14).unwrap_or("00");
    let (zh, zm) = (zone.get(1..3)?, zone.get(3..5)?);
    let ok = |s: &str, max: u8| s.parse::<u8>().ok().is_some_and(|n| n <= max);
    if day.len() != 10 || !ok(hh, 23) || !ok(mm, 59) || !ok(ss, 59) || !ok(zh, 14) || !ok(zm, 59) {
        return None;
    }
    Some(format!("{day}T{hh}:{mm}:{ss}{}{zh}:{zm}", &zone[..1]))
}

/// Sets `value` at a path like `name[0].given[1]`, creating objects and array slots on the way.
fn set(root: &mut Value, path: &str, value: Value) {
    let mut at = root;
    let steps: Vec<&str> = path.split('.').collect();
    for (i, step) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        let (key, index) = match step.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (*step, None),
        };
        let Value::Object(map) = at else { return };
        let slot = map.entry(key.to_string()).or_insert(Value::Null);
        at = match index {
            Some(n) => {
                if !slot.is_array() {
                    *slot = Value::Array(Vec::new());
                }
                let Value::Array(items) = slot else { return };
                if items.len() <= n {
                    items.resize(n + 1, Value::Object(Map::new()));
                }
                &mut items[n]
            }
            None => slot,
        };
        if last {
            *at = value;
            return;
        }
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapped(text: &str) -> Vec<Value> {
        map(&hl7_2::parse(text).expect("parse"))
    }

    #[test]
    fn adt_maps_pid_and_pv1_to_patient_encounter_and_location() {
        let r = mapped(
            "MSH|^~\\&|HIS|HOSP|GW|CLINIC|20261124083000||ADT^A04^ADT_A01|M1|P|2.5.1\r\
             EVN|A04|20261124083000\r\
             PID|1||MRN-1^^^HOSP^MR~PAS-9^^^NAT^PPN||Dupont^Élodie^Marie^^Dr||19800215|F|||12 Rue\\S\\Haute^Apt 3^Lyon^^69001^FR||+33-4-1234|||||||||||||||||N\r\
             PV1|1|O|CLIN^Room 3^A||||1234^House^Greg|||GEN|||||||||V-77|||||||||||||||||||||||||20261124083000-0500",
        );
        let kinds: Vec<&str> = r
            .iter()
            .map(|v| {
                v["resourceType"]
                    .as_str()
                    .expect("every resource has a type")
            })
            .collect();
        assert_eq!(kinds, ["Patient", "Encounter", "Location"]);
        assert_eq!(
            r[0],
            json!({
                "resourceType": "Patient",
                "identifier": [
                    {"value": "MRN-1", "system": "HOSP", "type": {"coding": [{"code": "MR"}]}},
                    {"value": "PAS-9", "system": "NAT", "type": {"coding": [{"code": "PPN"}]}}
                ],
                "name": [{"family": "Dupont", "given": ["Élodie", "Marie"], "prefix": ["Dr"]}],
                "birthDate": "1980-02-15",
                "gender": "female",
                "address": [{"line": ["12 Rue^Haute", "Apt 3"], "city": "Lyon", "postalCode": "69001", "country": "FR"}],
                "telecom": [{"value": "+33-4-1234", "system": "phone", "use": "home"}],
                "deceasedBoolean": false
            })
        );
        assert_eq!(r[1]["status"], "arrived");
        assert_eq!(r[1]["class"]["code"], "AMB");
        assert_eq!(r[1]["identifier"][0]["value"], "V-77");
        assert_eq!(r[1]["location"][0]["location"]["display"], "Room 3");
        assert_eq!(r[1]["participant"][0]["individual"]["display"], "House");
        assert_eq!(r[1]["period"]["start"], "2026-11-24T08:30:00-05:00");
        assert_eq!(
            r[2],
            json!({"resourceType": "Location", "name": "Room 3", "partOf": {"display": "CLIN"}})
        );
    }

    #[test]
    fn siu_maps_sch_tq1_ail_aip_and_the_trigger_sets_the_status() {
        let r = mapped(
            "MSH|^~\\&|SCHED|HOSP|GW|CLINIC|20261124||SIU^S15^SIU_S12|M2|P|2.6\r\
             SCH|P-1|F-1|||||FLU^Flu shot|ROUTINE|15|min|||||||||||||||Booked\r\
             TQ1|1||||||20261124093000+0100|20261124094500+0100|S^Stat\r\
             PID|1||MRN-1^^^HOSP^MR||Doe^John\r\
             AIL|1||CLIN^Room 2\r\
             AIP|1||55^Nurse^Ana",
        );
        let appt = r
            .iter()
            .find(|v| v["resourceType"] == "Appointment")
            .expect("appointment");
        assert_eq!(appt["status"], "cancelled", "S15 outranks SCH-25");
        let typed = |value: &str, code: &str| json!({"value": value, "type": {"coding": [{"system": IDENTIFIER_TYPE, "code": code}]}});
        assert_eq!(
            appt["identifier"],
            json!([typed("P-1", "PLAC"), typed("F-1", "FILL")])
        );
        assert_eq!(
            appt["_priority"],
            json!({"extension": [{
                "url": schedule::PRIORITY_EXTENSION,
                "valueCodeableConcept": {"coding": [{"system": schedule::ACT_PRIORITY, "code": "S"}]}
            }]})
        );
        assert_eq!(appt["minutesDuration"], 15);
        assert_eq!(appt["start"], "2026-11-24T09:30:00+01:00");
        assert_eq!(appt["end"], "2026-11-24T09:45:00+01:00");
        assert_eq!(
            appt["reasonCode"][0],
            json!({"coding": [{"code": "FLU"}], "text": "Flu shot"})
        );
        assert_eq!(
            appt["participant"][0]["actor"]["identifier"]["value"],
            "MRN-1"
        );
        assert_eq!(appt["participant"][1]["actor"]["display"], "Nurse");
        assert_eq!(appt["participant"][2]["actor"]["display"], "Room 2");
    }

    #[test]
    fn oru_maps_obr_to_a_report_and_each_obx_to_an_observation_by_its_value_type() {
        let r = mapped(
            "MSH|^~\\&|LAB|HOSP|GW|CLINIC|20261124||ORU^R01^ORU_R01|M3|P|2.5.1\r\
             PID|1||MRN-1^^^HOSP^MR||Doe^John\r\
             OBR|1|PL-1|FI-1|24323-8^Metabolic panel^LN|||20261124083000+0100|||||||||||||||20261124090000+0100|||F\r\
             OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH~A|||F|||20261124083000+0100\r\
             OBX|2|ST|8251-1^Comment^LN||hemolysed||||||C\r\
             OBX|3|CWE|600-7^Culture^LN||112283007^E. coli^SCT||||||P",
        );
        let kinds: Vec<&str> = r
            .iter()
            .filter_map(|v| v["resourceType"].as_str())
            .collect();
        assert_eq!(
            kinds,
            [
                "Patient",
                "DiagnosticReport",
                "Observation",
                "Observation",
                "Observation"
            ]
        );
        assert_eq!(r[1]["status"], "final");
        assert_eq!(r[1]["identifier"][1]["value"], "FI-1");
        assert_eq!(r[1]["code"]["coding"][0]["system"], "http://loinc.org");
        assert_eq!(r[1]["issued"], "2026-11-24T09:00:00+01:00");
        assert_eq!(
            r[2],
            json!({
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"code": "2823-3", "display": "Potassium", "system": "http://loinc.org"}]},
                "valueQuantity": {"value": 6.9, "unit": "mmol/L"},
                "referenceRange": [{"text": "3.5-5.1"}],
                "interpretation": [
                    {"coding": [{"code": "HH", "system": INTERPRETATION_SYSTEM}]},
                    {"coding": [{"code": "A", "system": INTERPRETATION_SYSTEM}]}
                ],
                "effectiveDateTime": "2026-11-24T08:30:00+01:00",
                "subject": {"identifier": {"value": "MRN-1"}}
            })
        );
        assert_eq!(r[3]["valueString"], "hemolysed");
        assert_eq!(r[3]["status"], "corrected");
        assert!(r[3].get("valueQuantity").is_none(), "ST is no quantity");
        assert_eq!(
            r[4]["valueCodeableConcept"]["coding"][0]["code"],
            "112283007"
        );
        assert_eq!(r[4]["status"], "preliminary");
    }

    #[test]
    fn rde_and_rds_map_to_a_request_and_a_dispense_without_the_drugs_name() {
        let rde = mapped(
            "MSH|^~\\&|PH|HOSP|GW|CLINIC|2026||RDE^O11^RDE_O11|M4|P|2.5.1\r\
             PID|1||MRN-1^^^HOSP^MR\rORC|NW|RX-1|F-1\rRXE|1^BID|00093-7180^Lisinopril^NDC",
        );
        assert_eq!(rde[1]["resourceType"], "MedicationRequest");
        assert_eq!(rde[1]["status"], "active");
        assert_eq!(rde[1]["identifier"][0]["value"], "RX-1");
        assert_eq!(
            rde[1]["medicationCodeableConcept"]["coding"][0]["code"],
            "00093-7180"
        );
        assert!(!rde[1].to_string().contains("Lisinopril"));
        let rds = mapped(
            "MSH|^~\\&|PH|HOSP|GW|CLINIC|2026||RDS^O13^RDS_O13|M5|P|2.5.1\r\
             PID|1||MRN-1^^^HOSP^MR\rORC|RE|RX-1|F-1||IP\rRXD|1|00093-7180^Lisinopril^NDC|20261124153000+0100",
        );
        assert_eq!(rds[1]["resourceType"], "MedicationDispense");
        assert_eq!(rds[1]["status"], "preparation");
        assert_eq!(rds[1]["whenPrepared"], "2026-11-24T15:30:00+01:00");
        assert_eq!(rds[1]["subject"]["identifier"]["value"], "MRN-1");
    }

    #[test]
    fn each_iam_maps_to_an_allergy_active_unless_deleted_with_its_identifier() {
        let r = mapped(
            "MSH|^~\\&|HIS|HOSP|GW|CLINIC|2026||ADT^A60^ADT_A60|M7|P|2.5.1\r\
             EVN|A60|2026\rPID|1||MRN-1^^^HOSP^MR\r\
             IAM|1|DA|7980^Penicillin G^RXN|SV|Hives|A|AL-1\r\
             IAM|2|DA|1191^Aspirin^RXN|MO||D",
        );
        let allergies: Vec<&Value> = r
            .iter()
            .filter(|v| v["resourceType"] == "AllergyIntolerance")
            .collect();
        assert_eq!(allergies.len(), 2, "{r:?}");
        assert_eq!(
            allergies[0]["clinicalStatus"]["coding"][0]["code"],
            "active"
        );
        assert_eq!(allergies[0]["code"]["coding"][0]["code"], "7980");
        assert_eq!(allergies[0]["identifier"][0]["value"], "AL-1");
        assert_eq!(allergies[0]["identifier"][0]["system"], IAM_SYSTEM);
        assert_eq!(allergies[0]["patient"]["identifier"]["value"], "MRN-1");
        assert_eq!(
            allergies[1]["clinicalStatus"]["coding"][0]["code"],
            "inactive"
        );
        assert_eq!(allergies[1]["identifier"][0].get("value"), None);
        assert!(!format!("{r:?}").contains("Hives") && !format!("{r:?}").contains("Penicillin"));
    }

    #[test]
    fn an_iams_clinical_status_gives_its_verification_and_may_make_it_inactive() {
        let r = mapped(
            "MSH|^~\\&|HIS|HOSP|GW|CLINIC|2026||ADT^A60^ADT_A60|M8|P|2.5.1\r\
             EVN|A60|2026\rPID|1||MRN-1^^^HOSP^MR\r\
             IAM|1|DA|2670^Codeine^RXN|MO||A|AL-3||||||||||E\r\
             IAM|2|DA|5640^Ibuprofen^RXN|MO||A|AL-4||||||||||I\r\
             IAM|3|DA|10180^Sulfa^RXN|MO||A|AL-5||||||||||S^Suspect^HL70438",
        );
        let status = |v: &Value| {
            (
                v["clinicalStatus"]["coding"][0]["code"].clone(),
                v["verificationStatus"]["coding"][0]["code"].clone(),
            )
        };
        let allergies: Vec<_> = r
            .iter()
            .filter(|v| v["resourceType"] == "AllergyIntolerance")
            .map(status)
            .collect();
        assert_eq!(
            allergies,
            [
                (Value::Null, json!("entered-in-error")),
                (json!("inactive"), json!("confirmed")),
                (json!("active"), json!("unconfirmed")),
            ],
            "{r:?}"
        );
    }

    #[test]
    fn each_al1_maps_to_an_active_allergy_by_its_code_without_its_text() {
        let r = mapped(
            "MSH|^~\\&|HIS|HOSP|GW|CLINIC|2026||ADT^A08^ADT_A01|M6|P|2.5.1\r\
             EVN|A08|2026\rPID|1||MRN-1^^^HOSP^MR\r\
             AL1|1|DA|7980^Penicillin G^RXN|SV|Hives\r\
             AL1|2|FA|^Peanuts\r\
             AL1|3|MA|1191^Aspirin^RXN|XX",
        );
        let allergies: Vec<&Value> = r
            .iter()
            .filter(|v| v["resourceType"] == "AllergyIntolerance")
            .collect();
        assert_eq!(allergies.len(), 3, "{r:?}");
        assert_eq!(
            allergies[0]["code"]["coding"][0],
            json!({ "code": "7980", "system": "http://www.nlm.nih.gov/research/umls/rxnorm" })
        );
        assert_eq!(
            allergies[0]["clinicalStatus"]["coding"][0]["code"],
            "active"
        );
        assert_eq!(allergies[0]["category"][0], "medication");
        assert_eq!(allergies[0]["criticality"], "high");
        assert_eq!(allergies[0]["patient"]["identifier"]["value"], "MRN-1");
        // Named by its text only: no code to match a prescription against.
        assert!(allergies[1].get("code").is_none());
        assert_eq!(allergies[1]["category"][0], "food");
        // An unknown severity and a type without a category are left out, not guessed.
        assert_eq!(allergies[2]["code"]["coding"][0]["code"], "1191");
        assert!(allergies[2].get("criticality").is_none());
        assert!(allergies[2].get("category").is_none());
        let text = serde_json::to_string(&r).expect("json");
        assert!(
            !text.contains("Penicillin") && !text.contains("Hives") && !text.contains("Peanuts")
        );
    }

    #[test]
    fn orders_map_to_service_requests_and_each_spm_to_a_specimen_of_its_order() {
        let oml = mapped(
            "MSH|^~\\&|LIS|L|GW|CLINIC|2026||OML^O33^OML_O33|M6|P|2.5.1\r\
             PID|1||MRN-1^^^HOSP^MR||Doe^John\r\
             SPM|1|S-1^F-S1||BLD^Whole blood^HL70487|||||||||||||20261124090000+0100|20261124093000+0100||N|RH^Hemolysis^HL70490|||HEM\r\
             ORC|NW|O-1|F-1||IP\r\
             OBR|1|O-1|F-1|2345-7^Glucose^LN\r\
             SPM|2|S-2||SER\r\
             ORC|NW|O-2\r\
             OBR|2|O-2||4548-4^HbA1c^LN",
        );
        let of = |kind: &str| -> Vec<&Value> {
            oml.iter().filter(|r| r["resourceType"] == kind).collect()
        };
        let requests = of("ServiceRequest");
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0]["identifier"][0]["value"], "O-1");
        assert_eq!(requests[0]["status"], "active", "ORC-5 IP");
        assert_eq!(requests[0]["intent"], "order");
        assert_eq!(requests[1]["code"]["coding"][0]["code"], "4548-4");
        let specimens = of("Specimen");
        assert_eq!(
            *specimens[0],
            json!({
                "resourceType": "Specimen",
                "identifier": [
                    {"value": "S-1", "type": {"coding": [{"system": IDENTIFIER_TYPE, "code": "PLAC"}]}},
                    {"value": "F-S1", "type": {"coding": [{"system": IDENTIFIER_TYPE, "code": "FILL"}]}}
                ],
                "type": {"coding": [{"code": "BLD", "display": "Whole blood"}]},
                "collection": {"collectedDateTime": "2026-11-24T09:00:00+01:00"},
                "receivedTime": "2026-11-24T09:30:00+01:00",
                "status": "unsatisfactory",
                "extension": [{
                    "url": SPECIMEN_REJECT_EXTENSION,
                    "valueCodeableConcept": {"coding": [{"code": "RH", "system": SPECIMEN_REJECT_SYSTEM}]}
                }],
                "condition": [{"coding": [{"code": "HEM", "system": SPECIMEN_CONDITION_SYSTEM}]}],
                "request": [{"identifier": {"value": "O-1"}}],
                "subject": {"identifier": {"value": "MRN-1"}}
            })
        );
        assert_eq!(specimens[1]["request"][0]["identifier"]["value"], "O-2");
        assert!(specimens[1].get("status").is_none());
    }

    #[test]
    fn a_specimen_without_its_id_or_type_or_with_a_bad_time_does_not_conform() {
        let check = |spm: &str| {
            nonconforming(
                &hl7_2::parse(&format!(
                    "MSH|^~\\&|LIS|L|GW|C|2026||OUL^R22|M7|P|2.5.1\rPID|1||MRN-1\rSPM|1|S-1||BLD\r{spm}"
                ))
                .expect("parse"),
            )
        };
        assert_eq!(check("SPM|2|S-2||SER|||||||||||||20261124"), None);
        assert_eq!(
            check("SPM|2|||SER").as_deref(),
            Some("SPM 2: SPM-2 (specimen id) is empty")
        );
        assert_eq!(
            check("SPM|2|S-2|").as_deref(),
            Some("SPM 2: SPM-4 (specimen type) is empty")
        );
        assert_eq!(
            check("SPM|2|S-2||SER|||||||||||||20261345").as_deref(),
            Some("SPM 2: SPM-17 (collection time) is not a date and time")
        );
    }

    #[test]
    fn conversions_refuse_what_they_cannot_read() {
        assert_eq!(date("19800215").as_deref(), Some("1980-02-15"));
        assert_eq!(date("198002").as_deref(), Some("1980-02"));
        assert_eq!(date("19801315"), None);
        assert_eq!(date("19x0"), None);
        assert_eq!(
            date_time("202611240930").as_deref(),
            Some("2026-11-24"),
            "no zone: date only"
        );
        assert_eq!(
            date_time("20261124093015+0100").as_deref(),
            Some("2026-11-24T09:30:15+01:00")
        );
        assert_eq!(date_time("20261124253015+0100"), None);
        assert_eq!(
            convert("X", Conv::Code(ADMINISTRATIVE_SEX)),
            None,
            "unmapped codes are left out"
        );
        assert_eq!(convert("\"\"", Conv::Text), None, "a v2 null sets nothing");
        assert_eq!(convert("abc", Conv::Integer), None);
        let m = mapped("MSH|^~\\&|A||||1||RRE^O12|1|P|2.5\rPID|1||X");
        assert!(m.is_empty(), "order acknowledgements are not mapped: {m:?}");
        assert_eq!(convert("1e999", Conv::Decimal), None);
        assert_eq!(convert("-0.5", Conv::Decimal), Some(json!(-0.5)));
    }
}
