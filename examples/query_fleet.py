"""Query a Tessera node over Arrow Flight SQL with ADBC, as a Python user would.

    python3 -m venv venv && venv/bin/pip install adbc-driver-flightsql adbc-driver-manager pyarrow
    venv/bin/python examples/query_fleet.py --at 127.0.0.1:50051 --user analyst --password ...

Prints the tables the node serves, the newest alerts, and per-site window counts across the
fleet (the `fleet` schema spans every site when the node federates; each site computes its
part). Credentials go to the node's handshake (Basic), which answers with a bearer token.
"""

import argparse
import os

import adbc_driver_flightsql.dbapi as flightsql


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", default=os.environ.get("TESSERA__CLIENT__SQL", "127.0.0.1:50051"))
    parser.add_argument("--user", default=os.environ.get("TESSERA__CLIENT__USER", "analyst"))
    parser.add_argument("--password", default=os.environ.get("TESSERA__CLIENT__PASSWORD"))
    args = parser.parse_args()
    if not args.password:
        parser.error("give --password (or TESSERA__CLIENT__PASSWORD)")

    with flightsql.connect(f"grpc://{args.at}", db_kwargs={"username": args.user, "password": args.password}, autocommit=True) as conn:
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        for catalog in objects:
            for schema in catalog["catalog_db_schemas"] or []:
                names = ", ".join(t["table_name"] for t in schema["db_schema_tables"] or [])
                print(f'{catalog["catalog_name"]}.{schema["db_schema_name"]}: {names}')
        with conn.cursor() as cur:
            cur.execute("SELECT window_start, motor_id, query, state, score FROM alerts ORDER BY window_start DESC LIMIT 10")
            print("\nnewest alerts on this site:")
            print(cur.fetch_arrow_table().to_pandas().to_string(index=False) if _has_pandas() else cur.fetchall())
            schemas = {s["db_schema_name"] for c in objects for s in c["catalog_db_schemas"] or []}
            table = "fleet.motor_windows" if "fleet" in schemas else "motor_windows"
            # A prepared statement with a parameter: windows per query since a point in time.
            cur.execute(f"SELECT query, count(*) AS windows, max(score) AS worst FROM {table} "
                        "WHERE window_start >= now() - INTERVAL '1 hour' AND query <> $1 GROUP BY query ORDER BY query",
                        parameters=("",))
            print(f"\nwindows in the last hour ({table}):")
            for query, windows, worst in cur.fetchall():
                print(f"  {query:<24} {windows:>8} windows, worst score {worst}")


def _has_pandas():
    try:
        import pandas  # noqa: F401
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    main()
