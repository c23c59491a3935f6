"""Local services started by the project: S3 (SeaweedFS `weed mini`), MLflow tracking/registry, Prefect server.

    from ovt.services import ServiceManager, client_env
    mgr = ServiceManager()            # settings from OVT_* / AWS_* environment, state in <repo>/.state
    mgr.up()                          # s3 -> buckets -> mlflow -> prefect; no-op for healthy services
    mgr.status()                      # [ServiceStatus(name, pid, url, healthy, log), ...]
    env = client_env()                # AWS_*, MLFLOW_TRACKING_URI, PREFECT_API_URL, offline switches
    mgr.down()                        # reverse order; waits for each process tree to exit

Command line: `python -m ovt.services up|down|status|env|logs`.
"""

from __future__ import annotations

from ovt.lazy import lazy_exports

_EXPORTS = {
    "ServiceConfigError": "ovt.services.config",
    "ServiceSettings": "ovt.services.config",
    "load_settings": "ovt.services.config",
    "SERVICE_NAMES": "ovt.services.definitions",
    "ensure_buckets": "ovt.services.definitions",
    "s3_client": "ovt.services.definitions",
    "ServiceManager": "ovt.services.manager",
    "ServiceStatus": "ovt.services.manager",
    "StartResult": "ovt.services.manager",
    "client_env": "ovt.services.manager",
    "down": "ovt.services.manager",
    "status": "ovt.services.manager",
    "up": "ovt.services.manager",
    "ServiceError": "ovt.services.process",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
