"""A real ``tabserve serve`` process for end-to-end tests: ``server.process.ServeProcess``.

with ServerProcess(models_dir, env={"TABSERVE_ADMIN_TOKEN": "t"}) as server:
    httpx.get(server.url + "/health/ready")
"""

from __future__ import annotations

from server.process import ServeProcess as ServerProcess

__all__ = ["ServerProcess"]
