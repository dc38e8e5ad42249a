-- @description AI edit settings
-- @version 0.3.1
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

local function main()
  local defaults = {}
  for i, k in ipairs(KEYS) do defaults[i] = lib.get_setting(k) end
  local fields = {
    { name = "Spool folder", hint = "empty = daemon default", check = function(s) return lib.trim(s) end },
    { name = "Engine command", hint = "full path + serve", check = function(s)
        s = lib.trim(s)
        if s == "" then return nil, "must not be empty" end
        return s
      end },
    { name = "Activate best take", hint = "yes/no", check = function(s) return lib.is_yes(s) and "yes" or "no" end },
    { name = "Steps override", hint = "JSON or empty", check = function(s)
        s = lib.trim(s)
        if s ~= "" and type(lib.json_decode(s)) ~= "table" then return nil, 'empty or JSON like {"sample":100}' end
        return s
      end },
    { name = "Token", hint = "empty unless --token", check = function(s) return lib.trim(s) end },
    { name = "Results as", hint = "takes / track / lanes", check = function(s)
        s = lib.trim(s):lower()
        if s == "" or s:find("^take") then return "takes" end
        if s:find("^track") then return "track" end
        if s:find("^lane") then return "lanes" end
        return nil, "takes / track / lanes"
      end },
  }
  local v = lib.ask_fields(TITLE, fields, defaults, 360)
  if not v then return end
  for i, k in ipairs(KEYS) do lib.set_setting(k, v[i]) end
end

main()
reaper.defer(function() end) -- no automatic undo point (settings are not project changes)
