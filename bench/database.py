"""The bench's own database on the DATABASE_URL server: created, migrated and filled with the lab
data set when missing (or on --regenerate). Runs before Django is set up for the bench database
where it has to (creating and dropping happen from the server's `postgres` database)."""

from __future__ import annotations

import json
import os
import re
import time

import environ
import psycopg

NAME_OK = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def default_name(fraction: float) -> str:
    """`allotment_bench` for the full lab; its own database for each smaller fraction, so a quick
    run never replaces the full data set."""
    return derived_name("allotment_bench", fraction)


def derived_name(name: str, fraction: float) -> str:
    """A smaller fraction's database beside `name` (the largest fraction's), e.g. x_f0_1."""
    if fraction >= 1:
        return name
    return name + "_f" + f"{fraction:g}".replace(".", "_").replace("-", "_")


def _server_params() -> dict:
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/allotment")
    config = environ.Env.db_url_config(url)
    params = {
        "host": config.get("HOST") or None,
        "port": config.get("PORT") or None,
        "user": config.get("USER") or None,
        "password": config.get("PASSWORD") or None,
        "dbname": "postgres",
        "autocommit": True,
    }
    return {k: v for k, v in params.items() if v is not None}


def _check(name: str) -> None:
    if not NAME_OK.match(name):
        raise SystemExit(f"bench: {name!r} is not a plain database name")


def exists(name: str) -> bool:
    _check(name)
    with psycopg.connect(**_server_params()) as conn:
        return bool(conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone())


def create(name: str) -> None:
    _check(name)
    with psycopg.connect(**_server_params()) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def drop(name: str) -> None:
    _check(name)
    with psycopg.connect(**_server_params()) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


META_TABLE = "bench_meta"


def prepare(*, name: str, fraction: float, seed: int, regenerate: bool, log) -> dict:
    """Make sure the database exists, is migrated and holds the lab data set; Django must already
    be set up with BENCH_DATABASE_NAME = name. Returns what the data set holds."""
    from django.core.management import call_command
    from django.db import connection, connections

    if regenerate and exists(name):
        connections.close_all()
        log(f"dropping database {name} (--regenerate)")
        drop(name)
    if not exists(name):
        log(f"creating database {name}")
        create(name)
    started = time.perf_counter()
    call_command("migrate", "--noinput", verbosity=0)
    log(f"migrated in {time.perf_counter() - started:.1f}s")
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key text PRIMARY KEY, value jsonb NOT NULL)"
        )
        cursor.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'dataset'")
        row = cursor.fetchone()
    if row is None:
        from devtools.labgen import Scale, generate_lab

        log(f"generating the lab data set (fraction {fraction:g}, seed {seed})")
        scale = Scale() if fraction >= 1 else Scale.fraction(fraction)
        result = generate_lab(scale=scale, seed=seed, prefix="lab")
        dataset = {**result, "fraction": fraction, "seed": seed}
        from psycopg.types.json import Jsonb

        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {META_TABLE} (key, value) VALUES ('dataset', %s)", [Jsonb(dataset)]
            )
        log(f"generated in {result['seconds']}s")
    else:
        dataset = row[0] if isinstance(row[0], dict) else json.loads(row[0])
        if abs(dataset.get("fraction", 1) - fraction) > 1e-9:
            raise SystemExit(
                f"bench: database {name} holds fraction {dataset.get('fraction')}, not "
                f"{fraction:g}; pass --regenerate or another --db"
            )
    return dataset
