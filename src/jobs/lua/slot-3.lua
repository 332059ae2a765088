--[[
  The account's one bulk-registration slot, with a fencing token.

  KEYS[1]  slot key    <p>:aws:bulk-slot   value "<fence>:<owner>"
  KEYS[2]  fence key   <p>:aws:bulk-fence  counter
  KEYS[3]  a hash to write under the fence (op "fenced-hset"), else any key name
  ARGV[1]  op: "acquire" | "renew" | "release" | "check" | "fenced-hset"
  ARGV[2]  owner id (acquire) or the holder value "<fence>:<owner>" (the other ops)
  ARGV[3]  ttl in ms (acquire, renew)
  ARGV[4..] field/value pairs (fenced-hset): written to KEYS[3] only while ARGV[2] holds the slot

  acquire -> {"ok", "<fence>:<owner>"} or {"held", <current value>}
  renew / release / check / fenced-hset -> {"ok"} if ARGV[2] still holds the slot, else {"lost", <current or "">}
]]
local op = ARGV[1]
local cur = redis.call('GET', KEYS[1])
if op == 'acquire' then
  if cur then return {'held', cur} end
  local fence = redis.call('INCR', KEYS[2])
  local value = tostring(fence) .. ':' .. ARGV[2]
  redis.call('SET', KEYS[1], value, 'PX', tonumber(ARGV[3]))
  return {'ok', value}
end
if cur ~= ARGV[2] then return {'lost', cur or ''} end
if op == 'renew' then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
elseif op == 'release' then
  redis.call('DEL', KEYS[1])
elseif op == 'fenced-hset' then
  redis.call('HSET', KEYS[3], unpack(ARGV, 4))
end
return {'ok'}
