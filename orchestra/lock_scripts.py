"""The Lua steps of the deploy locks (:mod:`orchestra.locks`) and the keys they use.

Each step is atomic: admission records the run, its locks or its place in the queues, and its audit entry
together; a hand-on releases the owner's locks and grants them to the next queued run together. The steps
compute key names (a queued run's other locks), so they need one Redis (or Sentinel), not a Cluster.
"""
from __future__ import annotations

from orchestra.store import ACTIVE_RUNS, AUDIT_STREAM, RUN_KEY, RUNS_INDEX

LOCK_KEY = "orchestra:lock:{service}:{env}"  # the holder, as JSON, expiring with the lock
FENCE_KEY = "orchestra:lock-fence:{service}:{env}"  # the lock's token counter
QUEUE_KEY = "orchestra:lock-queue:{service}:{env}"  # run ids waiting for the lock, oldest first
WANTS_KEY = "orchestra:lock-wants:{run_id}"  # what a queued run waits for: its locks, owner and TTL
WAITING = "orchestra:lock-waiting"  # the locks that have a queue, as JSON [service, env]

def _key(template: str) -> str:
    """A key template as a Lua prefix: ``orchestra:lock:{service}:{env}`` -> ``orchestra:lock:``."""
    return template.split("{", 1)[0]


LIB = f"""
local function lock_key(s, e) return '{_key(LOCK_KEY)}' .. s .. ':' .. e end
local function fence_key(s, e) return '{_key(FENCE_KEY)}' .. s .. ':' .. e end
local function queue_key(s, e) return '{_key(QUEUE_KEY)}' .. s .. ':' .. e end
local function wants_key(r) return '{_key(WANTS_KEY)}' .. r end
local function run_key(r) return '{_key(RUN_KEY)}' .. r end
local WAITING, AUDIT, RUNS, ACTIVE = '{WAITING}', '{AUDIT_STREAM}', '{RUNS_INDEX}', '{ACTIVE_RUNS}'
local function audit(now, action, actor, run_id, detail)
  redis.call('XADD', AUDIT, '*', 'action', action, 'actor', actor, 'run_id', run_id, 'ts', now,
             'detail', cjson.encode(detail))
end
-- The run record's last field is "fence": its JSON is rewritten there, leaving the rest as Python wrote it.
local function with_fence(run_json, tokens)
  local head = string.match(run_json, '^(.*),"fence":')
  if next(tokens) == nil then return head .. ',"fence":{{}}}}' end
  return head .. ',"fence":' .. cjson.encode(tokens) .. '}}'
end
local function take(s, e, run_id, owner, now, ttl_ms)
  local token = redis.call('INCR', fence_key(s, e))
  local lock = {{service=s, env=e, owner=owner, run_id=run_id, token=token, acquired_at=now,
                expires_at=now + ttl_ms / 1000, ttl_s=ttl_ms / 1000}}
  redis.call('SET', lock_key(s, e), cjson.encode(lock), 'PX', ttl_ms)
  return token
end
local function dequeue(s, e)
  redis.call('LPOP', queue_key(s, e))
  if redis.call('LLEN', queue_key(s, e)) == 0 then redis.call('SREM', WAITING, cjson.encode({{s, e}})) end
end
-- Give a free lock to the first queued run, when that run can have all of its locks now.
local function promote(s, e, now, why, promoted)
  while redis.call('EXISTS', lock_key(s, e)) == 0 do
    local head = redis.call('LINDEX', queue_key(s, e), 0)
    if not head then redis.call('SREM', WAITING, cjson.encode({{s, e}})) return end
    local wants = redis.call('GET', wants_key(head))
    local run_json = redis.call('GET', run_key(head))
    if not wants or not run_json or string.match(run_json, '"status":"(%a+)"') ~= 'queued' then
      dequeue(s, e)  -- a run that stopped waiting: the next one
    else
      wants = cjson.decode(wants)
      for _, w in ipairs(wants.locks) do
        if redis.call('EXISTS', lock_key(w[1], w[2])) == 1
            or redis.call('LINDEX', queue_key(w[1], w[2]), 0) ~= head then return end
      end
      local tokens = {{}}
      for _, w in ipairs(wants.locks) do
        dequeue(w[1], w[2])
        tokens[w[1]] = take(w[1], w[2], head, wants.owner, now, wants.ttl_ms)
      end
      redis.call('SET', run_key(head), with_fence(run_json, tokens))
      redis.call('DEL', wants_key(head))
      audit(now, 'lock_handed_on', 'orchestra', head, {{locks=wants.locks, fence=tokens, why=why}})
      table.insert(promoted, head)
      return
    end
  end
end
"""

ADMIT = LIB + """
local run_id, run_json, score, owner = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, ttl_ms, no_wait = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'
local detail, locks = cjson.decode(ARGV[8]), cjson.decode(ARGV[9])
local holder, ahead = false, false
for _, l in ipairs(locks) do
  local raw = redis.call('GET', lock_key(l[1], l[2]))
  if raw then holder = raw break end
  ahead = ahead or redis.call('LINDEX', queue_key(l[1], l[2]), 0)
end
local function record(json)
  redis.call('SET', run_key(run_id), json)
  redis.call('ZADD', RUNS, score, run_id)
  redis.call('SADD', ACTIVE, run_id)
end
if not holder and not ahead then
  local tokens = {}
  for _, l in ipairs(locks) do tokens[l[1]] = take(l[1], l[2], run_id, owner, now, ttl_ms) end
  record(with_fence(run_json, tokens))
  detail.fence = tokens
  audit(ARGV[5], 'run_admitted', owner, run_id, detail)
  return cjson.encode({outcome='admitted', fence=tokens})
end
if holder then
  local h = cjson.decode(holder)
  detail.holder_run, detail.holder = h.run_id, h.owner
else
  detail.ahead = ahead
end
if no_wait then
  detail.asked_as = run_id
  audit(ARGV[5], 'run_refused', owner, '', detail)
  return cjson.encode({outcome='refused', holder=holder, ahead=ahead})
end
local position = 0
for _, l in ipairs(locks) do
  position = math.max(position, redis.call('RPUSH', queue_key(l[1], l[2]), run_id))
  redis.call('SADD', WAITING, cjson.encode({l[1], l[2]}))
end
redis.call('SET', wants_key(run_id), cjson.encode({locks=locks, owner=owner, ttl_ms=ttl_ms}))
record(run_json)
detail.position = position
audit(ARGV[5], 'run_queued', owner, run_id, detail)
return cjson.encode({outcome='queued', holder=holder, ahead=ahead, position=position})
"""

# Release the run's locks it still owns (token -1: whatever token it has), leave its queues, pass them on.
HAND_ON = LIB + """
local run_id, locks, now, why, withdrawn = ARGV[1], cjson.decode(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local released, was_queued, promoted = {}, false, {}
for _, l in ipairs(locks) do
  if redis.call('LREM', queue_key(l[1], l[2]), 0, run_id) > 0 then was_queued = true end
  if redis.call('LLEN', queue_key(l[1], l[2])) == 0 then redis.call('SREM', WAITING, cjson.encode({l[1], l[2]})) end
  local raw = redis.call('GET', lock_key(l[1], l[2]))
  if raw then
    local lock = cjson.decode(raw)
    if lock.run_id == run_id and (tonumber(l[3]) == -1 or tonumber(lock.token) == tonumber(l[3])) then
      redis.call('DEL', lock_key(l[1], l[2]))
      table.insert(released, l[1])
    end
  end
end
redis.call('DEL', wants_key(run_id))
if was_queued and withdrawn ~= '' then
  audit(now, withdrawn, 'orchestra', run_id, {why=why})
end
for _, l in ipairs(locks) do promote(l[1], l[2], now, why, promoted) end
return cjson.encode({released=released, promoted=promoted, was_queued=was_queued})
"""

PASS_ON_EXPIRED = LIB + """
local promoted = {}
for _, member in ipairs(redis.call('SMEMBERS', WAITING)) do
  local l = cjson.decode(member)
  promote(l[1], l[2], tonumber(ARGV[1]), 'the lock expired', promoted)
end
return cjson.encode(promoted)
"""

RENEW = LIB + """
local renewed, now = 0, tonumber(ARGV[2])
for _, l in ipairs(cjson.decode(ARGV[1])) do
  local raw = redis.call('GET', lock_key(l[1], l[2]))
  if raw then
    local lock = cjson.decode(raw)
    if lock.run_id == ARGV[3] and tonumber(lock.token) == tonumber(l[3]) then
      lock.expires_at = now + lock.ttl_s
      redis.call('SET', lock_key(l[1], l[2]), cjson.encode(lock), 'PX', math.max(1, math.floor(lock.ttl_s * 1000)))
      renewed = renewed + 1
    end
  end
end
return renewed
"""

ACQUIRE = LIB + """
local s, e, run_id, owner, now, ttl_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local raw = redis.call('GET', lock_key(s, e))
if raw then return cjson.encode({held=raw}) end
local head = redis.call('LINDEX', queue_key(s, e), 0)
if head and head ~= run_id then return cjson.encode({ahead=head}) end
take(s, e, run_id, owner, now, ttl_ms)
return cjson.encode({taken=redis.call('GET', lock_key(s, e))})
"""


