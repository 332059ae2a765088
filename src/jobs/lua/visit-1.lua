--[[
  Keeps one visit log of a serial: the list holds the newest visits first, at most ARGV[3].

  KEYS[1]  the serial's visit list
  ARGV[1]  the visit log (JSON, its top-level "at" before any exchange line)
  ARGV[2]  its "at" (epoch ms the visit began)
  ARGV[3]  how many visits are kept

  A log already in the list is not added again (a station cache's visits replayed twice by
  `station sync`). A visit synced late from a cache goes where its time puts it, so the list
  stays newest first and the oldest fall off. Returns 1 when added, 0 when already there.
]]
local key, entry, at, kept = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local items = redis.call('LRANGE', key, 0, -1)
for _, v in ipairs(items) do
  if v == entry then return 0 end
end
local pivot = nil
for _, v in ipairs(items) do
  local t = tonumber(string.match(v, '"at":(%d+)')) or 0
  if t <= at then
    pivot = v
    break
  end
end
if pivot then
  redis.call('LINSERT', key, 'BEFORE', pivot, entry)
else
  redis.call('RPUSH', key, entry)
end
redis.call('LTRIM', key, 0, kept - 1)
return 1
