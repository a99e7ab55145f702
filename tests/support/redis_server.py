"""A real Redis-protocol server process for the tests (the helper lives in ``loadtests.redisproc``,
so ``tabserve bench`` can start one too). No fakes."""

from loadtests.redisproc import RedisProcess, find_redis_binary

__all__ = ["RedisProcess", "find_redis_binary"]
