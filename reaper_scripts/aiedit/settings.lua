-- @noindex
--[[ Settings in ExtState section "aiedit" (survive restarts) and the spool folder shared with the daemon. ]]
local M = require("aiedit.core")
---------------------------------------------------------------------------------------------
-- Settings (ExtState section "aiedit", persisted across REAPER restarts)
---------------------------------------------------------------------------------------------

M.DEFAULTS = {
  spool = "",                  -- empty: $AIEDIT_SPOOL, else ~/.aiedit/spool (the daemon's default; spool_dir)
  engine_cmd = "aiedit serve", -- how to start the daemon; --spool is appended
  activate_best = "yes",       -- make the best-scoring take active after import
  steps = "",                  -- optional JSON steps override, e.g. {"embed":3,"tune":3,"sample":4}
  token = "",                  -- only when the daemon was started with --token
  last_prompt = "",
  last_etas = "0.3, 0.5, 0.7",
  last_mode = "lora",
  last_seed = "0",
  last_scope = "selected items",
  last_use_notes = "yes",
  results = "takes",           -- "takes": new takes; "track": items on a new track; "lanes": fixed lanes
}

function M.get_setting(key)
  local v = reaper.GetExtState(M.SECTION, key)
  if v == nil or v == "" then return M.DEFAULTS[key] or "" end
  return v
end

function M.set_setting(key, value)
  reaper.SetExtState(M.SECTION, key, tostring(value), true)
end

-- The setting, else the daemon's own default ($AIEDIT_SPOOL, else ~/.aiedit/spool): one spool for both. On Windows
-- the profile folder is derived so that it is the daemon's exactly whatever the user's name (fs.lua,
-- windows_home); where REAPER cannot know it, the spool is REAPER's <resource path>/aiedit/spool, which the engine
-- command REAPER shows and runs passes as --spool.
function M.spool_dir()
  local p = M.trim(M.get_setting("spool"))
  if p == "" then p = M.env_path("AIEDIT_SPOOL") or "" end
  if p == "" then
    local home = M.home()
    p = home and M.join(home, ".aiedit", "spool") or M.join(reaper.GetResourcePath(), "aiedit", "spool")
  end
  p = M.expand_user(p)
  return (p:gsub("[/\\]+$", ""))
end

function M.is_yes(v)
  v = tostring(v or ""):lower():gsub("^%s+", ""):gsub("%s+$", "")
  return v == "yes" or v == "y" or v == "1" or v == "true" or v == "on"
end

-- Steps override from the settings: nil when unset, else a table, or nil + error.
function M.steps_override()
  local s = M.get_setting("steps")
  if s == nil or s:match("^%s*$") then return nil end
  local t, err = M.json_decode(s)
  if type(t) ~= "table" then return nil, "steps setting is not a JSON object: " .. tostring(err) end
  return t
end

return M
