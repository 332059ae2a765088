--[[
  Records a chunk of a batch's devices in state "accepted", all or nothing per chunk.

  KEYS[1]  batch counts hash   <p>:batch:<id>:counts
  KEYS[2]  batch serials list  <p>:batch:<id>:serials
  KEYS[3]  batch hash          <p>:batch:<id>
  KEYS[4]  key prefix for devices, e.g. "provline:dev:"
  KEYS[5]  key prefix for batches, e.g. "provline:batch:" (to update another batch's counts)
  KEYS[6]  state-set prefix of this batch  <p>:batch:<id>:in:
  KEYS[7]  key prefix of device histories, e.g. "provline:hist:" (a list per serial)
  ARGV[1]  batch id
  ARGV[2]  now (epoch ms)
  ARGV[3]  "skip-existing" or "refuse-existing"
  ARGV[4..] triples: serial, thingName, line

  A serial already known in another batch:
    - failed there without a certificate: it moves to this batch (a retry; its stored key and
      CSR are kept, so no second identity is made), and is reported as "retried"; the record as
      it was in the other batch is kept first in the serial's history (newest first, at most
      HISTORY_MAX entries), without the bulky fields a later batch carries anyway;
    - otherwise (pending, registered, provisioned, or failed after its certificate was
      issued): the whole chunk is refused with nothing written, or with "skip-existing" the
      serial is left out and reported as "skipped".
  A serial already accepted into this batch (a retried submit) is left as it is.

  Returns {"ok", accepted, nSkipped, skipped..., retried...}
       or {"exists", serial, otherBatch, state}.
]]
local HISTORY_MAX = 10
local NOT_KEPT = { csrPem = true, certificatePem = true, wrappedKey = true, publicKey = true }

local existing = {}
for i = 4, #ARGV, 3 do
  local key = KEYS[4] .. ARGV[i]
  local other = redis.call('HGET', key, 'batch')
  if other and other ~= ARGV[1] then
    local state = redis.call('HGET', key, 'state') or ''
    local retry = state == 'failed' and redis.call('HEXISTS', key, 'certificateId') == 0
    if retry then
      existing[ARGV[i]] = 'retry'
    elseif ARGV[3] ~= 'skip-existing' then
      return {'exists', ARGV[i], other, state}
    else
      existing[ARGV[i]] = 'skip'
    end
  end
end
local accepted = 0
local added = {}
local skipped = {}
local retried = {}
for i = 4, #ARGV, 3 do
  local serial = ARGV[i]
  local key = KEYS[4] .. serial
  local how = existing[serial]
  if how == 'skip' then
    table.insert(skipped, serial)
  elseif how == 'retry' or redis.call('EXISTS', key) == 0 then
    if how == 'retry' then
      local before = redis.call('HGETALL', key)
      local kept = {}
      for j = 1, #before, 2 do
        if not NOT_KEPT[before[j]] then kept[before[j]] = before[j + 1] end
      end
      redis.call('LPUSH', KEYS[7] .. serial, cjson.encode(kept))
      redis.call('LTRIM', KEYS[7] .. serial, 0, HISTORY_MAX - 1)
      local other = redis.call('HGET', key, 'batch')
      local code = redis.call('HGET', key, 'errorCode')
      redis.call('HINCRBY', KEYS[5] .. other .. ':counts', 'failed', -1)
      if code then redis.call('HINCRBY', KEYS[5] .. other .. ':failures', code, -1) end
      redis.call('SREM', KEYS[5] .. other .. ':in:failed', serial)
      redis.call('HDEL', key, 'errorCode', 'errorMessage', 'errorStage', 'at:keyed', 'at:registering',
        'at:registered', 'at:flashed', 'at:verified', 'at:failed')
      redis.call('HSET', key, 'movedFrom', other)
      table.insert(retried, serial)
    end
    redis.call('HSET', key, 'serial', serial, 'batch', ARGV[1], 'thingName', ARGV[i + 1], 'line', ARGV[i + 2],
      'state', 'accepted', 'createdAt', ARGV[2], 'updatedAt', ARGV[2], 'at:accepted', ARGV[2])
    accepted = accepted + 1
    added[accepted] = serial
  end
end
-- The list, the set and the counts once per call rather than once per device.
if accepted > 0 then
  redis.call('RPUSH', KEYS[2], unpack(added))
  redis.call('SADD', KEYS[6] .. 'accepted', unpack(added))
  redis.call('HINCRBY', KEYS[1], 'accepted', accepted)
end
redis.call('HINCRBY', KEYS[3], 'total', accepted)
local out = {'ok', tostring(accepted), tostring(#skipped)}
for _, s in ipairs(skipped) do table.insert(out, s) end
for _, s in ipairs(retried) do table.insert(out, s) end
return out
