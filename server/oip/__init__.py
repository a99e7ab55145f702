"""The Open Inference Protocol (KServe V2) beyond JSON: its gRPC service and binary tensors.

``grpc_predict_v2.proto`` is the protocol's gRPC definition; ``grpc_predict_v2_pb2*.py`` are
generated from it (``python -m server.oip.regenerate``). ``tensors`` converts tensors between
the protocol's datatypes and numpy; ``schema`` states a model's tensors and checks requests
against them; ``grpc_service`` serves ``inference.GRPCInferenceService`` on the app's event loop
through the same :class:`server.core.Core` as HTTP; ``grpc_errors`` maps domain errors to gRPC
status codes; ``binary`` is the REST binary tensor extension.
"""
