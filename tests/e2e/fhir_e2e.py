"""The FHIR scope policy and patients of the end-to-end tests that run in front of the sample
FHIR API (tests/fhir_upstream/server.py): test_trailers.py, test_conditional_reads.py. The API
itself is the `api` fixture of conftest.py."""

AUD = "fhir-e2e"
ANNA, BJORN = "pat-anna", "pat-bjorn"


def policy_for(issuer, **fhir_over):
    fhir = {
        "base_path": "/fhir",
        "patient_claim": "patient",
        "resource_types": ["Patient", "Observation", "Condition", "MedicationRequest", "Encounter",
                           "DocumentReference", "Medication", "Practitioner"],
        "patient_shared_types": ["Medication"],
        "max_request_body_bytes": 65536,
    }
    fhir.update(fhir_over)
    return {
        "api": {"name": "fhir-e2e", "audience": AUD},
        "issuers": [{"issuer": issuer.iss, "jwks": issuer.jwks()}],
        "token": {"schemes": ["DPoP", "Bearer"]},
        "routes": [{"path_prefix": "/fhir/metadata", "methods": ["GET"], "require": "none"}],
        "fhir": fhir,
    }
