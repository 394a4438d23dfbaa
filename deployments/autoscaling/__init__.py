"""Custom autoscaling for Ray Serve: replica policies, warmers, and the class Serve's controller runs.

`policies` (what the load asks for), `warmers` (replica floors from a schedule or a learned arrivals model),
`serve_policy` (the `autoscaling_config.policy` class that combines them), `stats` (what replicas report
through `record_autoscaling_stats`) and `config` (the pydantic settings that become the policy's kwargs).
"""
