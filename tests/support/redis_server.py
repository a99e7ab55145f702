"""A real Redis-protocol server process for the tests (the helper lives in ``server.redisproc``,
so ``tabserve bench`` can start one too). No fakes."""

from server.redisproc import RedisProcess, find_redis_binary

__all__ = ["RedisProcess", "find_redis_binary"]
