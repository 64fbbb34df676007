"""Per-tenant request rate limiting: a token bucket per tenant in Redis, shared by every API process."""

from __future__ import annotations

import math

import redis

from api.settings import TenantLimits

# KEYS[1]: the bucket; ARGV: rate per second, burst. Redis's own clock, so API hosts need not agree on time.
# Returns 0 when a token was taken, else the seconds until one is available.
_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
if tokens < 1 then return tostring((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return '0'
"""


class RateLimiter:
    def __init__(self, client: redis.Redis) -> None:
        self._take = client.register_script(_TAKE)

    def retry_after(self, tenant: str, limits: TenantLimits) -> int:
        """0 when the request may proceed (a token is taken), else whole seconds to wait (at least 1)."""
        wait = float(self._take(keys=[f"samq:rate:{tenant}"], args=[limits.rate_per_second, limits.rate_burst]))
        return 0 if wait <= 0 else max(1, math.ceil(wait))
