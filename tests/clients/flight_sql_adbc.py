"""Third-party Flight SQL clients against a Tessera endpoint, for the integration tests.

Usage: flight_sql_adbc.py HOST:PORT USER PASSWORD

Connects with ADBC (adbc-driver-flightsql, Basic credentials) and with pyarrow.flight, runs
what the test asks of each, and prints one JSON object with the results (the Rust test checks
them against the same queries run with arrow-rs's client). Any failure is raised, not hidden.
"""

import json
import sys

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight


def adbc(uri, user, password):
    out = {}
    with flightsql.connect(uri, db_kwargs={"username": user, "password": password}, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT query, count(*) AS n FROM motor_windows GROUP BY query ORDER BY query")
            out["windows_per_query"] = [[q, n] for q, n in cur.fetchall()]
            # A prepared statement with a parameter (ADBC prepares every execute).
            cur.execute("SELECT count(*) AS n FROM motor_windows WHERE motor_id = $1", parameters=("M1",))
            out["windows_of_m1"] = cur.fetchone()[0]
            cur.execute("SELECT name FROM continuous_queries ORDER BY name")
            out["queries"] = [r[0] for r in cur.fetchall()]
            try:
                cur.execute("SELECT count(*) FROM no_such_table")
                out["bad_sql"] = "accepted"
            except Exception as e:  # the driver's ProgrammingError carries the gRPC status
                out["bad_sql"] = str(e)
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        tables = []
        for catalog in objects:
            for schema in catalog["catalog_db_schemas"] or []:
                for table in schema["db_schema_tables"] or []:
                    tables.append(f'{catalog["catalog_name"]}.{schema["db_schema_name"]}.{table["table_name"]}')
        out["objects"] = sorted(tables)
    return out


def pyarrow_flight(host_port, user, password):
    client = flight.FlightClient(f"grpc://{host_port}")
    token = client.authenticate_basic_token(user, password)
    options = flight.FlightCallOptions(headers=[token])
    # A raw CommandStatementQuery (Flight SQL's protobuf Any), built by hand: pyarrow has no
    # Flight SQL layer, so this exercises the wire format itself.
    sql = b"SELECT count(*) AS n FROM alerts"
    command = _any("type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery", _field(1, sql))
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    return {"alerts": table.column(0)[0].as_py()}


def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number, payload):
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _any(type_url, value):
    return _field(1, type_url.encode()) + _field(2, value)


def main():
    host_port, user, password = sys.argv[1:4]
    result = {"adbc": adbc(f"grpc://{host_port}", user, password), "pyarrow": pyarrow_flight(host_port, user, password)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
