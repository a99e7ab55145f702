"""The harness itself: the Redis process starts, answers, survives pause/resume and restarts."""

from __future__ import annotations

from tests.support.redis_server import RedisProcess


def test_redis_process_answers_and_restarts(redis_process: RedisProcess) -> None:
    assert redis_process.command("SET", "k", "v") == b"+OK\r\n"
    assert redis_process.command("GET", "k") == b"$1\r\nv\r\n"
    redis_process.kill()
    assert not redis_process.ping()
    redis_process.start()
    assert redis_process.ping()
    assert redis_process.command("GET", "k") == b"$-1\r\n"  # no persistence: a crash forgets
