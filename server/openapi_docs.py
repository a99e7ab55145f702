"""The OpenAPI document and its page: request bodies, error answers, the admin scheme, examples.

- The predict, infer and feedback handlers decode the body themselves with a precompiled msgspec
  decoder instead of a Litestar ``data`` parameter, so Litestar cannot infer their request body;
  the operation classes of :func:`with_json_body` put it back into the generated schema.
- :func:`document` completes the generated document once the models are loaded: every operation
  lists each error status it can answer, as ``application/problem+json`` (the ``Problem`` schema);
  admin operations require the ``adminBearer`` scheme; the predict and infer bodies get one example
  per served model, built from its model card (a row of training medians), so each example is
  valid for the model it names.
- :func:`swagger_ui` is the ``/schema`` page: Swagger UI from the pinned ``flask-swagger-ui``
  package (only its static files are read; Flask is never imported), served under
  ``/schema/assets``, so the page works offline and does not change under us.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    Example,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)

from server.modelcard import ModelCard
from server.oip.schema import model_inputs

_VALUE = Schema(
    one_of=[
        Schema(type=OpenAPIType.NUMBER),
        Schema(type=OpenAPIType.STRING),
        Schema(type=OpenAPIType.BOOLEAN),
        Schema(type=OpenAPIType.NULL),
    ],
    description="A column's value: a number (numeric column), a category (a string, or a "
    "whole number for int categories), true/false (boolean column), or null, a missing value "
    "(only where the column allows it). GET /v1/models/{name} lists each column's kind.",
)

PREDICT_BODY = Schema(
    type=OpenAPIType.OBJECT,
    required=["instances"],
    properties={
        "instances": Schema(
            type=OpenAPIType.ARRAY,
            description="Rows: each a list of column values in the model's order, or an object "
            "mapping every column name to its value.",
            items=Schema(
                one_of=[
                    Schema(type=OpenAPIType.ARRAY, items=_VALUE),
                    Schema(type=OpenAPIType.OBJECT, additional_properties=_VALUE),
                ]
            ),
        )
    },
)

INFER_BODY = Schema(
    type=OpenAPIType.OBJECT,
    required=["inputs"],
    description="Open Inference Protocol (KServe V2) inference request.",
    properties={
        "id": Schema(type=OpenAPIType.STRING),
        "parameters": Schema(type=OpenAPIType.OBJECT),
        "inputs": Schema(
            type=OpenAPIType.ARRAY,
            description="An all-numeric model: exactly one FP32 tensor of shape [rows, "
            "n_features]. A model with typed columns: one input per column, named as the "
            "column, shape [rows, 1] (FP32 numbers, BOOL booleans, BYTES string categories, "
            "INT64 int categories), as MLServer's PandasCodec sends a table.",
            items=Schema(
                type=OpenAPIType.OBJECT,
                required=["name", "shape", "datatype", "data"],
                properties={
                    "name": Schema(type=OpenAPIType.STRING),
                    "shape": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.INTEGER)),
                    "datatype": Schema(type=OpenAPIType.STRING),
                    "data": Schema(
                        type=OpenAPIType.ARRAY,
                        description="Row-major values, flat or nested.",
                        items=Schema(),
                    ),
                    "parameters": Schema(type=OpenAPIType.OBJECT),
                },
            ),
        ),
        "outputs": Schema(
            type=OpenAPIType.ARRAY,
            description="Outputs to return: a classifier's 'probabilities' (FP32 [n, n_classes]) "
            "and/or 'label' (INT64 or BYTES [n]), a regressor's 'value' (FP32 [n]); all when "
            "absent.",
            items=Schema(
                type=OpenAPIType.OBJECT,
                required=["name"],
                properties={"name": Schema(type=OpenAPIType.STRING)},
            ),
        ),
    },
)


FEEDBACK_BODY = Schema(
    type=OpenAPIType.OBJECT,
    required=["label"],
    additional_properties=False,
    description="The true label of one served row, named by request id and row index, or by "
    "row hash (exactly one of request_id and row_hash).",
    properties={
        "label": Schema(
            one_of=[Schema(type=OpenAPIType.NUMBER), Schema(type=OpenAPIType.STRING)],
            description="One of the model's classes as trained (an int or a string), or a "
            "regressor's target (a number).",
        ),
        "request_id": Schema(
            one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)],
            description="The request id the prediction was answered with.",
        ),
        "row": Schema(
            type=OpenAPIType.INTEGER,
            description="Row index within that request (0 for single-row requests).",
        ),
        "row_hash": Schema(
            one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)],
            description="blake2b (16-byte digest, hex) of the row's little-endian float32 bytes.",
        ),
    },
)


ROUTING_BODY = Schema(
    type=OpenAPIType.OBJECT,
    additional_properties=False,
    description="A routing change: the version it is about and why (kept in the model's "
    "routing events). An empty body is {}.",
    properties={
        "version": Schema(
            one_of=[Schema(type=OpenAPIType.INTEGER), Schema(type=OpenAPIType.NULL)],
            description="shadow: the version to shadow (null: stop); promote: the version to "
            "answer (null or absent: the shadow); rollback: not used.",
        ),
        "reason": Schema(type=OpenAPIType.STRING, description="Why, for the routing events."),
    },
)


def with_json_body(schema: Schema, description: str) -> type[Operation]:
    """An Operation class whose request body is ``schema`` (application/json, required)."""

    @dataclass
    class _Operation(Operation):
        def __post_init__(self) -> None:
            if self.request_body is None:
                self.request_body = RequestBody(
                    content={"application/json": OpenAPIMediaType(schema=schema)},
                    description=description,
                    required=True,
                )

    return _Operation


# --- error answers -------------------------------------------------------------------------------

PROBLEM_JSON = "application/problem+json"
ADMIN_SCHEME = "adminBearer"

PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    description="RFC 9457 problem details: the body of every error answer.",
    required=["type", "title", "status", "detail", "request_id", "error"],
    properties={
        "type": Schema(type=OpenAPIType.STRING, description="urn:tabserve:problem:<slug>"),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING, description="What went wrong, for a person."),
        "request_id": Schema(type=OpenAPIType.STRING),
        "error": Schema(
            type=OpenAPIType.STRING,
            description="The detail again (the member Open Inference Protocol clients read).",
        ),
    },
)

_ERRORS: dict[int, str] = {
    400: "Malformed request: body, parameters or headers.",
    401: "Missing or wrong admin bearer token.",
    404: "No such model or version (admin routes: admin endpoints are disabled).",
    408: "The request's headers or body did not arrive in time; the connection is closed.",
    413: "Body over the size limit (refused before reading when Content-Length says so), or "
    "too many rows; the connection is closed when the body was not fully read.",
    409: "The routing change cannot apply: no shadow to promote, no earlier primary to roll "
    "back to, a shadow that cannot score the primary's rows, or a repository that cannot be "
    "written.",
    415: "The body is not declared as JSON.",
    429: "Too many failed admin authentications from this client; see Retry-After.",
    500: "Unexpected server error (quote the request id).",
    503: "Overloaded (queue full), model not ready, too many connections, or shutting down; "
    "see Retry-After.",
    504: "The request's deadline passed before it ran.",
}


def _statuses(path: str, operation: Operation) -> list[int]:
    """Every error status the operation can answer (the app's and the connection layer's).

    The connection layer answers any request, before routing: 400 (malformed HTTP), 408 (read
    timeout), 413 (a Content-Length over the limit, whatever the method) and 503 (connection cap,
    shutdown)."""
    codes = {400, 408, 413, 500, 503}
    if "{" in path:
        codes.add(404)
    if operation.request_body is not None:
        codes.add(415)
    if path.endswith(("/predict", "/infer")):
        codes.add(504)
    if path.startswith("/admin/"):
        codes |= {401, 404, 429}
    if path.startswith("/admin/models/") and path.endswith(("/shadow", "/promote", "/rollback")):
        codes.add(409)
    return sorted(codes)


def _error_response(status: int) -> OpenAPIResponse:
    headers: dict[str, OpenAPIHeader | Reference] = {
        "X-Request-ID": OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING))
    }
    if status in {429, 503}:
        headers["Retry-After"] = OpenAPIHeader(
            schema=Schema(type=OpenAPIType.INTEGER), description="Seconds to wait."
        )
    if status == 401:
        headers["WWW-Authenticate"] = OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING))
    return OpenAPIResponse(
        description=_ERRORS[status],
        headers=headers,
        content={PROBLEM_JSON: OpenAPIMediaType(schema=Reference("#/components/schemas/Problem"))},
    )


def _operations(openapi: OpenAPI) -> list[tuple[str, str, Operation]]:
    found = []
    for path, item in (openapi.paths or {}).items():
        for method in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
            operation = getattr(item, method, None)
            if isinstance(operation, Operation):
                found.append((method, path, operation))
    return found


def document(openapi: OpenAPI, cards: Sequence[ModelCard]) -> None:
    """Complete the generated document (see the module docstring); call once, before it is
    first served."""
    components = openapi.components
    if not isinstance(components, Components):  # pragma: no cover - Litestar always sets one
        components = openapi.components = Components()
    components.schemas["Problem"] = PROBLEM_SCHEMA
    components.security_schemes = {
        **(components.security_schemes or {}),
        ADMIN_SCHEME: SecurityScheme(
            type="http",
            scheme="bearer",
            description="The admin token (TABSERVE_ADMIN_TOKEN or --admin-token-file); "
            "admin endpoints answer 404 when none is configured.",
        ),
    }
    for _method, path, operation in _operations(openapi):
        responses = operation.responses if operation.responses is not None else {}
        for status in _statuses(path, operation):
            # Litestar's own 400 (its validation body) is replaced: tabserve answers problem+json.
            responses[str(status)] = _error_response(status)
        operation.responses = responses
        if path.startswith("/admin/"):
            operation.security = [{ADMIN_SCHEME: []}]
        body = operation.request_body
        if isinstance(body, RequestBody) and cards:
            media = body.content.get("application/json")
            if media is not None and path.endswith("/predict"):
                media.examples = {
                    key: example for card in cards for key, example in _predict_examples(card)
                }
            elif media is not None and path.endswith("/infer"):
                media.examples = {card.name: _infer_example(card) for card in cards}


def example_row(card: ModelCard) -> list[float | str | bool]:
    """A valid row for ``card``: a numeric column's training median (its middle quantile edge),
    a boolean column's too (as true or false), a categorical column's most frequent category
    in training (the user's value: a string, or an int)."""
    row: list[float | str | bool] = []
    for column, feature in zip(card.input.columns, card.reference.features, strict=True):
        if column.kind == "categorical":
            counts = feature.category_counts or [0]
            row.append(column.categories[max(range(len(counts)), key=counts.__getitem__)])
            continue
        edges = feature.histogram.bin_edges if feature.histogram is not None else []
        middle = float(f"{edges[len(edges) // 2]:.4g}") if edges else 0.0
        row.append(middle >= 0.5 if column.kind == "boolean" else middle)
    return row


def _predict_examples(card: ModelCard) -> list[tuple[str, Example]]:
    """Two examples for ``card``: its row as a list, and as an object (one form per request)."""
    row = example_row(card)
    names = card.input.feature_names
    return [
        (
            card.name,
            Example(
                summary=f"{card.name}: one row as a list of its {len(names)} features",
                value={"instances": [row]},
            ),
        ),
        (
            f"{card.name} (object)",
            Example(
                summary=f"{card.name}: one row as an object naming each feature",
                value={"instances": [dict(zip(names, row, strict=True))]},
            ),
        ),
    ]


def _infer_example(card: ModelCard) -> Example:
    row = example_row(card)
    tensors = model_inputs(card)
    if len(tensors) == 1 and tensors[0].name == card.input.name:
        inputs = [
            {"name": card.input.name, "shape": [1, len(row)], "datatype": "FP32", "data": row}
        ]
        summary = f"{card.name}: one row ({len(row)} features)"
    else:  # one input per column, as PandasCodec sends a table
        inputs = [
            {"name": t.name, "shape": [1, 1], "datatype": t.datatype, "data": [value]}
            for t, value in zip(tensors, row, strict=True)
        ]
        summary = f"{card.name}: one row, one input per column ({len(row)} columns)"
    return Example(summary=summary, value={"inputs": inputs})


# --- the page --------------------------------------------------------------------------------

ASSETS_PATH = "/schema/assets"
SWAGGER_UI_PACKAGE = "flask_swagger_ui"


def swagger_ui_assets() -> Path:
    """The directory of Swagger UI's static files inside the installed ``flask-swagger-ui``
    (found without importing the package, which would import Flask)."""
    spec = importlib.util.find_spec(SWAGGER_UI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{SWAGGER_UI_PACKAGE} is not installed (pip install -e .)")
    return Path(next(iter(spec.submodule_search_locations))) / "dist"


def swagger_ui(**kwargs: Any) -> SwaggerRenderPlugin:
    """Swagger UI at ``/schema`` with its assets served by this server (no CDN, no favicon)."""
    return SwaggerRenderPlugin(
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon="",
        path="/swagger",
        **kwargs,
    )
