"""Spin HTTP component (wasi:http/handler@0.3.0) in Python using spin:postgres/postgres@4.2.0.

GET /?q=<sql>&addr=<address>&mode=sync|async
  q     SQL to run (default: SELECT 1::int4 AS one, 'x'::text AS t)
  addr  address passed to connection.open (default: "lakebase:")
  mode  "sync" (default): connection.open + connection.query (row-set)
        "async": connection.open-async + connection.query-async (stream<row> + future)
Answers 200 {"columns": [...], "rows": [[...], ...]} or 500 {"error": "..."}.
"""
import base64
import dataclasses
import enum
import json
from urllib.parse import parse_qs, urlsplit

import componentize_py_async_support
from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world import byte_stream, result_option_wasi_http_types_fields_wasi_http_types_error_code_future
from wit_world.imports import postgres as pg
from wit_world.imports.wasi_http_types import Fields, Method_Get, Request, Response

DEFAULT_ADDR = "lakebase:"
DEFAULT_QUERY = "SELECT 1::int4 AS one, 'x'::text AS t"


def to_json(v):
    """Convert a WIT value (variant case / record / tuple / list / enum) to plain JSON data."""
    if isinstance(v, (bytes, bytearray)):
        return base64.b64encode(bytes(v)).decode()
    if isinstance(v, enum.Enum):
        return v.name.lower()
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    if isinstance(v, pg.DbValue_DbNull):
        return None
    if isinstance(v, pg.DbValue_Jsonb):
        try:
            return json.loads(bytes(v.value))
        except ValueError:
            return base64.b64encode(bytes(v.value)).decode()
    if dataclasses.is_dataclass(v):
        fields = [f.name for f in dataclasses.fields(v)]
        if fields == ["value"]:  # a variant case with a payload
            return to_json(v.value)
        if not fields:  # a variant case without a payload
            return type(v).__name__.split("_", 1)[-1].lower()
        return {f: to_json(getattr(v, f)) for f in fields}
    return v


def error_text(e) -> str:
    """Text of a spin:postgres `error` (or of any other exception)."""
    if isinstance(e, Err):
        e = e.value
    if isinstance(e, pg.Error_QueryFailed):
        q = e.value
        if isinstance(q, pg.QueryError_DbError):
            return "query failed: " + q.value.as_text
        return "query failed: " + str(q.value)
    kinds = {
        pg.Error_ConnectionFailed: "connection failed",
        pg.Error_BadParameter: "bad parameter",
        pg.Error_ValueConversionFailed: "value conversion failed",
        pg.Error_Other: "other",
    }
    for cls, label in kinds.items():
        if isinstance(e, cls):
            return f"{label}: {e.value}"
    return f"{type(e).__name__}: {e}"


def columns_json(columns):
    return [{"name": c.name, "type": to_json(c.data_type)} for c in columns]


def run_sync(addr: str, sql: str):
    with pg.Connection.open(addr) as conn:
        rs = conn.query(sql, [])
        return {"columns": columns_json(rs.columns), "rows": to_json(rs.rows)}


async def run_async(addr: str, sql: str):
    with await pg.Connection.open_async(addr) as conn:
        columns, rows_rx, done = await conn.query_async(sql, [])
        rows = []
        with rows_rx:
            while not rows_rx.writer_dropped:
                rows.extend(await rows_rx.read(64))
        with done:
            result = await done.read()
        if isinstance(result, Err):
            raise result
        return {"columns": columns_json(columns), "rows": to_json(rows)}


async def _write_body(tx, body: bytes):
    with tx:
        await tx.write_all(body)


def respond(status: int, obj) -> Response:
    body = json.dumps(obj).encode()
    headers = Fields.from_list([
        ("content-type", b"application/json"),
        ("content-length", str(len(body)).encode()),
    ])
    tx, rx = byte_stream()
    componentize_py_async_support.spawn(_write_body(tx, body))
    trailers = result_option_wasi_http_types_fields_wasi_http_types_error_code_future(lambda: Ok(None))[1]
    response = Response.new(headers, rx, trailers)[0]
    response.set_status_code(status)
    return response


class Handler(exports.Handler):
    async def handle(self, request: Request) -> Response:
        # Drop the request handle here, explicitly. The host completes the HTTP exchange only once
        # the guest has dropped its `request`, and an `Err` raised by an import sits in a
        # reference cycle (Err -> traceback -> binding frame -> Err) that also keeps every frame
        # of its traceback alive -- including this coroutine's, which holds `request`. Only the
        # cyclic GC would free it, and it does not run before the instance is torn down.
        with request:
            method = request.get_method()
            path = request.get_path_with_query() or "/"
        if not isinstance(method, Method_Get):
            return respond(405, {"error": "only GET is supported"})
        params = parse_qs(urlsplit(path).query)
        sql = params.get("q", [DEFAULT_QUERY])[0]
        addr = params.get("addr", [DEFAULT_ADDR])[0]
        mode = params.get("mode", ["sync"])[0]
        try:
            if mode == "async":
                result = await run_async(addr, sql)
            else:
                result = run_sync(addr, sql)
        except Exception as e:  # Err(pg.Error) and anything else
            return respond(500, {"error": error_text(e)})
        return respond(200, result)
