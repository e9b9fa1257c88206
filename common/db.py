"""Aware datetimes go to PostgreSQL in UTC.

Python accepts UTC offsets up to ±23:59 and parses them from any ISO 8601 input (a query
filter, a form, a JSON body); PostgreSQL refuses offsets beyond ±15:59 with a DataError, which
would surface as a 500. Converting to UTC before sending changes no instant and removes the
problem for every query, whatever path the value came by."""

from datetime import UTC, datetime

from psycopg.types.datetime import DatetimeDumper


class UtcDatetimeDumper(DatetimeDumper):
    def dump(self, obj: datetime):
        if obj.tzinfo is not None:
            obj = obj.astimezone(UTC)
        return super().dump(obj)


def register_utc_dumper(sender, connection, **kwargs) -> None:
    if connection.vendor == "postgresql":
        connection.connection.adapters.register_dumper(datetime, UtcDatetimeDumper)
