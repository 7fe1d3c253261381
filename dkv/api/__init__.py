"""The public APIs: REST (Klein) and gRPC. They parse, validate and map errors; no logic."""
