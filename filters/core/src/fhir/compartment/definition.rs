//! FHIR R4 `CompartmentDefinition/patient` as data: for each resource type, the search
//! parameters that put a resource in a patient's compartment, and the element paths those
//! parameters search (from the R4 `SearchParameter` expressions).

/// (resource type, [(search parameter, element path)]). Element paths are dot-separated
/// and walk through arrays. Source: http://hl7.org/fhir/R4/compartmentdefinition-patient.html
/// Types whose membership expression needs `resolve()` on a polymorphic target (AuditEvent)
/// are left out: the guard cannot decide them safely.
pub const PATIENT_COMPARTMENT: &[(&str, &[(&str, &str)])] = &[
    ("Account", &[("subject", "subject")]),
    ("AdverseEvent", &[("subject", "subject")]),
    (
        "AllergyIntolerance",
        &[
            ("patient", "patient"),
            ("recorder", "recorder"),
            ("asserter", "asserter"),
        ],
    ),
    ("Appointment", &[("actor", "participant.actor")]),
    ("AppointmentResponse", &[("actor", "actor")]),
    ("Basic", &[("patient", "subject"), ("author", "author")]),
    // Not in R4's CompartmentDefinition: a Binary's link to a patient is its
    // `securityContext` (R4 binary.html "Security"); only `Patient/<pid>` itself is proven.
    ("Binary", &[("securityContext", "securityContext")]),
    ("BodyStructure", &[("patient", "patient")]),
    (
        "CarePlan",
        &[
            ("patient", "subject"),
            ("performer", "activity.detail.performer"),
        ],
    ),
    (
        "CareTeam",
        &[
            ("patient", "subject"),
            ("participant", "participant.member"),
        ],
    ),
    ("ChargeItem", &[("subject", "subject")]),
    ("Claim", &[("patient", "patient"), ("payee", "payee.party")]),
    ("ClaimResponse", &[("patient", "patient")]),
    ("ClinicalImpression", &[("subject", "subject")]),
    (
        "Communication",
        &[
            ("subject", "subject"),
            ("sender", "sender"),
            ("recipient", "recipient"),
        ],
    ),
    (
        "CommunicationRequest",
        &[
            ("subject", "subject"),
            ("sender", "sender"),
            ("recipient", "recipient"),
            ("requester", "requester"),
        ],
    ),
    (
        "Composition",
        &[
            ("subject", "subject"),
            ("author", "author"),
            ("attester", "attester.party"),
        ],
    ),
    (
        "Condition",
        &[("patient", "subject"), ("asserter", "asserter")],
    ),
    ("Consent", &[("patient", "patient")]),
    (
        "Coverage",
        &[
            ("policy-holder", "policyHolder"),
            ("subscriber", "subscriber"),
            ("beneficiary", "beneficiary"),
            ("payor", "payor"),
        ],
    ),
    ("CoverageEligibilityRequest", &[("patient", "patient")]),
    ("CoverageEligibilityResponse", &[("patient", "patient")]),
    ("DetectedIssue", &[("patient", "patient")]),
    (
        "DeviceRequest",
        &[("subject", "subject"), ("performer", "performer")],
    ),
    ("DeviceUseStatement", &[("subject", "subject")]),
    ("DiagnosticReport", &[("subject", "subject")]),
    (
        "DocumentManifest",
        &[
            ("subject", "subject"),
            ("author", "author"),
            ("recipient", "recipient"),
        ],
    ),
    (
        "DocumentReference",
        &[("subject", "subject"), ("author", "author")],
    ),
    ("Encounter", &[("patient", "subject")]),
    ("EnrollmentRequest", &[("subject", "candidate")]),
    ("EpisodeOfCare", &[("patient", "patient")]),
    (
        "ExplanationOfBenefit",
        &[("patient", "patient"), ("payee", "payee.party")],
    ),
    ("FamilyMemberHistory", &[("patient", "patient")]),
    ("Flag", &[("patient", "subject")]),
    ("Goal", &[("patient", "subject")]),
    ("Group", &[("member", "member.entity")]),
    ("ImagingStudy", &[("patient", "subject")]),
    ("Immunization", &[("patient", "patient")]),
    ("ImmunizationEvaluation", &[("patient", "patient")]),
    ("ImmunizationRecommendation", &[("patient", "patient")]),
    (
        "Invoice",
        &[
            ("subject", "subject"),
            ("patient", "subject"),
            ("recipient", "recipient"),
        ],
    ),
    ("List", &[("subject", "subject"), ("source", "source")]),
    ("MeasureReport", &[("patient", "subject")]),
    ("Media", &[("subject", "subject")]),
    (
        "MedicationAdministration",
        &[
            ("patient", "subject"),
            ("performer", "performer.actor"),
            ("subject", "subject"),
        ],
    ),
    (
        "MedicationDispense",
        &[
            ("subject", "subject"),
            ("patient", "subject"),
            ("receiver", "receiver"),
        ],
    ),
    ("MedicationRequest", &[("subject", "subject")]),
    ("MedicationStatement", &[("subject", "subject")]),
    ("MolecularSequence", &[("patient", "patient")]),
    ("NutritionOrder", &[("patient", "patient")]),
    (
        "Observation",
        &[("subject", "subject"), ("performer", "performer")],
    ),
    // The Patient resource is in its own compartment by id (see `resource_in_compartment`).
    ("Patient", &[("link", "link.other")]),
    ("Person", &[("patient", "link.target")]),
    (
        "Procedure",
        &[("patient", "subject"), ("performer", "performer.actor")],
    ),
    ("Provenance", &[("patient", "target")]),
    (
        "QuestionnaireResponse",
        &[("subject", "subject"), ("author", "author")],
    ),
    ("RelatedPerson", &[("patient", "patient")]),
    (
        "RequestGroup",
        &[
            ("subject", "subject"),
            ("participant", "action.participant"),
        ],
    ),
    ("ResearchSubject", &[("individual", "individual")]),
    ("RiskAssessment", &[("subject", "subject")]),
    ("Schedule", &[("actor", "actor")]),
    (
        "ServiceRequest",
        &[("subject", "subject"), ("performer", "performer")],
    ),
    ("Specimen", &[("subject", "subject")]),
    ("SupplyDelivery", &[("patient", "patient")]),
    ("SupplyRequest", &[("subject", "deliverTo")]),
    ("VisionPrescription", &[("patient", "patient")]),
];

/// Compartment parameters that `fhir.compartment.preset: "subject_only"` keeps: the ones naming
/// the record's own patient (`subject`, `patient`, ...), not the actors around it (`performer`,
/// `author`, `member`, `actor`, ...). Patient keeps `link` and Binary its `securityContext`.
pub const SUBJECT_ONLY: &[&str] = &[
    "subject",
    "patient",
    "beneficiary",
    "individual",
    "link",
    "securityContext",
];
