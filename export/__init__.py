"""The model pipeline: train, evaluate honestly, convert to ONNX, verify parity, publish.

Modules, in pipeline order: ``data`` (fraud generator, breast cancer data), ``splits``,
``recipes`` (bundled models), ``evaluate``, ``onnx_export`` (conversion and parity), ``cost``,
``reference`` (drift statistics), ``repository`` (atomic, versioned publishing), ``pipeline``
(fitted model to published version), ``build`` (bundled models), ``byo`` (your own model) and
``cli`` (``tabserve export``). The server never imports this package.
"""
