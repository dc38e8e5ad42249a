-- @noindex
--[[
aiedit library for the REAPER scripts. The scripts know only docs/protocol.md: they drop job files into
SPOOL/inbox/ and read SPOOL/jobs/<id>/status.json back. Stock REAPER has no sockets, so everything here is
files, ExtState and defer loops; nothing blocks waiting for the engine.

  json      JSON codec               fs        paths, atomic writes, copies
  settings  ExtState settings, spool engine    daemon heartbeat, start command
  items     what an item plays       render    item -> float WAV, in defer-sized chunks
  dialog    GetUserInputs, parsers   jobs      build/submit/cancel jobs, per-project bookkeeping
  takes     import results           submit    queue many items, summary
  ui        the jobs window's model  gfxwin    its plain gfx view
  audition  play, A/B, keep takes    imwin     its ReaImGui view
  imdialog  the edit dialog on ReaImGui startup   open the window at start (opt-in, __startup.lua)
]]
local M = require("aiedit.core")
local MODULES = { "json", "fs", "settings", "engine", "items", "render", "dialog", "jobs", "takes", "submit", "ui",
                  "gfxwin", "audition", "imwin", "imdialog", "startup" }
for _, name in ipairs(MODULES) do
  require("aiedit." .. name)
end
return M
