-- @description AI edit settings
-- @version 0.1.0
-- @author aiedit
-- @noindex
-- @about
--   Settings for the AI edit scripts: spool folder, engine command, whether the best-scoring
--   take becomes active, optional step-count override and token.
--   Installed by the "AI edit selected items" package.

local lib = dofile((select(2, reaper.get_action_context()):match("^(.*[/\\])") or "") .. "aiedit_lib.lua")

local TITLE = "AI edit settings"
local KEYS = { "spool", "engine_cmd", "activate_best", "steps", "token" }
local CAPTIONS = { "Spool folder", "Engine command", "Activate best take (yes/no)",
  "Steps override (JSON or empty)", "Token (empty unless --token)" }

local function main()
  local defaults = {}
  for i, k in ipairs(KEYS) do defaults[i] = lib.get_setting(k) end
  while true do
    local v = lib.user_inputs(TITLE, CAPTIONS, defaults, 360)
    if not v then return end
    defaults = v
    local steps = lib.trim(v[4])
    local ok_steps = steps == "" or type(lib.json_decode(steps)) == "table"
    if ok_steps and lib.trim(v[1]) ~= "" and lib.trim(v[2]) ~= "" then
      for i, k in ipairs(KEYS) do lib.set_setting(k, lib.trim(v[i])) end
      lib.set_setting("activate_best", lib.is_yes(v[3]) and "yes" or "no")
      return
    end
    reaper.ShowMessageBox(ok_steps and "Spool folder and engine command must not be empty."
      or 'Steps must be empty or JSON like {"embed":500,"tune":1500,"sample":100}.', TITLE, 0)
  end
end

main()
