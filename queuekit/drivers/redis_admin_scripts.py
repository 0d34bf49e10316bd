"""The Lua scripts of the Redis driver's maintenance: stats, failed jobs, purging.

Each runs atomically like the scripts of the hot path (``redis_scripts``, whose key layout and
prelude they share); bulk ones work in chunks the caller sizes, so Redis is never busy for long.
"""

from __future__ import annotations

from .redis_scripts import script

__all__ = ["FAILED_PAGE", "FORGET_FAILED", "PURGE", "RETRY_FAILED", "STATS"]

#: Read failed jobs of one queue, oldest failure first (read-only). ARGV: 'ids' then ids, or
#: 'page' then a limit. Returns pairs of id, JSON for failed jobs only.
FAILED_PAGE = script(
    "failed_page",
    """
local ids
if ARGV[1] == 'page' then
  ids = redis.call('ZRANGE', KEYS[FAILED], 0, tonumber(ARGV[2]) - 1)
else
  ids = {}
  for i = 2, #ARGV do
    if redis.call('ZSCORE', KEYS[FAILED], ARGV[i]) then ids[#ids + 1] = ARGV[i] end
  end
end
local out = {}
for _, id in ipairs(ids) do
  local body = redis.call('HGET', KEYS[JOBS], id)
  if body then
    out[#out + 1] = id
    out[#out + 1] = body
  end
end
return out
""",
)

#: Put failed jobs back in ready as new: for each ARGV quadruple (id, JSON with attempts 0,
#: -priority, ready member), only if the id is still in ``failed`` (ZREM decides, so two
#: processes retrying at once move each job once). Returns how many moved.
RETRY_FAILED = script(
    "retry_failed",
    """
local moved = 0
for i = 1, #ARGV, 4 do
  if redis.call('ZREM', KEYS[FAILED], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[JOBS], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[READY], ARGV[i + 2], ARGV[i + 3])
    moved = moved + 1
  end
end
wake(0, moved)
return moved
""",
    "wake",
)

#: Delete failed jobs of one queue: ARGV 'ids' then ids, or 'all' then a limit (the oldest
#: ``limit`` are deleted; the caller repeats until fewer come back). The record and the failed
#: entry go together. Returns how many were deleted.
FORGET_FAILED = script(
    "forget_failed",
    """
local ids
if ARGV[1] == 'all' then
  ids = redis.call('ZRANGE', KEYS[FAILED], 0, tonumber(ARGV[2]) - 1)
else
  ids = {unpack(ARGV, 2)}
end
local count = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', KEYS[FAILED], id) == 1 then
    redis.call('HDEL', KEYS[JOBS], id)
    count = count + 1
  end
end
return count
""",
)

#: Delete up to ARGV limit pending and delayed jobs of one queue (their records too); reserved
#: and failed jobs are kept. The caller repeats until fewer than the limit come back.
#: Returns how many were deleted.
PURGE = script(
    "purge",
    """
local limit = tonumber(ARGV[1])
local count = 0
local ready = redis.call('ZRANGE', KEYS[READY], 0, limit - 1)
if #ready > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[READY], 0, #ready - 1)
  for _, m in ipairs(ready) do redis.call('HDEL', KEYS[JOBS], string.sub(m, RANK + 1)) end
  count = #ready
end
if count < limit then
  local delayed = redis.call('ZRANGE', KEYS[DELAYED], 0, limit - count - 1)
  if #delayed > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[DELAYED], 0, #delayed - 1)
    for _, m in ipairs(delayed) do
      redis.call('HDEL', KEYS[JOBS], string.sub(m, string.find(m, '|', 1, true) + RANK + 1))
    end
    count = count + #delayed
  end
end
if redis.call('ZCARD', KEYS[READY]) == 0 then redis.call('DEL', KEYS[NOTIFY]) end
return count
""",
)

#: Counts of one queue from key sizes, O(log n) at worst (read-only): {ready, delayed due by
#: ARGV now, delayed later, reserved, failed}. Due delayed jobs count as pending.
STATS = script(
    "stats",
    """
return {
  redis.call('ZCARD', KEYS[READY]),
  redis.call('ZCOUNT', KEYS[DELAYED], '-inf', ARGV[1]),
  redis.call('ZCOUNT', KEYS[DELAYED], '(' .. ARGV[1], '+inf'),
  redis.call('ZCOUNT', KEYS[RESERVED], '-inf', ARGV[1]),
  redis.call('ZCOUNT', KEYS[RESERVED], '(' .. ARGV[1], '+inf'),
  redis.call('ZCARD', KEYS[FAILED]),
}
""",
)
