-- @noindex
--[[
The one table every aiedit module adds its functions to, so a function keeps its name (lib.json_encode,
lib.inspect_item, ...) whichever file holds it. Modules load in dependency order from aiedit/init.lua.
]]
return {
  VERSION = "0.4.2",
  SECTION = "aiedit",          -- ExtState section for settings
  JOBS_SECTION = "aiedit.jobs", -- ProjExtState section for the job <-> item bookkeeping
}
