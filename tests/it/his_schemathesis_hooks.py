"""schemathesis hooks for tests/it/his_schemathesis.rs.

They accept exactly the refusals of schema-valid requests that JSON Schema
cannot prevent, and nothing else: each is a `422` with its documented code and
field (docs/his-api.md), decided by a rule between fields or by what the store
holds, never by the shape of one value. Any other refusal of a schema-valid
request still fails the run.
"""
import schemathesis

# Rules between two fields of one body, by the field the server names.
RULES_BETWEEN_FIELDS = {
    # The body's id names another record than the path's.
    ("INVALID_INPUT", "hisId"),
    ("INVALID_INPUT", "practitionerId"),
    # An end not after its start; a last day before the first.
    ("INVALID_INPUT", "end"),
    ("INVALID_INPUT", "effectiveTo"),
    # A local start on 29 February of a common year.
    ("INVALID_INPUT", "start"),
    # An appointment keeps its service.
    ("INVALID_INPUT", "serviceId"),
    # Two exceptions of one schedule with the same hisId.
    ("INVALID_INPUT", "exceptions.hisId"),
}

# Booking rules: they depend on the store's records and the clock.
STATE_RULES = {
    "IN_THE_PAST",
    "INSIDE_MINIMUM_NOTICE",
    "BEYOND_BOOKING_WINDOW",
    "OUTSIDE_AVAILABILITY",
    "PRACTITIONER_INACTIVE",
    "SERVICE_INACTIVE",
    "SERVICE_NOT_OFFERED",
    "CHECK_IN_TOO_EARLY",
    "NOT_STARTED_YET",
}


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keep every failure but a schema-valid request refused by a rule."""
    if failure.code != "ST202" or response.status_code != 422:
        return True
    try:
        problem = response.json()
    except ValueError:
        return True
    code, field = problem.get("code"), problem.get("field")
    detail = problem.get("detail") or ""
    if code in STATE_RULES:
        return False
    if (code, field) not in RULES_BETWEEN_FIELDS:
        return True
    if field in ("hisId", "practitionerId"):
        # Only the disagreement with the path; any other refusal of an id stays.
        return "but the path" not in detail
    if field == "start":
        # 29 February of a year that is not a leap year: a pattern cannot count years.
        return "-02-29T" not in detail
    if field == "serviceId":
        return "keeps its service" not in detail
    return False
