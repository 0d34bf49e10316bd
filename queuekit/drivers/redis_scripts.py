"""Every Lua script of the Redis driver, one named constant per state change.

Each script runs atomically on the server, so a crash of any client between two commands can
never leave a job half-moved (gone from one structure and not yet in the next). Scripts are
sent by SHA (``EVALSHA``) and loaded on ``NOSCRIPT``; their text never changes at run time.

Key layout, per queue ``q`` with the driver's ``prefix`` ``p`` (see ``queue_keys``). Every key
of one queue carries the hash tag ``{p:q}``, so one queue lives in one Redis Cluster slot and a
script that names one queue's keys is legal on a cluster::

    {p:q}:jobs      HASH  job id -> record JSON (the stored form, see queuekit.record)
    {p:q}:ready     ZSET  score -priority, member <rank><id>
    {p:q}:delayed   ZSET  score available_at, member <-priority>|<rank><id>
    {p:q}:reserved  ZSET  score lease deadline, member <lease token>|<id>
    {p:q}:failed    ZSET  score failed_at, member job id (the record stays in :jobs)
    {p:q}:notify    LIST  wake-up tokens; idle workers BLPOP it
    p:queues        SET   every queue name ever pushed to (for workers on all queues)

``<rank>`` is 40 digits: available_at in microseconds (16), a push sequence (15) and the
attempts so far (9). ``ZPOPMIN`` on ``ready`` takes the lowest score (the highest priority)
and, among equal scores, the lexicographically smallest member: the earliest ``available_at``,
then the earliest push. Exact for every priority and every instant.

The lease token is ``<random><n>:<-priority>:<rank>`` as it was when the job was reserved, so
the ``reserved`` member alone fences every settling call (``ZREM`` of ``<token>|<id>`` succeeds
for the holder only) and alone tells an expired lease where to go back to: one key per lease,
no side tables. The rank's attempts, not the JSON, are the authority on attempts until
``release`` or ``fail`` rewrites the JSON.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

__all__ = [
    "COMPLETE",
    "EXTEND",
    "FAIL",
    "KEYS_PER_QUEUE",
    "KEY_NAMES",
    "PUSH",
    "PUSH_MANY",
    "RELEASE",
    "RESERVE",
    "LuaScript",
    "queue_keys",
    "queues_key",
    "rank",
    "script",
]

#: Suffixes of one queue's keys, in the order every script receives them in ``KEYS``.
KEY_NAMES = ("jobs", "ready", "delayed", "reserved", "failed", "notify")
KEYS_PER_QUEUE = len(KEY_NAMES)
_MAX_US = 10**16 - 1  # 16 digits of microseconds reach the year 2286
_MAX_ATTEMPTS = 10**9 - 1


def queue_keys(prefix: str, queue: str) -> list[str]:
    """The keys of ``queue``, in ``KEY_NAMES`` order, all under the hash tag ``{prefix:queue}``."""
    tag = f"{{{prefix}:{queue}}}"
    return [f"{tag}:{name}" for name in KEY_NAMES]


def queues_key(prefix: str) -> str:
    """The set of known queue names (a slot of its own: it is never touched by a script)."""
    return f"{prefix}:queues"


def rank(available_at: float, seq: int, attempts: int) -> str:
    """The 40-digit ordering prefix of a ready member (see the module docstring)."""
    us = int(available_at * 1_000_000)
    if not 0 <= us <= _MAX_US:
        us = min(max(us, 0), _MAX_US)
    if not 0 <= attempts <= _MAX_ATTEMPTS:
        attempts = min(max(attempts, 0), _MAX_ATTEMPTS)
    # %-formatting: a third cheaper than the f-string, and this runs once per stored job.
    return "%016d%015d%09d" % (us, seq % 1_000_000_000_000_000, attempts)  # noqa: UP031


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A named Lua script and its SHA1, the name ``EVALSHA`` runs it by."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# Shared by every script. ``k`` is the offset of one queue's keys in KEYS (0 for the first
# queue, 9 for the second ...), so multi-queue scripts address any queue the same way.
_PRELUDE = """
local unpack = unpack or table.unpack
local JOBS, READY, DELAYED, RESERVED, FAILED, NOTIFY = 1, 2, 3, 4, 5, 6
local RANK = 40
"""

# Helpers, included only by the scripts that call them: every closure a script defines is built
# again on every run, and Redis runs these scripts once per job.
_HELPERS = {
    "wake": """
-- One wake-up token per new ready job, so each idle worker that wakes has a job to take. The
-- list is trimmed back to NOTIFY_CAP once it holds twice that: more tokens than idle workers
-- only cause spurious wake-ups, and trimming now and then costs less than on every push.
local NOTIFY_CAP = 64
local function wake(k, n)
  if n <= 0 then return end
  if n > NOTIFY_CAP then n = NOTIFY_CAP end
  local tokens = {}
  for i = 1, n do tokens[i] = '1' end
  if redis.call('RPUSH', KEYS[k + NOTIFY], unpack(tokens)) > 2 * NOTIFY_CAP then
    redis.call('LTRIM', KEYS[k + NOTIFY], -NOTIFY_CAP, -1)
  end
end
""",
    "enqueue": """
-- Queue a job in ready or, given an available_at (its ``delay_score``), in delayed.
local function enqueue(k, score, member, delay_score)
  if delay_score == '' then
    redis.call('ZADD', KEYS[k + READY], score, member)
  else
    redis.call('ZADD', KEYS[k + DELAYED], delay_score, score .. '|' .. member)
  end
end
""",
    "bulk": """
-- ``command key`` with ARGV[from .. from + count - 1], in slices within the limit of Lua's
-- unpack(): the arguments go from the request to the command without a Lua table between.
local function bulk(command, key, from, count)
  local last = from + count - 1
  for i = from, last, 1000 do
    redis.call(command, key, unpack(ARGV, i, math.min(i + 999, last)))
  end
end
""",
}


def script(name: str, body: str, *helpers: str) -> LuaScript:
    """A script named ``name``: the shared prelude, the ``helpers`` it calls, then ``body``."""
    return LuaScript(name, _PRELUDE + "".join(_HELPERS[h] for h in helpers) + body)


#: Store one record; ``ready`` or ``delayed`` by its available_at. KEYS: one queue. ARGV:
#: record JSON, -priority, ready member (which ends in the id), available_at if delayed (else
#: ''). HSETNX makes a replay after a lost reply store nothing twice. Adds a wake-up token
#: (also for a delayed job, so a blocked worker re-reads the next due instant).
#: Returns 1, or 0 if the id was already stored.
PUSH = script(
    "push",
    """
if redis.call('HSETNX', KEYS[JOBS], string.sub(ARGV[3], RANK + 1), ARGV[1]) == 0 then
  return 0
end
enqueue(0, ARGV[2], ARGV[3], ARGV[4])
wake(0, 1)
return 1
""",
    "enqueue",
    "wake",
)

#: Store several records, possibly of several queues (KEYS: 6 per queue; only one queue on a
#: cluster), in one atomic step: all are visible at once or none is. ARGV: the first record's
#: id (of the first queue), then per queue a header ``k, jobs, ready, delayed`` (``k`` the
#: offset of its keys in KEYS, then three counts) followed by ``jobs`` pairs of id, JSON,
#: ``ready`` pairs of -priority, ready member and ``delayed`` pairs of available_at,
#: ``<-priority>|<ready member>``. The client lays the arguments out in the order HSET and
#: ZADD take them, so the script passes them on in slices and does no work per job. Every
#: argument is checked by the caller first, so the script cannot stop half-way. Being atomic,
#: a batch is stored whole or not at all, so a replay after a lost reply is recognised by its
#: first id alone and stores nothing. Returns how many were stored.
PUSH_MANY = script(
    "push_many",
    """
if redis.call('HEXISTS', KEYS[JOBS], ARGV[1]) == 1 then return 0 end
local i, stored = 2, 0
while i <= #ARGV do
  local k, jobs = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local ready, delayed = tonumber(ARGV[i + 2]) * 2, tonumber(ARGV[i + 3]) * 2
  i = i + 4
  bulk('HSET', KEYS[k + JOBS], i, jobs * 2)
  i = i + jobs * 2
  bulk('ZADD', KEYS[k + READY], i, ready)
  i = i + ready
  bulk('ZADD', KEYS[k + DELAYED], i, delayed)
  i = i + delayed
  wake(k, jobs)
  stored = stored + jobs
end
return stored
""",
    "bulk",
    "wake",
)

#: Lease up to ``limit`` due jobs from one or several queues (KEYS: 6 per queue). First, in
#: every queue, due delayed jobs move to ready and expired leases go back to ready with the
#: attempt they used (any worker reclaims them: no janitor needed), then jobs are popped:
#: ``order`` mode takes from the first queue that has any, then the next; ``best`` mode takes
#: the highest priority, earliest job across all queues. Each popped job counts one more
#: attempt and is leased as ``<token>|<id>`` in ``reserved`` with the deadline as its score.
#: ARGV: now ('' = the server's clock, for a reservation queued behind a blocking wait whose
#: end the client cannot know), lease seconds, limit, mode, random token base.
#: Returns {next due instant or '', lease deadline, then per job: queue index, id, JSON,
#: attempts, token}; the next due instant (earliest delayed job or lease deadline) is given
#: only when nothing was taken, so a waiting worker knows how long it may block. Once the
#: queues run dry their ``notify`` lists are cleared, so stale tokens wake nobody for nothing.
RESERVE = script(
    "reserve",
    """
local now = tonumber(ARGV[1])
if now == nil then
  local time = redis.call('TIME')
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
end
local deadline = now + tonumber(ARGV[2])
local limit, mode, token_base = tonumber(ARGV[3]), ARGV[4], ARGV[5]
local nq = #KEYS / 6
local BATCH = 1000  -- jobs promoted or reclaimed per call, bounding the script's run time

for q = 0, nq - 1 do
  local k = q * 6
  local due = redis.call('ZRANGEBYSCORE', KEYS[k + DELAYED], '-inf', now, 'LIMIT', 0, BATCH)
  if #due > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[k + DELAYED], 0, #due - 1)
    for _, m in ipairs(due) do
      local bar = string.find(m, '|', 1, true)
      redis.call('ZADD', KEYS[k + READY], string.sub(m, 1, bar - 1), string.sub(m, bar + 1))
    end
  end
  local expired = redis.call('ZRANGEBYSCORE', KEYS[k + RESERVED], '-inf', now, 'LIMIT', 0, BATCH)
  if #expired > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[k + RESERVED], 0, #expired - 1)
    for _, m in ipairs(expired) do
      local _, score, rest, id = string.match(m, '^([^:|]*):([^:|]*):([^:|]*)|(.*)$')
      redis.call('ZADD', KEYS[k + READY], score, rest .. id)
    end
  end
end

local out = {'', string.format('%.6f', deadline)}
local taken = 0

local function lease(q, member, score)
  local k = q * 6
  local id = string.sub(member, RANK + 1)
  local body = redis.call('HGET', KEYS[k + JOBS], id)
  -- A ready entry without a record (deleted by hand) is dropped rather than leased.
  if not body then return end
  local attempts = tonumber(string.sub(member, 32, RANK)) + 1
  local token = token_base .. taken .. ':' .. score .. ':'
    .. string.sub(member, 1, 31) .. string.format('%09d', attempts)
  redis.call('ZADD', KEYS[k + RESERVED], deadline, token .. '|' .. id)
  out[#out + 1] = q
  out[#out + 1] = id
  out[#out + 1] = body
  out[#out + 1] = attempts
  out[#out + 1] = token
  taken = taken + 1
end

if mode == 'order' then
  for q = 0, nq - 1 do
    if taken >= limit then break end
    local popped = redis.call('ZPOPMIN', KEYS[q * 6 + READY], limit - taken)
    for i = 1, #popped, 2 do lease(q, popped[i], popped[i + 1]) end
  end
else
  while taken < limit do
    local best, best_score, best_member = nil, nil, nil
    for q = 0, nq - 1 do
      local head = redis.call('ZRANGE', KEYS[q * 6 + READY], 0, 0, 'WITHSCORES')
      if #head > 0 then
        local score = tonumber(head[2])
        if best == nil or score < best_score or (score == best_score and head[1] < best_member) then
          best, best_score, best_member = q, score, head[1]
        end
      end
    end
    if best == nil then break end
    local popped = redis.call('ZPOPMIN', KEYS[best * 6 + READY], 1)
    lease(best, popped[1], popped[2])
  end
end

if taken < limit then
  -- Every queue ran dry (an orphan entry may make this early, which costs one wake-up).
  local next_due = nil
  for q = 0, nq - 1 do
    local k = q * 6
    redis.call('DEL', KEYS[k + NOTIFY])
    if taken == 0 then
      for _, key in ipairs({KEYS[k + DELAYED], KEYS[k + RESERVED]}) do
        local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
        if #head > 0 and (next_due == nil or tonumber(head[2]) < next_due) then
          next_due = tonumber(head[2])
        end
      end
    end
  end
  if next_due ~= nil then out[1] = tostring(next_due) end
end
return out
""",
)

#: Move a lease deadline to ARGV deadline if ARGV token still holds job ARGV id. KEYS: one
#: queue. Returns 1, or 0 when the lease was lost (reclaimed and re-leased, or settled).
EXTEND = script(
    "extend",
    """
local member = ARGV[2] .. '|' .. ARGV[1]
if not redis.call('ZSCORE', KEYS[RESERVED], member) then return 0 end
redis.call('ZADD', KEYS[RESERVED], ARGV[3], member)
return 1
""",
)

#: Delete finished jobs of one queue: ARGV pairs of id, token. Each pair is fenced on its own
#: (ZREM of ``<token>|<id>`` succeeds only for the holder); a job whose lease was lost is left
#: untouched. Returns one 1/0 flag per pair.
COMPLETE = script(
    "complete",
    """
local flags, done = {}, {}
for i = 1, #ARGV, 2 do
  if redis.call('ZREM', KEYS[RESERVED], ARGV[i + 1] .. '|' .. ARGV[i]) == 1 then
    done[#done + 1] = ARGV[i]
    flags[#flags + 1] = 1
  else
    flags[#flags + 1] = 0
  end
end
if #done > 0 then redis.call('HDEL', KEYS[JOBS], unpack(done)) end
return flags
""",
)

#: Hand a leased job back: fenced on ARGV token; stores the rewritten record JSON and queues
#: it in ready (or delayed, for a retry delay) under a ready member carrying the attempts as
#: given. ARGV: id, token, JSON, -priority, ready member, available_at if delayed (else '').
#: Returns 1, or 0 when the lease was lost.
RELEASE = script(
    "release",
    """
if redis.call('ZREM', KEYS[RESERVED], ARGV[2] .. '|' .. ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[JOBS], ARGV[1], ARGV[3])
enqueue(0, ARGV[4], ARGV[5], ARGV[6])
wake(0, 1)
return 1
""",
    "enqueue",
    "wake",
)

#: Move a leased job to the failed set: fenced on ARGV token; stores the record JSON (with
#: last_error, failed_at and attempts) and keeps it until retried or forgotten. ARGV: id,
#: token, JSON, failed_at. Returns 1, or 0 when the lease was lost.
FAIL = script(
    "fail",
    """
if redis.call('ZREM', KEYS[RESERVED], ARGV[2] .. '|' .. ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[JOBS], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[FAILED], ARGV[4], ARGV[1])
return 1
""",
)
