-- @description AI edit settings
-- @version 0.3.0
-- @author aiedit
-- @noindex
-- @about
--   Settings for the AI edit scripts: spool folder, engine command, whether the best-scoring
--   take becomes active, optional step-count override and token.
--   Installed by the "AI edit selected items" package.

local dir = (select(2, reaper.get_action_context()):match("^(.*[/\\])") or "")
package.path = dir .. "?.lua;" .. dir .. "?/init.lua;" .. package.path
local lib = require("aiedit")

local TITLE = "AI edit settings"
local KEYS = { "spool", "engine_cmd", "activate_best", "steps", "token", "results" }
local CAPTIONS = { "Spool folder (empty = daemon default)", "Engine command", "Activate best take (yes/no)",
  "Steps override (JSON or empty)", "Token (empty unless --token)", "Results as (takes / track / lanes)" }

local function main()
  local defaults = {}
  for i, k in ipairs(KEYS) do defaults[i] = lib.get_setting(k) end
  while true do
    local v = lib.user_inputs(TITLE, CAPTIONS, defaults, 360)
    if not v then return end
    defaults = v
    local steps = lib.trim(v[4])
    local ok_steps = steps == "" or type(lib.json_decode(steps)) == "table"
    local results = lib.trim(v[6]):lower()
    results = (results == "" or results:find("^take")) and "takes" or (results:find("^track") and "track")
      or (results:find("^lane") and "lanes") or nil
    if ok_steps and results and lib.trim(v[2]) ~= "" then
      for i, k in ipairs(KEYS) do lib.set_setting(k, lib.trim(v[i])) end
      lib.set_setting("activate_best", lib.is_yes(v[3]) and "yes" or "no")
      lib.set_setting("results", results)
      return
    end
    reaper.ShowMessageBox(not results and "Results must be takes, track or lanes."
      or ok_steps and "The engine command must not be empty."
      or 'Steps must be empty or JSON like {"embed":500,"tune":1500,"sample":100}.', TITLE, 0)
  end
end

main()
reaper.defer(function() end) -- no automatic undo point (settings are not project changes)
