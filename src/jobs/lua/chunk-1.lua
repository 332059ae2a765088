--[[
  Moves a registration chunk on, in one step and only from where it should stand: a registrar
  that lost the chunk (an older fence, or a state another registrar has moved past) changes
  nothing.

  KEYS[1]  the chunk hash   <p>:batch:<id>:chunk:<n>
  ARGV[1]  the states the chunk may be in, comma-separated ("" = any)
  ARGV[2]  the fence the chunk must carry ("" = no check): the bulk slot's fencing token
           written with the intent to start (slot-3.lua, fenced-hset)
  ARGV[3..] field/value pairs to write (the new state among them)

  -> {"ok"} | {"missing"} | {"conflict", <current state>, <current fence or "">}
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local state = redis.call('HGET', KEYS[1], 'state') or 'claimed'
local fence = redis.call('HGET', KEYS[1], 'fence') or ''
if ARGV[1] ~= '' then
  local allowed = false
  for s in string.gmatch(ARGV[1], '[^,]+') do
    if s == state then allowed = true end
  end
  if not allowed then return {'conflict', state, fence} end
end
if ARGV[2] ~= '' and ARGV[2] ~= fence then return {'conflict', state, fence} end
if #ARGV >= 3 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
return {'ok'}
