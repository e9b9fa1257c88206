"""Input shapes every API shares: times that must carry a time zone and stay in range (PRODUCT.md
section 6), in bodies and in GET filters alike, and JSON bodies nested no deeper than a sane
depth. Bad input answers 400 with a message; it never reaches the database as a 500."""

from datetime import UTC, datetime

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_JSON_DEPTH = 32
ZONE_REQUIRED = "Give the time with a time zone, e.g. 2027-01-31T09:00:00Z or +02:00."
OUT_OF_RANGE = "This time is out of range: give a time between the years 1 and 9999 in UTC."


def _in_range(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as error:
        raise ValidationError(OUT_OF_RANGE) from error


class ZonedDateTimeField(serializers.DateTimeField):
    """A DateTimeField that refuses times without a zone instead of reading them as UTC (a
    researcher in California sending a local time would be 8 hours off), and times that leave
    the calendar once in UTC."""

    default_error_messages = {"naive": ZONE_REQUIRED, "overflow": OUT_OF_RANGE}

    def to_internal_value(self, value):
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None
            if parsed is not None and parsed.tzinfo is None:
                self.fail("naive")
        value = super().to_internal_value(value)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            self.fail("overflow")


class _ZonedFormField(django_filters.fields.IsoDateTimeField):
    def to_python(self, value):
        if isinstance(value, str) and value.strip():
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None
            if parsed is not None and parsed.tzinfo is None:
                raise forms.ValidationError(ZONE_REQUIRED, code="naive")
        result = super().to_python(value)
        return _in_range(result) if result is not None else None


class ZonedDateTimeFilter(django_filters.IsoDateTimeFilter):
    """A GET filter's time: ISO 8601 with a zone, in range, else 400 naming the parameter."""

    field_class = _ZonedFormField


def json_depth_exceeds(text: str | bytes, limit: int) -> bool:
    """Whether the JSON text nests arrays/objects deeper than `limit`, without parsing it
    (parsing is what recurses). Brackets inside strings do not count."""
    depth = 0
    in_string = escaped = False
    data = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    for char in data:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


class DepthLimitedJSONParser(JSONParser):
    """JSON bodies nested deeper than MAX_JSON_DEPTH answer 400: no resource of the API nests
    more than a few levels, and deep nesting made the parser recurse until it crashed."""

    def parse(self, stream, media_type=None, parser_context=None):
        body = stream.read() if stream is not None else b""
        if json_depth_exceeds(body, MAX_JSON_DEPTH):
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.")
        import io

        try:
            return super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError as error:
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.") from error
