-- Cost of one jobs-window tick with N running jobs, under the fake REAPER (a bench, not a test):
--   lua5.4 tests/lua/poll_bench.lua 1000 .
local root = arg[2] or "."
local F = dofile(root .. "/tests/lua/fake_reaper.lua")
reaper, gfx = F.reaper, F.gfx -- luacheck: ignore 121
package.path = root .. "/reaper_scripts/?.lua;" .. root .. "/reaper_scripts/?/init.lua;" .. package.path
local lib = require("aiedit")
local n = tonumber(arg[1])
local spool = os.tmpname() .. "-spool"
local items = {}
for i = 1, n do items[i] = { guid = "{J" .. i .. "}", position = i, length = 1, takes = {} } end
F.load({ tracks = { { name = "T", items = items } }, extstate = { ["aiedit/spool"] = spool } })
os.execute("mkdir -p " .. spool .. "/jobs")
for i = 1, n do
  os.execute("mkdir -p " .. spool .. "/jobs/job" .. i)
  local f = io.open(spool .. "/jobs/job" .. i .. "/status.json", "w")
  f:write('{"version":1,"id":"job' .. i .. '","state":"running","stage":"finetune","progress":0.4}')
  f:close()
end
for i = 1, n do
  lib.registry_write(0, { id = "job" .. i, spool = spool, item = "{J" .. i .. "}", take = "", label = "J" .. i,
    prompt = "x", mode = "lora", seed = 1, etas = { 0.5 }, how = "file", rate = 1, region_start = 0,
    state = "submitted", stage = "queued", progress = 0 })
end
F.script_path = root .. "/reaper_scripts/AI edit jobs.lua"
F.launch(F.script_path)
local t0 = os.clock()
local cycles = 40
for _ = 1, cycles do F.run_defer_cycle() end
print(string.format("%d jobs: %.2f ms per tick (mean of %d ticks, poll every 0.5 s of fake time per tick)", n,
  (os.clock() - t0) * 1000 / cycles, cycles))
