"""Response caching: an in-process LRU and Redis, looked up once per batch, failing open.

Modules, one concern each:

* ``base``: the ``CacheBackend`` contract (``get_many``/``set_many``/``close``) and call outcomes.
* ``memory``: the in-process LRU (entries and bytes bound, TTL).
* ``redis``: the shared tier (timeouts, fail open, circuit breaker from ``breaker``).
* ``tiered``: memory then Redis, promotion, flush.
* ``keys`` and ``generations``: what a key is made of, and how a flush changes it.
* ``batch``: ``ModelScoreCache``, the per-model-version object the batcher calls.
* ``metrics``: the Prometheus metrics. ``factory``: built from settings (and which models are
  worth caching). ``measure``: the micro-measurements behind those rules.
* ``extension``: ``CacheExtension``, how ``tabserve serve`` runs all this; ``routes``: the flush
  route (``POST /admin/models/{name}/cache/flush``).
"""

from server.cache.base import CacheBackend, Outcome
from server.cache.batch import ModelScoreCache
from server.cache.factory import build_cache, build_model_cache, model_ttl_s
from server.cache.generations import FlushFailed
from server.cache.memory import MemoryCache
from server.cache.redis import RedisCache
from server.cache.tiered import TieredCache

__all__ = [
    "CacheBackend",
    "FlushFailed",
    "MemoryCache",
    "ModelScoreCache",
    "Outcome",
    "RedisCache",
    "TieredCache",
    "build_cache",
    "build_model_cache",
    "model_ttl_s",
]
