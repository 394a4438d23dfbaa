"""The lowest layer: what serving (`deployments`) and the event pipelines (`pipelines`) share.

Record schemas and topics (the Kafka contracts), Kafka settings and admin, the retry policy, the
inference-log publisher, the feature stores, chunking, the embedding model, the vector stores, where models
and local state live. It imports nothing from `deployments` or `pipelines`; see ARCHITECTURE.md.
"""
