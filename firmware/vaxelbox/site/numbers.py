"""Phone numbers in the site file: accepted as E.164 or Swedish national form, stored as E.164."""

import phonenumbers

DEFAULT_REGION = "SE"


def to_e164(text: str, region: str = DEFAULT_REGION) -> str:
    """Normalise `text` to E.164 (`+46812345678`) or raise ValueError with a reason.

    National forms (`08-123 456 78`) are read in `region`; the number must be a
    valid, dialable number there, not just the right shape.
    """
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{text!r} is not a phone number ({exc._msg})") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"{text!r} is not a valid E.164 phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
