"""Local services started by the project: S3 (SeaweedFS `weed mini`), MLflow tracking/registry, Prefect server.

    from ovt.services import ServiceManager, client_env
    mgr = ServiceManager()            # settings from OVT_* / AWS_* environment, state in <repo>/.state
    mgr.up()                          # s3 -> buckets -> mlflow -> prefect; no-op for healthy services
    mgr.status()                      # [ServiceStatus(name, pid, url, healthy, log), ...]
    env = client_env()                # AWS_*, MLFLOW_TRACKING_URI, PREFECT_API_URL, offline switches
    mgr.down()                        # reverse order; waits for each process tree to exit

Command line: `python -m ovt.services up|down|status|env|logs`.
"""

from ovt.services.config import ServiceConfigError, ServiceSettings, load_settings
from ovt.services.definitions import SERVICE_NAMES, ensure_buckets, s3_client
from ovt.services.manager import (ServiceManager, ServiceStatus, StartResult, client_env, down, status, up)
from ovt.services.process import ServiceError

__all__ = [
    "SERVICE_NAMES", "ServiceConfigError", "ServiceError", "ServiceManager", "ServiceSettings", "ServiceStatus",
    "StartResult", "client_env", "down", "ensure_buckets", "load_settings", "s3_client", "status", "up",
]
