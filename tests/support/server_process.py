"""A real ``tabserve serve`` process for end-to-end tests: ``loadtests.serveproc.ServeProcess``.

with ServerProcess(models_dir, env={"TABSERVE_ADMIN_TOKEN": "t"}) as server:
    httpx.get(server.url + "/health/ready")
"""

from __future__ import annotations

from loadtests.serveproc import ServeProcess as ServerProcess

__all__ = ["ServerProcess"]
