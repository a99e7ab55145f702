"""OpenAPI documentation for the handlers that read their body raw (for speed).

The predict handlers decode the body themselves with a precompiled msgspec decoder instead of a
Litestar ``data`` parameter, so Litestar cannot infer their request body; these operation classes
put it back into the generated schema.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

_NUMBER_OR_NULL = Schema(
    one_of=[Schema(type=OpenAPIType.NUMBER), Schema(type=OpenAPIType.NULL)],
    description="A feature value; null is a missing value (only for models that allow it).",
)

PREDICT_BODY = Schema(
    type=OpenAPIType.OBJECT,
    required=["instances"],
    properties={
        "instances": Schema(
            type=OpenAPIType.ARRAY,
            description="Rows: each a list of feature values in the model's order, or an object "
            "mapping every feature name to its value.",
            items=Schema(
                one_of=[
                    Schema(type=OpenAPIType.ARRAY, items=_NUMBER_OR_NULL),
                    Schema(type=OpenAPIType.OBJECT, additional_properties=_NUMBER_OR_NULL),
                ]
            ),
        )
    },
    examples=[{"instances": [[0.1, 2.0, 3.5]]}],
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
            description="Exactly one FP32 tensor of shape [rows, n_features].",
            items=Schema(
                type=OpenAPIType.OBJECT,
                required=["name", "shape", "datatype", "data"],
                properties={
                    "name": Schema(type=OpenAPIType.STRING),
                    "shape": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.INTEGER)),
                    "datatype": Schema(type=OpenAPIType.STRING, enum=["FP32", "FP64"]),
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
            description="Outputs to return: 'probabilities' (FP32 [n, n_classes]) and/or "
            "'label' (INT64 [n]); all when absent.",
            items=Schema(
                type=OpenAPIType.OBJECT,
                required=["name"],
                properties={"name": Schema(type=OpenAPIType.STRING)},
            ),
        ),
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
