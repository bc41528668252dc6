"""What a job is: the typed config (derived from the backbone and method catalogs), suite files
expanded into named jobs, the config hash that identifies a job, and where project state lives.

The config vocabulary that ``analysis`` and ``orchestrator`` share; it imports only the torch-free
catalogs of ``backbones`` and ``methods``.
"""
from jobspec.errors import ConfigError
from jobspec.expand import BUILTIN_SMOKE, expand_jobs, job_from_dict, parse_overrides
from jobspec.home import PROJECT_ROOT, resolab_home
from jobspec.hashing import NOT_HASHED, config_hash, hashed_part, training_hash, training_hash_of_params
from jobspec.naming import Job
from jobspec.schema import (VALID_KEYS, DataConfig, EvalConfig, JobConfig, MethodConfig, ModelConfig, ResourcesConfig,
                            SyntheticConfig, TrainConfig)
from jobspec.suite import Suite, load_suite
from jobspec.tree import flatten, nest, param_value

__all__ = [
    "BUILTIN_SMOKE", "NOT_HASHED", "PROJECT_ROOT", "VALID_KEYS", "ConfigError", "DataConfig", "EvalConfig", "Job",
    "JobConfig", "MethodConfig", "ModelConfig", "ResourcesConfig", "Suite", "SyntheticConfig", "TrainConfig",
    "config_hash", "expand_jobs", "flatten", "hashed_part", "job_from_dict", "load_suite",
    "nest", "param_value", "parse_overrides", "resolab_home", "training_hash",
    "training_hash_of_params",
]
